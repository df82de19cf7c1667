#!/usr/bin/env bash
# Set up a development environment: a virtualenv in .venv with siyu installed (editable) and its
# dev tools. Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "siyu needs Python >= 3.11 (found: $("$PY" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.siyu-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
# The console's chart library comes from the npm registry (web/package-lock.json), never from the repo.
if [ ! -f web/node_modules/echarts/dist/echarts.min.js ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
  if command -v npm >/dev/null 2>&1; then
    npm ci --prefix web --no-audit --no-fund --loglevel=error >/dev/null
  else
    echo "npm not found: the console will show its numbers without charts (install Node.js + npm, rerun)" >&2
  fi
fi
