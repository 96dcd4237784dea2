"""Layering by imports: the protocol layer imports only pure stdlib modules;
only glue/ knows ALSA; glue/ never waits itself (docs/design.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import alsa_pvplug.protocol

PROTOCOL_DIR = Path(alsa_pvplug.protocol.__file__).parent
PACKAGE = "alsa_pvplug.protocol"

ALLOWED_STDLIB = {
    "enum", "dataclasses", "struct", "typing", "collections", "math", "itertools",
    "functools", "re", "abc", "__future__", "errno",
}
ALLOWED_OWN = {"alsa_pvplug.errors"}
# Named explicitly so a future allowlist edit cannot let these in unnoticed.
FORBIDDEN = {"os", "socket", "select", "selectors", "time", "threading", "cffi",
             "alsa_pvplug._native", "alsa_pvplug.transport", "subprocess", "io", "mmap",
             "ctypes", "asyncio", "signal"}


def _modules() -> list[Path]:
    return sorted(PROTOCOL_DIR.glob("*.py"))


def _resolve(node: ast.ImportFrom, module: str) -> list[str]:
    """Absolute names imported by ``node`` inside ``alsa_pvplug.protocol.<module>``."""
    if node.level == 0:
        return [node.module or ""]
    parts = PACKAGE.split(".")
    base = parts[:len(parts) - (node.level - 1)]
    if node.module:
        return [".".join(base + node.module.split("."))]
    # "from . import x" / "from .. import errors": each name may be a module
    return [".".join(base + [a.name]) for a in node.names]


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names += _resolve(node, path.stem)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "__import__":
            names.append("<__import__ call>")
    return names


def _allowed(name: str) -> bool:
    top = name.split(".")[0]
    if top in ALLOWED_STDLIB:
        return True
    if name in ALLOWED_OWN or name == PACKAGE or name.startswith(PACKAGE + "."):
        return True
    return False


def test_protocol_modules_found() -> None:
    stems = {p.stem for p in _modules()}
    assert {"__init__", "sndif", "ring"} <= stems


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_imports_are_pure(path: Path) -> None:
    bad = [n for n in imports_of(path) if not _allowed(n)]
    assert bad == [], f"{path.name} imports {bad}; the protocol layer must stay sans-I/O"


def test_forbidden_never_allowed() -> None:
    for name in FORBIDDEN:
        assert not _allowed(name), name
        assert not _allowed(name + ".sub"), name


def test_checker_catches_violations(tmp_path: Path) -> None:
    src = tmp_path / "bad.py"
    src.write_text("import os\nfrom ..transport import base\nfrom .. import _native\n"
                   "from . import sndif\nfrom ..errors import ConfigError\n"
                   "import time as t\n__import__('socket')\n")
    names = imports_of(src)
    assert [n for n in names if not _allowed(n)] == [
        "os", "alsa_pvplug.transport", "alsa_pvplug._native", "time", "<__import__ call>"]


# -- ALSA knowledge stays in glue/, waiting stays out of it -------------------

PACKAGE_DIR = PROTOCOL_DIR.parent
GLUE_DIR = PACKAGE_DIR / "glue"
# The backend's ``alsa:`` sink and source play on dom0's own sound card: the
# host side of the backend, not the plugin's.
# cli.py is the command line over every layer (``pvplug install`` renders
# the plugin's ALSA configuration).
ALSA_ALLOWED_OUTSIDE_GLUE = {PACKAGE_DIR / "backend" / "io.py", PACKAGE_DIR / "cli.py"}
# alsa-lib's side of the callbacks (snd_pcm_wait and friends) emulated for
# tests: it is the poll loop the plugin's callbacks must not have.
WAITING_ALLOWED_IN_GLUE = {GLUE_DIR / "harness.py"}


def _runtime_imports(path: Path, pkg: str | None = None) -> list[str]:
    """Absolute names ``path`` (in package ``pkg``) imports, except under
    ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if pkg is None:
        pkg = ".".join(("alsa_pvplug",) + path.relative_to(PACKAGE_DIR).parent.parts)
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            skip |= {id(n) for sub in node.body for n in ast.walk(sub)}
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.append(node.module or "")
                continue
            parts = pkg.split(".")
            base = parts[:len(parts) - (node.level - 1)]
            if node.module:
                names.append(".".join(base + node.module.split(".")))
            else:
                names += [".".join(base + [a.name]) for a in node.names]
    return names


def _outside_glue() -> list[Path]:
    return sorted(p for p in PACKAGE_DIR.rglob("*.py") if GLUE_DIR not in p.parents)


def _knows_alsa(name: str) -> bool:
    return name.split(".")[0] == "alsaaudio" or name == "alsa_pvplug.glue" \
        or name.startswith("alsa_pvplug.glue.")


@pytest.mark.parametrize("path", _outside_glue(), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_no_alsa_knowledge_outside_glue(path: Path) -> None:
    if path in ALSA_ALLOWED_OUTSIDE_GLUE:
        return
    bad = [n for n in _runtime_imports(path) if _knows_alsa(n)]
    assert bad == [], f"{path.name} imports {bad}: only glue/ knows ALSA"


_WAIT_CALLS = {("select", "select"), ("select", "poll"), ("select", "epoll"),
               ("time", "sleep")}


def _waits(path: Path) -> list[str]:
    found = [f"import {n}" for n in _runtime_imports(path, "alsa_pvplug.glue")
             if n.split(".")[0] == "selectors"]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) \
                and (node.func.value.id, node.func.attr) in _WAIT_CALLS:
            found.append(f"{node.func.value.id}.{node.func.attr}() at line {node.lineno}")
    return found


@pytest.mark.parametrize("path", sorted(GLUE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_glue_has_no_wait_loop_of_its_own(path: Path) -> None:
    if path in WAITING_ALLOWED_IN_GLUE:
        return
    assert _waits(path) == [], f"{path.name} waits itself; waiting is frontend.py's job"


def test_layering_checkers_catch_violations(tmp_path: Path) -> None:
    src = tmp_path / "bad.py"
    src.write_text("import select, time, selectors\nimport alsaaudio\n"
                   "from typing import TYPE_CHECKING\nfrom .options import X\n"
                   "if TYPE_CHECKING:\n    from .glue.options import Y\n"
                   "def f():\n    select.select([], [], [], 0)\n    time.sleep(1)\n")
    assert _waits(src) == ["import selectors", "select.select() at line 8",
                           "time.sleep() at line 9"]
    names = _runtime_imports(src, "alsa_pvplug.glue")
    assert [n for n in names if _knows_alsa(n)] == ["alsaaudio", "alsa_pvplug.glue.options"]
    outside = _runtime_imports(src, "alsa_pvplug")  # the TYPE_CHECKING import is skipped
    assert [n for n in outside if _knows_alsa(n)] == ["alsaaudio"]
