"""The protocol layer imports only pure stdlib modules (style.md section 2)."""

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
