#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine:
# Debian packages with apt-get when root, Python packages into ./.venv,
# and builds the package (and its compiled helper) in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

# pulseaudio, pulseaudio-utils (paplay, parec, pactl) and jackd2 (jackd and its
# example clients) are only for the client smoke tests (tests/plugin/test_clients_pa_jack.py);
# pipewire and pipewire-bin (pw-play, pw-record, pw-cli, pw-link) for
# tests/plugin/test_clients_pipewire.py; libpipewire-0.3-dev and libpulse-dev for
# bench/pw_profile.c and bench/pa_latency.c (PipeWire's profiler, PulseAudio's
# sink latency, read by bench/pipewire.py and bench/pulseaudio.py).
DEB_PACKAGES=(gcc libasound2-dev zlib1g-dev alsa-utils libxen-dev xenstore-utils
              pulseaudio pulseaudio-utils jackd2
              pipewire pipewire-bin libpipewire-0.3-dev libpulse-dev)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "setup-env: installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup-env: missing Debian packages (run as root or install them): ${missing[*]}" >&2
        exit 1
    fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
