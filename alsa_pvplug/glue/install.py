"""``pvplug install``: put the plugin where alsa-lib finds it, and a conf.d
snippet defining ``pcm.pvplug`` (with a hint, so ``aplay -L`` lists it).

As root the defaults are alsa-lib's module directory and ``/etc/alsa/conf.d``;
``--user`` builds into ``~/.local/lib/alsa-pvplug`` and prints the snippet
(with its ``pcm_type.pvplug { lib ... }`` line) for ``~/.asoundrc``.
"""

from __future__ import annotations

import argparse
import ctypes.util
import os
import sys
from pathlib import Path

from .build import PLUGIN_NAME, build_plugin
from .options import LOG_LEVELS, TRANSPORTS

TEMPLATE = Path(__file__).resolve().parents[2] / "conf" / "50-pvplug.conf.in"
CONF_NAME = "50-pvplug.conf"


def alsa_module_dir() -> Path:
    """alsa-lib's default plugin directory: ``<libasound dir>/alsa-lib``."""
    for cand in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
                 "/usr/lib"):
        if (Path(cand) / "alsa-lib").is_dir():
            return Path(cand) / "alsa-lib"
    found = ctypes.util.find_library("asound")
    raise FileNotFoundError(f"cannot find alsa-lib's module directory (libasound: {found})")


def render_conf(lib: Path | None, options: dict[str, object], name: str = "pvplug") -> str:
    """The conf snippet.  ``lib``: the plugin's path when it is not in
    alsa-lib's module directory (a ``pcm_type`` line), else None."""
    text = TEMPLATE.read_text()
    pcm_type = f'pcm_type.pvplug {{ lib "{lib}" }}' if lib is not None else \
        "# (the plugin is in alsa-lib's module directory: no pcm_type line needed)"
    lines = []
    for key, value in options.items():
        if value is None:
            continue
        shown = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' \
            if isinstance(value, str) else str(value)
        lines.append(f"\t{key} {shown}\n")
    return text.replace("@PCM_TYPE@", pcm_type).replace("@NAME@", name) \
        .replace("@OPTIONS@", "".join(lines))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", action="store_true",
                   help="build into ~/.local/lib/alsa-pvplug and print the snippet")
    p.add_argument("--plugin-dir", type=Path, help="where to put " + PLUGIN_NAME)
    p.add_argument("--conf-dir", type=Path, help="where to write " + CONF_NAME)
    p.add_argument("--name", default="pvplug", help="the PCM name (default pvplug)")
    p.add_argument("--transport", choices=TRANSPORTS)
    p.add_argument("--sim-dir")
    p.add_argument("--domid", type=int)
    p.add_argument("--timeout", type=float)
    p.add_argument("--log-level", dest="plugin_log_level", choices=LOG_LEVELS)


def run(args: argparse.Namespace) -> int:
    user = args.user or (os.geteuid() != 0 and args.plugin_dir is None)
    if args.plugin_dir is not None:
        plugin_dir = args.plugin_dir
    elif user:
        plugin_dir = Path.home() / ".local" / "lib" / "alsa-pvplug"
    else:
        plugin_dir = alsa_module_dir()
    lib = build_plugin(plugin_dir)
    in_module_dir = not user and args.plugin_dir is None
    options = {"transport": args.transport, "sim_dir": args.sim_dir, "domid": args.domid,
               "timeout": args.timeout, "log_level": args.plugin_log_level}
    conf = render_conf(None if in_module_dir else lib, options, args.name)
    print(f"plugin: {lib}", file=sys.stderr)
    if args.conf_dir is None and user:
        print("# add this to ~/.asoundrc:", file=sys.stderr)
        sys.stdout.write(conf)
        return 0
    conf_dir = args.conf_dir or Path("/etc/alsa/conf.d")
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / CONF_NAME).write_text(conf)
    print(f"config: {conf_dir / CONF_NAME}", file=sys.stderr)
    return 0
