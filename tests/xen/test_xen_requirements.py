"""What the xen transport needs, checked before it touches anything.

On this machine (no Xen) the real checks run against the real /dev and
/sys; permissions are checked by a real unprivileged process; a kernel
driver bound to the device is read from a sysfs-shaped tree (the real one
runs on real Xen in tests/xen/test_real_xen.py).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from alsa_pvplug.errors import DeviceBusy, XenError
from alsa_pvplug.frontend import Card
from alsa_pvplug.protocol.xenbus import XenbusState, parse_state
from alsa_pvplug.transport import open_transport, xen
from alsa_pvplug.transport.sim import SimTransport
from tests.support.env import REPO, Sim

no_xen = pytest.mark.skipif(os.path.exists(xen.EVTCHN_DEVICE), reason="this is a Xen domain")


@no_xen
@pytest.mark.parametrize("role, devices", [
    ("frontend", [xen.GNTALLOC_DEVICE, xen.EVTCHN_DEVICE, *xen.XENBUS_DEVICES]),
    ("backend", [xen.GNTDEV_DEVICE, xen.EVTCHN_DEVICE, xen.XENSTORED_SOCKETS[0]]),
])
def test_every_missing_device_is_named(role: str, devices: list[str]) -> None:
    text = "\n".join(xen.check_requirements(role))
    for device in devices:
        assert device in text
    assert (xen.GNTDEV_DEVICE in text) == (role == "backend")
    assert (xen.GNTALLOC_DEVICE in text) == (role == "frontend")


@no_xen
def test_open_fails_at_once_with_one_error_naming_all() -> None:
    with pytest.raises(XenError) as info:
        open_transport("xen")
    assert info.value.errno == errno.ENODEV
    assert info.value.func == "xen transport (frontend)"
    for device in (xen.GNTALLOC_DEVICE, xen.EVTCHN_DEVICE, "xenbus"):
        assert device in str(info.value)


def test_unknown_role() -> None:
    with pytest.raises(ValueError, match="role"):
        xen.check_requirements("middle-end")


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A directory an unprivileged uid can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pvplug-perms-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_unprivileged_user_is_told_about_permissions(world_dir: Path) -> None:
    """Root-only device nodes (stand-ins: root-owned 0600 files), probed by a
    real process running as nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged uid")
    fake = {name: str(world_dir / name) for name in ("gntalloc", "evtchn", "xenbus")}
    for path in fake.values():
        Path(path).write_bytes(b"")
        os.chmod(path, 0o600)
    probe = textwrap.dedent(f"""
        import json
        from alsa_pvplug.transport import xen
        xen.GNTALLOC_DEVICE = {fake['gntalloc']!r}
        xen.EVTCHN_DEVICE = {fake['evtchn']!r}
        xen.XENBUS_DEVICES = ({fake['xenbus']!r},)
        try:
            xen.require("frontend")
        except xen.XenError as exc:
            print(json.dumps([exc.errno, str(exc)]))
    """)
    # Our interpreter may live where nobody cannot read (~root/.pyenv): the
    # system one runs a copy of the (pure Python) package instead.
    system_python = "/usr/bin/python3"
    if not os.access(system_python, os.X_OK):
        pytest.skip(f"no {system_python} for the unprivileged probe")
    shutil.copytree(REPO / "alsa_pvplug", world_dir / "pkg" / "alsa_pvplug",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c"))
    nobody = 65534
    out = subprocess.run([system_python, "-I", "-c", f"import sys; sys.path.insert(0, "
                          f"{str(world_dir / 'pkg')!r})\n" + probe],
                         capture_output=True, text=True, timeout=30, cwd=world_dir,
                         user=nobody, group=nobody, extra_groups=[], env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    code, text = json.loads(out.stdout)
    assert code == errno.EACCES
    for path in fake.values():
        assert f"{path} is not readable and writable by uid {nobody}" in text


def _sysfs(root: Path, bound: dict[int, str | None], module: str | None) -> Path:
    """/sys/bus/xen as Linux lays it out: devices/vsnd-N/driver -> ../../drivers/D,
    drivers/D/module -> ../../../../module/M."""
    (root / "devices").mkdir(parents=True)
    for devid, driver in bound.items():
        dev = root / "devices" / f"vsnd-{devid}"
        dev.mkdir()
        if driver is not None:
            (root / "drivers" / driver).mkdir(parents=True, exist_ok=True)
            (dev / "driver").symlink_to(f"../../drivers/{driver}")
            if module is not None:
                link = root / "drivers" / driver / "module"
                if not link.is_symlink():
                    link.symlink_to(f"../../../../module/{module}")
    return root


def test_bound_kernel_driver_from_sysfs(tmp_path: Path) -> None:
    sysfs = _sysfs(tmp_path / "a", {0: "vsnd", 1: None}, "snd_xen_front")
    assert xen.bound_kernel_driver("vsnd", 0, str(sysfs)) == "vsnd (module snd_xen_front)"
    assert xen.bound_kernel_driver("vsnd", 1, str(sysfs)) is None  # present, unbound
    assert xen.bound_kernel_driver("vsnd", 2, str(sysfs)) is None  # no such device
    builtin = _sysfs(tmp_path / "b", {0: "vsnd"}, None)  # built into the kernel
    assert xen.bound_kernel_driver("vsnd", 0, str(builtin)) == "vsnd"


class _KernelOwnsVsnd(SimTransport):
    """The simulated hypervisor, in a guest whose kernel driver owns vsnd 0."""

    def bound_kernel_driver(self, devtype: str, devid: int) -> str | None:
        return "vsnd (module snd_xen_front)" if (devtype, devid) == ("vsnd", 0) else None


def test_card_refuses_a_device_the_kernel_drives(sim: Sim, tmp_path: Path) -> None:
    be = sim.backend(tmp_path, "--sink", "null")
    t = _KernelOwnsVsnd(sim.dir, 1)
    try:
        fe_state = f"{t.xenstore.get_domain_path(1)}/device/vsnd/0/state"
        before = t.xenstore.read(fe_state)
        with pytest.raises(DeviceBusy) as info:
            Card.open(t, timeout=1)
        assert "snd_xen_front" in str(info.value)
        assert "echo vsnd-0 > /sys/bus/xen/drivers/vsnd/unbind" in str(info.value)
        # Nothing was written: the kernel driver's handshake is left alone.
        assert t.xenstore.read(fe_state) == before
        assert parse_state(before) != XenbusState.INITIALISED
    finally:
        t.close()
        be.stop()
