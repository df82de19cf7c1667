#!/usr/bin/env bash
# First command of the README: set everything up on a fresh clone and run `siyu demo`
# (loads a sample brand into SIYU_HOME, default ./.siyu, and serves http://127.0.0.1:8000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/siyu demo "$@"
