"""domU helper (python3 -S /opt/xsw.py ...): xenstore through our own LibXenStore.

    xsw.py wait PATH VALUE TIMEOUT_S   exit 0 once PATH reads VALUE, 1 on timeout
    xsw.py write PATH VALUE
Paths are relative to this domain's xenstore directory.
"""
import sys
import time

sys.path.insert(0, "/opt/pvplug")
from alsa_pvplug.transport.xenstore import LibXenStore  # noqa: E402

xs = LibXenStore.open(None)
cmd, path, value = sys.argv[1:4]
if cmd == "write":
    xs.write(path, value)
    sys.exit(0)
deadline = time.monotonic() + float(sys.argv[4])
while xs.read(path) != value:
    if time.monotonic() > deadline:
        print(f"xsw: {path} is {xs.read(path)!r}, not {value!r}, after {sys.argv[4]} s")
        sys.exit(1)
    time.sleep(0.05)
