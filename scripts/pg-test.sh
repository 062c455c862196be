#!/usr/bin/env bash
# Throwaway PostgreSQL for the store tests.
#
#   scripts/pg-test.sh run go test -race ./store/...   start, run the command with
#                                                      SETPAY_TEST_PG_DSN set, stop
#   eval "$(scripts/pg-test.sh start)"                 start; exports SETPAY_TEST_PG_DSN
#                                                      and SETPAY_TEST_PG_DIR
#   scripts/pg-test.sh stop [DIR]                      stop and delete (default $SETPAY_TEST_PG_DIR)
#   scripts/pg-test.sh run --durable CMD...             (also start --durable) the same with
#                                                      PostgreSQL's default durability
#
# Installs PostgreSQL from Debian packages if missing (needs root; idempotent).
# The cluster lives in a fresh temp dir, runs as the `postgres` OS user when
# started as root (postgres refuses to run as root), listens only on
# 127.0.0.1 on a free port, trusts local connections and has fsync off: it is
# for tests only and holds nothing worth keeping. --durable keeps PostgreSQL's
# defaults instead (fsync=on, synchronous_commit=on, full_page_writes=on), so
# every commit waits for its WAL flush as on a production server: use it for
# benchmarks, which the fast mode would flatter.
set -euo pipefail

log() { echo "pg-test: $*" >&2; }

ensure_installed() {
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then return 0; fi
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "PostgreSQL is not installed; run as root or: sudo apt-get install -y postgresql"
    exit 1
  fi
  log "installing postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
}

bindir() {
  # Highest installed major version.
  ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1
}

# as_db runs a command as the cluster owner.
as_db() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  local p
  for p in $(seq 25432 25532); do
    # A refused connection means nobody listens there.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  log "no free port in 25432..25532"
  exit 1
}

start() {
  local durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  if [ "${1:-}" = "--durable" ]; then
    durability="-c fsync=on -c synchronous_commit=on -c full_page_writes=on"
    shift
  fi
  [ $# -eq 0 ] || { log "start: unexpected argument '$1'"; exit 2; }
  ensure_installed
  local bin dir port user
  bin=$(bindir)
  dir=$(mktemp -d /tmp/setpay-pg.XXXXXX)
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || { log "no postgres OS user"; exit 1; }
    chown postgres: "$dir"
    user=postgres
  else
    user=$(id -un)
  fi
  chmod 700 "$dir"
  as_db "$bin/initdb" -D "$dir/data" -U "$user" --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  port=$(free_port)
  as_db "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir $durability -c max_connections=200" \
    >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  as_db "$bin/createdb" -h 127.0.0.1 -p "$port" -U "$user" setpay_test
  log "running in $dir on 127.0.0.1:$port ($durability)"
  echo "export SETPAY_TEST_PG_DSN='postgres://$user@127.0.0.1:$port/setpay_test?sslmode=disable'"
  echo "export SETPAY_TEST_PG_DIR='$dir'"
}

stop() {
  local dir=${1:-${SETPAY_TEST_PG_DIR:-}}
  case "$dir" in
    /tmp/setpay-pg.*) ;;
    *) log "stop: not a pg-test dir: '$dir'"; exit 1 ;;
  esac
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_db "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
  fi
  rm -rf "$dir"
}

cmd=${1:-start}
[ $# -gt 0 ] && shift
case "$cmd" in
  start) start "$@" ;;
  stop) stop "$@" ;;
  run)
    mode=()
    if [ "${1:-}" = "--durable" ]; then mode=(--durable); shift; fi
    [ $# -gt 0 ] || { log "run: need a command"; exit 2; }
    eval "$(start "${mode[@]}")"
    trap 'stop "$SETPAY_TEST_PG_DIR"' EXIT
    "$@"
    ;;
  *) log "usage: $0 start [--durable] | stop [DIR] | run [--durable] CMD..."; exit 2 ;;
esac
