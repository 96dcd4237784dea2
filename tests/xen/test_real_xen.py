"""End to end on real Xen 4.17 booted under QEMU (TCG): xenharness/run.py.

The backend (``pvplug backend --transport xen``) runs in a PV dom0, the plugin in a PV domU
whose vsnd card comes from ``xl``'s ``vsnd = [...]``; aplay (s16_le, f32_le) and arecord go
through the real grant tables, event channels and xenstore, and the bytes are compared
bit-exact on the host.  Also: clients and the backend killed mid-stream, Linux's own
snd_xen_front served by our backend (and the plugin refusing the device meanwhile), and the
backend's ALSA sink on QEMU's emulated Intel HDA.  Slow (about two minutes warm, several
cold), so it is skipped with the reason printed when the machine cannot run it (not root,
no qemu/apt, cold cache without network) or when ``PVPLUG_REAL_XEN=0``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "xenharness" / "run.py"
COLD_TIMEOUT = 600   # the bound for a cold cache (downloads, debootstrap)
# A bound, not the expectation.  QEMU runs Xen under TCG beside the rest of the suite on a
# 2-CPU machine: a warm run took 187-240 s quiet, and the CI run of 2b9bb9d needed about
# 250 s (the domU finished its last take at 231 s and was still powering off at 240 s).
BOOT_TIMEOUT = 420
WARM_TIMEOUT = BOOT_TIMEOUT + 60


def _skip_reason() -> str | None:
    if os.environ.get("PVPLUG_REAL_XEN", "1") == "0":
        return "PVPLUG_REAL_XEN=0"
    sys.path.insert(0, str(REPO / "xenharness"))
    try:
        import run as harness
    finally:
        sys.path.pop(0)
    return harness.why_not()


@pytest.mark.slow
@pytest.mark.timeout(COLD_TIMEOUT + 60)
def test_aplay_arecord_on_real_xen() -> None:
    reason = _skip_reason()
    if reason:
        print(f"real-Xen harness skipped: {reason}")
        pytest.skip(reason)
    sys.path.insert(0, str(REPO / "xenharness"))
    try:
        import run as harness
    finally:
        sys.path.pop(0)
    timeout = WARM_TIMEOUT if harness.cache_is_warm() else COLD_TIMEOUT
    # run.py's own bounds (build, QEMU) are inside this one
    build_timeout = str(max(timeout - BOOT_TIMEOUT - 20, 50))
    # run.py and QEMU (qemu.sh exec's it) share a new process group, killed in teardown
    proc = subprocess.Popen([sys.executable, str(RUN), "--build-timeout", build_timeout,
                             "--boot-timeout", str(BOOT_TIMEOUT), "--hda"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO,
                            start_new_session=True)
    try:
        raw, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raw, _ = proc.communicate(timeout=30)
        pytest.fail(f"harness took more than {timeout} s\n{raw.decode(errors='replace')[-6000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    out = raw.decode(errors="replace")
    print(out[-12000:])
    if proc.returncode == 77:
        pytest.skip(out.strip().splitlines()[-1])
    if proc.returncode == 2 and "PVPLUG-XEN-HARNESS: ERROR build" in out:
        # Building the cache from Debian's mirror failed (network, mirror): the
        # machine cannot run the harness now; say why, do not fail the suite.
        reason = out.strip().splitlines()[-1]
        print(f"real-Xen harness skipped: {reason}\n{out[-3000:]}")
        pytest.skip(reason)
    assert proc.returncode == 0, out[-6000:]
    assert "PVPLUG-XEN-HARNESS: PASS" in out
    # kfront: played by Linux's own snd_xen_front through our backend; after_unbind: the
    # plugin again, once that driver let go of the device
    for name in ("play_s16", "play_f32", "after_kill", "after_restart", "kfront",
                 "after_unbind"):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(f"{name}: "))
        assert "bit-exact backend WAV: ['" in line, line
    assert "bit-exact with the backend source: True" in out
    # the plugin refused the device while snd_xen_front drove it, and said what to do
    refused = next(ln for ln in out.splitlines()
                   if ln.strip().startswith("plugin on a device snd_xen_front drives: "))
    assert "rc 1 " in refused and "echo vsnd-0 > /sys/bus/xen/drivers/vsnd/unbind" in refused
    # dom0's backend played into QEMU's emulated Intel HDA (a real ALSA device)
    hda = next(ln for ln in out.splitlines() if ln.strip().startswith("HDA: "))
    assert float(hda.split("correlation with the played file ")[1].split()[0]) >= 0.99, hda
