"""Opening ``pvplug`` fails fast, says why, and does not spin.

Each case runs the real ``aplay`` on the real plugin and measures the child's
wall time and CPU time (``wait4`` rusage): the open must fail within 1 s
(starting Python inside aplay costs 0.1-0.3 s of that) with a message that
names the cause, and the CPU time must stay small, proving that nothing
loops.  Covered: a plugin whose Python package cannot be imported, unknown,
malformed, missing and block-valued options, transport sim without a
simulator, transport xen outside Xen, a card that does not exist, and a card
held by another process (EBUSY), which is free again once that process is
gone, even after SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import _cffi_backend
import pytest

from alsa_pvplug.backend.wavfile import read_wav
from alsa_pvplug.glue.build import build_plugin
from alsa_pvplug.glue.install import render_conf
from alsa_pvplug.protocol.sndif import PcmFormat
from alsa_pvplug.sim.procs import run_bounded
from tests.support.audio import make_signal, write_wav
from tests.support.env import (
    CLIENT_OUTPUT_CAP,
    SYSTEM_ALSA_CONF,
    PvEnv,
    child_setup,
    wait_until,
)

OPEN_DEADLINE = 1.0   # seconds from exec to exit
CPU_LIMIT = 0.6       # user + sys seconds: Python's start-up, no loop


@dataclass
class Measured:
    rc: int
    output: str
    seconds: float
    cpu: float

    def describe(self) -> str:
        return f"rc {self.rc}, {self.seconds:.2f} s, cpu {self.cpu:.2f} s:\n{self.output}"


def run_measured(argv: Sequence[str], env: dict[str, str], cwd: Path,
                 timeout: float = 10) -> Measured:
    """Run ``argv`` to completion (killed at ``timeout``), with its exit code,
    output (capped), wall time and the CPU time of the child itself."""
    end = run_bounded(argv, timeout, env=env, cwd=cwd, cap=CLIENT_OUTPUT_CAP)
    return Measured(end.rc, end.output, end.seconds, end.cpu)


def assert_fails_fast(m: Measured, *needles: str) -> None:
    assert m.rc not in (0, -signal.SIGKILL), m.describe()
    assert m.seconds < OPEN_DEADLINE, m.describe()
    assert m.cpu < CPU_LIMIT, m.describe()
    assert len(m.output) < 4000, m.describe()  # one error, not an error loop
    assert "audio open error" in m.output, m.describe()
    for needle in needles:
        assert needle in m.output, f"{needle!r} missing: {m.describe()}"


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wav") / "short.wav"
    write_wav(str(path), PcmFormat.S16_LE, 2, 48000,
              make_signal(PcmFormat.S16_LE, 2, 4800, seed=31))
    return path


def conf_env(tmp_path: Path, lib: Path, options: dict[str, object]) -> dict[str, str]:
    conf = tmp_path / "pvplug.conf"
    conf.write_text(render_conf(lib, options))
    return {"ALSA_CONFIG_PATH": f"{SYSTEM_ALSA_CONF}:{conf}"}


# -- the plugin's Python code cannot be imported ---------------------------------

@pytest.fixture(scope="module")
def broken_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plugin whose embedded init code cannot ``import alsa_pvplug``: built
    for the base interpreter (where the package is not installed) with cffi's
    directory as the only site path (the package is there only through an
    editable install's .pth, which the plugin does not run), so
    cffi_start_python() fails."""
    base_python = Path(sys.base_prefix) / "bin" / "python{}.{}".format(*sys.version_info)
    if not base_python.exists():
        pytest.skip(f"no base interpreter at {base_python}")
    probe = subprocess.run([str(base_python), "-I", "-c", "import alsa_pvplug"],
                           capture_output=True, timeout=30, cwd="/")
    if probe.returncode == 0:
        pytest.skip(f"{base_python} has alsa_pvplug installed")
    cffi_dir = Path(_cffi_backend.__file__).parent
    if (cffi_dir / "alsa_pvplug").exists():
        pytest.skip(f"alsa_pvplug is installed in {cffi_dir} itself (not editable)")
    return build_plugin(tmp_path_factory.mktemp("broken"), site_dirs_override=[str(cffi_dir)],
                        python_exe=str(base_python))


def test_unimportable_python_package(tmp_path: Path, broken_plugin: Path,
                                     short_wav: Path) -> None:
    env = conf_env(tmp_path, broken_plugin,
                   {"transport": "sim", "sim_dir": str(tmp_path / "sim"), "domid": 1})
    m = run_measured(["aplay", "-D", "pvplug", str(short_wav)], env, tmp_path)
    assert_fails_fast(m, "the plugin's Python code failed to load",
                      "No module named 'alsa_pvplug'")


# -- bad options ------------------------------------------------------------------

@pytest.mark.parametrize("options, needles", [
    ({"colour": "blue"}, ["unknown option 'colour'"]),
    ({"timeout": "soon"}, ["timeout='soon'", "must be a number of seconds"]),
    ({"domid": "one"}, ["domid='one'", "not a decimal number"]),
    ({"log_level": "loud"}, ["log_level='loud'", "must be one of"]),
    ({"sim_dir": None}, ["transport sim needs the options 'sim_dir' and 'domid'"]),
], ids=["unknown-key", "timeout", "domid", "log-level", "missing-sim-dir"])
def test_bad_option(tmp_path: Path, plugin_lib: Path, short_wav: Path,
                    options: dict[str, object], needles: list[str]) -> None:
    opts: dict[str, object] = {"transport": "sim", "sim_dir": str(tmp_path / "sim"),
                               "domid": 1}
    opts.update(options)
    m = run_measured(["aplay", "-D", "pvplug", str(short_wav)],
                     conf_env(tmp_path, plugin_lib, opts), tmp_path)
    assert_fails_fast(m, "pvplug", *needles)


# -- nothing to talk to -----------------------------------------------------------

def test_transport_sim_without_simulator(tmp_path: Path, plugin_lib: Path,
                                         short_wav: Path) -> None:
    missing = tmp_path / "no-such-sim"
    env = conf_env(tmp_path, plugin_lib,
                   {"transport": "sim", "sim_dir": str(missing), "domid": 1})
    m = run_measured(["aplay", "-D", "pvplug", str(short_wav)], env, tmp_path)
    assert_fails_fast(m, f"no simulated hypervisor at {missing}")


@pytest.mark.skipif(os.path.exists("/dev/xen/evtchn"), reason="this is a Xen domain")
def test_transport_xen_outside_xen(tmp_path: Path, plugin_lib: Path, short_wav: Path) -> None:
    env = conf_env(tmp_path, plugin_lib, {"transport": "xen"})
    m = run_measured(["aplay", "-D", "pvplug", str(short_wav)], env, tmp_path)
    assert_fails_fast(m, "xen transport (frontend)", "/dev/xen/gntalloc is missing",
                      "/dev/xen/evtchn is missing", "xenstore is unreachable",
                      "audio open error: No such device")


def test_card_that_does_not_exist(pvenv: PvEnv, short_wav: Path) -> None:
    # Card 0 works (and the simulator and backend are done starting up) ...
    pvenv.run(["aplay", "-q", "-D", "pvplug", str(short_wav)], timeout=10)
    assert len(pvenv.played()) == 1
    # ... card 7 does not exist.
    m = run_measured(["aplay", "-D", "pvplug:7", str(short_wav)], pvenv.env, pvenv.root)
    assert_fails_fast(m, "no vsnd device 7")


# -- a card in use by another process -------------------------------------------------

def test_busy_card_then_free_after_sigkill(pvenv: PvEnv, short_wav: Path) -> None:
    lock = pvenv.sim.dir / "dom1" / "vsnd0.lock"
    holder = subprocess.Popen(
        ["aplay", "-q", "-D", "pvplug", "-t", "raw", "-f", "S16_LE", "-c", "2", "-r", "48000",
         "-d", "20", "/dev/zero"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        cwd=pvenv.root, preexec_fn=child_setup, env={**os.environ, **pvenv.env})
    try:
        # The holder has the card once its pid is in the lock file; wait until
        # it plays (the backend opened a WAV), so that its start-up is over.
        wait_until(lambda: holder.poll() is not None or
                   (lock.exists() and lock.read_text().strip() == str(holder.pid)
                    and len(pvenv.played()) == 1),
                   10, "the first aplay to claim the card and play")
        assert holder.poll() is None, "the first aplay exited early"

        m = run_measured(["aplay", "-D", "pvplug", str(short_wav)], pvenv.env, pvenv.root)
        assert_fails_fast(m, f"in use by process {holder.pid}")
        assert "Device or resource busy" in m.output, m.describe()

        holder.kill()  # no close, no xenbus goodbye: only the kernel cleans up
        holder.wait(5)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(5)

    before = set(pvenv.played())
    c = pvenv.run(["aplay", "-q", "-D", "pvplug", str(short_wav)], timeout=15)
    new = sorted(set(pvenv.played()) - before)
    assert len(new) == 1, (new, c.output)
    _info, got = read_wav(str(new[0]))
    _info, want = read_wav(str(short_wav))
    assert got[:len(want)] == want, "the next open after SIGKILL did not play the file"


def test_option_given_as_a_block(tmp_path: Path, plugin_lib: Path, short_wav: Path) -> None:
    env = conf_env(tmp_path, plugin_lib,
                   {"transport": "sim", "sim_dir": str(tmp_path / "sim"), "domid": 1})
    conf = Path(env["ALSA_CONFIG_PATH"].split(":")[-1])
    text = conf.read_text()
    assert "\tdomid 1\n" in text
    conf.write_text(text.replace("\tdomid 1\n", "\tdomid { value 1 }\n"))
    m = run_measured(["aplay", "-D", "pvplug", str(short_wav)], env, tmp_path)
    assert_fails_fast(m, "option 'domid' must be a single value, not a block")
