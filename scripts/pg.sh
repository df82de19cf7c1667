#!/usr/bin/env bash
# Install (if needed) and start a throw-away PostgreSQL 15 cluster on 127.0.0.1 for the tests.
# Usage: scripts/pg.sh start DIR PORT | scripts/pg.sh stop DIR
# Runs the server as the `postgres` system user (PostgreSQL refuses to run as root).
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?data directory}; port=${3:-55432}
find_bin() {
  for v in 17 16 15; do
    if [ -x "/usr/lib/postgresql/$v/bin/initdb" ]; then echo "/usr/lib/postgresql/$v/bin"; return 0; fi
  done
  return 1
}
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$cmd" in
  start)
    if ! bin=$(find_bin); then
      if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq postgresql >/dev/null
        # The Debian package starts its own cluster; the tests use their own, so stop it.
        service postgresql stop >/dev/null 2>&1 || true
      else
        echo "PostgreSQL is not installed and we are not root: apt-get install postgresql" >&2; exit 1
      fi
      bin=$(find_bin)
    fi
    rm -rf "$dir"; mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
      chown postgres:postgres "$dir"
      chmod 755 "$(dirname "$dir")"  # the postgres user must be able to reach it (mktemp -d makes 0700)
    fi
    as_postgres "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/../initdb.log" 2>&1 \
      || { cat "$dir/../initdb.log" >&2; exit 1; }
    as_postgres "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      -w start >/dev/null
    ;;
  stop)
    bin=$(find_bin) || exit 0
    [ -d "$dir" ] && as_postgres "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  *) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
