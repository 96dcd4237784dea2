#!/usr/bin/env bash
# The README's demo command: installs what it needs, then plays and captures
# through the simulated hypervisor and the reference backend.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/pvplug demo "$@"
