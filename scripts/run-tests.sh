#!/usr/bin/env bash
# The README's test command: installs what it needs, then runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/python -m pytest -q "$@"
