#!/usr/bin/env bash
# Start or stop a throwaway PostgreSQL 15 + PostGIS cluster for the test suite.
#   scripts/pg-test-cluster.sh start DIR PORT   -> prints the superuser DSN on stdout
#   scripts/pg-test-cluster.sh stop DIR
# Installs postgresql-15 and postgresql-15-postgis-3 from the distribution when missing.
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?cluster directory}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

ensure_packages() {
  local need=()
  [ -x "$PGBIN/initdb" ] || need+=(postgresql-15)
  ls /usr/share/postgresql/15/extension/postgis.control >/dev/null 2>&1 || need+=(postgresql-15-postgis-3)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} from the distribution" >&2
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
  fi
}

case "$cmd" in
  start)
    port=${3:?port}
    ensure_packages
    if [ "$(id -u)" = 0 ]; then id postgres >/dev/null 2>&1 || useradd --system --create-home postgres; fi
    rm -rf "$dir"; mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    pw=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20)
    printf '%s\n' "$pw" > "$dir.pw"; chmod 644 "$dir.pw"; [ "$(id -u)" = 0 ] && chown postgres "$dir.pw"
    as_postgres "$PGBIN/initdb" -D "$dir/data" -U postgres --pwfile="$dir.pw" -A scram-sha-256 --auth-local=trust -E UTF8 --locale=C.UTF-8 >"$dir.initdb.log" 2>&1 \
      || { cat "$dir.initdb.log" >&2; exit 1; }
    cat >> "$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
max_wal_size = 4GB
wal_level = logical
max_replication_slots = 40
max_wal_senders = 40
log_min_messages = warning
CONF
    as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >&2
    echo "host=127.0.0.1 port=$port user=postgres password=$pw dbname=postgres"
    ;;
  stop)
    if [ -d "$dir/data" ]; then as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true; fi
    rm -rf "$dir" "$dir.pw" "$dir.initdb.log"
    ;;
  *) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
