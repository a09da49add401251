#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 for the distributed-sweep tests and print the
# URL (`export LOOKSAM_TEST_POSTGRES_URL=$(bash .ci/postgres.sh DIR)`). Installs Debian's package if
# the machine lacks it. Everything lives under DIR (default: a new temp dir); nothing listens
# beyond loopback. Stop it with: bash .ci/postgres.sh --stop DIR
set -euo pipefail
log() { echo "postgres.sh: $*" >&2; }
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "${1:-}" = "--stop" ]; then
  [ -d "${2:-}/data" ] && as_pg "$bindir/pg_ctl" -D "$2/data" -m fast stop >/dev/null || true
  exit 0
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  log "installing postgresql (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
root=${1:-$(mktemp -d /tmp/looksam-pg.XXXXXX)}
mkdir -p "$root"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
echo postgres > "$root/pw"
chown -R postgres "$root"
as_pg "$bindir/initdb" -D "$root/data" -A md5 --username=postgres --pwfile="$root/pw" >/dev/null
as_pg "$bindir/pg_ctl" -D "$root/data" -l "$root/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $root" start >/dev/null
PGPASSWORD=postgres "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -q -v ON_ERROR_STOP=1 \
  -c "CREATE USER looksam PASSWORD 'looksam-ci'" -c "CREATE DATABASE looksam OWNER looksam" >&2
log "server on 127.0.0.1:$port (data in $root; stop: bash .ci/postgres.sh --stop $root)"
echo "postgresql://looksam:looksam-ci@127.0.0.1:$port/looksam"
