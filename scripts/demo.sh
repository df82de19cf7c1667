#!/usr/bin/env bash
# First command of the README: set everything up on a fresh clone and run `siyu demo`
# (simulates a brand into SIYU_HOME, default ./.siyu, once, and serves http://127.0.0.1:8000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/siyu demo "$@"
