#!/usr/bin/env bash
# Second command of the README: set up and run the full test suite, on SQLite and on a real
# PostgreSQL that this script installs (Debian package) and starts on 127.0.0.1, and with Debian's
# Chromium (+ a CJK font) for the console tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k identity`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/browser.sh
pgdir=$(mktemp -d /tmp/siyu-pg.XXXXXX)/data
port=${SIYU_TEST_PG_PORT:-55432}
bash scripts/pg.sh start "$pgdir" "$port"
trap 'bash scripts/pg.sh stop "$pgdir"' EXIT
export SIYU_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
set +e
.venv/bin/python -m pytest -n 2 --dist loadgroup "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "pytest collected no tests: treating as a failure" >&2; exit 1; fi
exit "$rc"
