"""JACK on pvplug: xruns at short periods (issue 10).

    .venv/bin/python bench/jack.py [--periods 64,128,256] [--seconds 60] [--duplex]
                                   [--rt 20] [--repo DIR] [--json F]

For each period size: ``jackd -R -d alsa -P pvplug [-C pvplug] -r 48000 -p N
-n 2`` and ``jack_simple_client`` playing for ``--seconds``; counts the xruns
jackd reports ("xrun of at least" in its verbose log) and the plugin's own
under/overrun warnings.  The simulator and the backend run SCHED_FIFO at
``--rt`` (as a dom0 backend on its own vCPU would not queue behind the
guest; 0 = normal priority).  Target: 0 xruns in 60 s at 64, 128 and 256,
and duplex at 128.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from harness import REPO, System, repo_arg

XRUN_RE = re.compile(r"xrun of at least")
PLUGIN_XRUN_RE = re.compile(r"pvplug: .*(underrun|overrun)")


def run_one(args: argparse.Namespace, period: int, duplex: bool) -> dict[str, Any]:
    with System(args.repo, backend_args=["--sink", "null", "--source", "sine:1000"],
                rt=args.rt) as s:
        env = s.alsa_env()
        name = f"pvbench{os.getpid()}"
        jenv = {**env, "JACK_NO_AUDIO_RESERVATION": "1", "JACK_DEFAULT_SERVER": name,
                "HOME": str(s.work)}
        argv = ["stdbuf", "-oL", "-eL", "jackd", "-v", "-R", "-n", name, "-d", "alsa",
                "-P", "pvplug", "-o", "2"]
        if duplex:
            argv += ["-C", "pvplug", "-i", "2"]
        argv += ["-r", "48000", "-p", str(period), "-n", "2"]
        jack = s.start(argv, f"jackd-{period}", env=jenv, rt=0)
        w = s.start(["jack_wait", "-s", name, "-w", "-t", "15"], "jack_wait", env=jenv, rt=0)
        w.wait(20)
        if not jack.alive:
            raise RuntimeError(f"jackd exited:\n{jack.output()}")
        client = s.start(["jack_simple_client"], f"client-{period}", env=jenv, rt=0)
        time.sleep(1.0)  # connection and first cycles
        start = jack.log.read_text(errors="replace")
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            if not (jack.alive and client.alive):
                break
            time.sleep(0.2)
        ran = time.monotonic() - t0
        log = jack.log.read_text(errors="replace")[len(start):]
        alive = jack.alive
        if not (alive and client.alive):  # say why the run ended early
            print(f"-p {period}{' duplex' if duplex else ''}: jackd or its client stopped "
                  f"after {ran:.1f} s; jackd's last lines:\n" + "\n".join(log.splitlines()[-15:]) +
                  "\nclient:\n" + client.output()[-1500:], file=sys.stderr)
        client.stop()
        jack.stop()
    return {"period": period, "duplex": duplex, "seconds": ran, "jackd_alive": alive,
            "xruns": len(XRUN_RE.findall(log)),
            "plugin_xrun_warnings": len(PLUGIN_XRUN_RE.findall(log)),
            "ms_per_period": period / 48.0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--periods", default="64,128,256")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--duplex", action="store_true", help="also -C pvplug at each period")
    p.add_argument("--duplex-only", action="store_true")
    p.add_argument("--rt", type=int, default=20, help="SCHED_FIFO of sim and backend (0: off)")
    p.add_argument("--repo", type=repo_arg, default=REPO)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    for prog in ("jackd", "jack_simple_client", "jack_wait", "stdbuf"):
        if shutil.which(prog) is None:
            sys.exit(f"not installed: {prog}")
    results = []
    print(f"JACK on pvplug ({args.repo}), {args.seconds:g} s each, sim/backend "
          f"{'SCHED_FIFO ' + str(args.rt) if args.rt else 'normal priority'}; target 0 xruns")
    for period in [int(x) for x in args.periods.split(",")]:
        modes = [True] if args.duplex_only else [False, True] if args.duplex else [False]
        for duplex in modes:
            r = run_one(args, period, duplex)
            results.append(r)
            print(f"  -p {period:4d} ({r['ms_per_period']:.2f} ms) "
                  f"{'duplex  ' if duplex else 'playback'}: {r['xruns']:3d} xruns "
                  f"({r['plugin_xrun_warnings']} plugin warnings) in {r['seconds']:.0f} s"
                  f"{'' if r['jackd_alive'] else '  jackd DIED'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
