"""Compile ``libasound_module_pcm_pvplug.so`` (cffi embedding).

The plugin is built for the interpreter that runs this code and remembers
where it lives: the shim starts that interpreter (its home, isolated from the
host's environment, without site.py) with this installation's site
directories as its path, so a C host such as ``aplay`` finds Python and our
package whatever its environment says.
"""

from __future__ import annotations

import os
import shutil
import site
import sys
import sysconfig
import tempfile
from pathlib import Path

PLUGIN_NAME = "libasound_module_pcm_pvplug.so"
CSRC = Path(__file__).resolve().parents[2] / "csrc"

def _py_cdef() -> str:
    """csrc/pvplug_py.h as cffi's cdef: the shim's view of the Python side."""
    text = (CSRC / "pvplug_py.h").read_text()
    return text[text.index("*/") + 2:].replace("PVPLUG_PY", 'extern "Python"')

# A C host's interpreter starts with these directories as its path (C sets
# them); a Python host (pyalsaaudio) has its own path, to which they are added.
INIT_CODE = """
import sys
for _d in {site_dirs!r}:
    if _d not in sys.path:
        sys.path.append(_d)
from _pvplug_plugin import ffi, lib
from alsa_pvplug.glue import embed
embed.register(ffi, lib)
"""


def _hw_struct() -> str:
    """csrc/pvplug_hw.h without its comment: the one definition of the struct."""
    text = (CSRC / "pvplug_hw.h").read_text()
    return text[text.index("*/") + 2:]


def site_dirs() -> list[str]:
    """Where this installation finds our package and its dependencies (the
    plugin's interpreter runs no site.py: no user site, no .pth files)."""
    import _cffi_backend

    dirs = [p for p in site.getsitepackages() if Path(p).is_dir()]
    for extra in (Path(__file__).resolve().parents[2],  # a source checkout, or --user
                  Path(_cffi_backend.__file__).resolve().parent):
        if str(extra) not in dirs:
            dirs.append(str(extra))
    return dirs


def _c_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build_plugin(out_dir: str | Path, *, extra_site_dirs: list[str] | None = None,
                 site_dirs_override: list[str] | None = None, python_exe: str | None = None,
                 verbose: bool = False) -> Path:
    """Compile the plugin into ``out_dir``; returns its path.

    ``python_exe`` is the program name the embedded interpreter starts as
    (default: this one).  In a C host the interpreter's path is its standard
    library and ``site_dirs_override`` or ``site_dirs()``, nothing else (no
    site.py)."""
    from cffi import FFI

    if not (CSRC / "pcm_pvplug.c").is_file():
        raise FileNotFoundError(f"{CSRC}/pcm_pvplug.c missing: the plugin builds from a "
                                "source checkout (pip install -e)")
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise RuntimeError(f"{sys.executable} has no shared libpython; the plugin embeds it")
    dirs = site_dirs_override if site_dirs_override is not None else \
        site_dirs() + list(extra_site_dirs or [])
    if any(os.pathsep in d for d in dirs):
        raise ValueError(f"a site directory holds {os.pathsep!r}, which cannot be in a "
                         f"module search path: {dirs}")
    ffi = FFI()
    ffi.cdef(_hw_struct() + _py_cdef())
    ffi.embedding_api("")
    ffi.set_source(
        "_pvplug_plugin",
        '#include "pcm_pvplug.c"\n',
        include_dirs=[str(CSRC)],
        libraries=["asound", "dl", "m"],
        library_dirs=[libdir],
        define_macros=[
            ("PIC", None),
            ("PVPLUG_LIBPYTHON", _c_string(soname)),
            ("PVPLUG_PYTHON_HOME", _c_string(sys.base_prefix)),
            ("PVPLUG_PYTHON_EXE", _c_string(python_exe or sys.executable)),
            ("PVPLUG_PYTHON_PATH", _c_string(os.pathsep.join(dirs))),
        ],
        extra_compile_args=["-Wall", "-Wno-unused-function", "-Wno-unused-parameter"],
        # nodelete: alsa-lib dlcloses plugin modules, Python cannot be unloaded.
        extra_link_args=["-Wl,-z,nodelete", f"-Wl,-rpath,{libdir}"],
    )
    ffi.embedding_init_code(INIT_CODE.format(site_dirs=dirs))
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pvplug-build-") as tmp:
        built = ffi.compile(tmpdir=tmp, target="plugin.*", verbose=verbose)
        dest = out / PLUGIN_NAME
        tmp_dest = out / (PLUGIN_NAME + ".tmp")
        shutil.copyfile(built, tmp_dest)
        tmp_dest.rename(dest)  # atomic: a running host keeps its mapping
    return dest
