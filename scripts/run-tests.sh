#!/usr/bin/env bash
# The README's test command: installs what it needs, then runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
# Lint and types first: cheap, and a failure there is a failure of the run.
.venv/bin/ruff check alsa_pvplug tests bench xenharness pvplug_build.py setup.py
.venv/bin/mypy alsa_pvplug
exec .venv/bin/python -m pytest -q "$@"
