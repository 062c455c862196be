#!/usr/bin/env bash
# Throwaway software TPM with tpm2-pkcs11 on top, so the token-layer tests run against a
# second PKCS#11 implementation besides SoftHSM.
#
#   scripts/tpm2-test.sh run go test -race ./hsm/ ./signer/
#                             start, run the command with the environment below, stop
#   eval "$(scripts/tpm2-test.sh start)"
#                             start; exports the environment and SETPAY_TEST_TPM2_DIR
#   scripts/tpm2-test.sh stop [DIR]
#                             stop and delete (default $SETPAY_TEST_TPM2_DIR)
#
# What runs, all inside a fresh temp dir and on loopback only:
#   swtpm (TPM 2.0 simulator)  <-  tpm2-abrmd (resource manager)  <-  private D-Bus session bus
# tpm2-pkcs11 talks to tpm2-abrmd; without the resource manager, token creation and EC key
# generation fail once several sessions are open. The store is initialised with
# `tpm2_ptool init` (a persistent primary key); the test harness copies it per test binary
# and makes tokens with C_InitToken.
#
# Exported for the tests (softhsm/softhsmtest reads them):
#   SETPAY_TEST_PKCS11=tpm2  SETPAY_TEST_MODULE=<libtpm2_pkcs11.so>
#   TPM2_PKCS11_STORE  TPM2_PKCS11_TCTI  TPM2TOOLS_TCTI  DBUS_SESSION_BUS_ADDRESS
#
# Installs the Debian packages if missing (needs root; idempotent). Every wait is bounded:
# the script fails with the daemons' logs rather than hang.
set -euo pipefail
shopt -s inherit_errexit # so failures inside $(start) stop it too

log() { echo "tpm2-test: $*" >&2; }

PACKAGES=(swtpm swtpm-tools tpm2-tools tpm2-abrmd libtss2-tcti-tabrmd0 libtpm2-pkcs11-1 libtpm2-pkcs11-tools dbus)
WAIT_SECONDS=${SETPAY_TPM2_WAIT:-20}

multiarch() {
  case "$(uname -m)" in
    aarch64 | arm64) echo aarch64-linux-gnu ;;
    *) echo x86_64-linux-gnu ;;
  esac
}

module_path() {
  echo "${SETPAY_TEST_MODULE:-/usr/lib/$(multiarch)/pkcs11/libtpm2_pkcs11.so}"
}

ensure_installed() {
  local missing=()
  command -v swtpm >/dev/null 2>&1 || missing+=(swtpm)
  command -v tpm2_startup >/dev/null 2>&1 || missing+=(tpm2-tools)
  command -v tpm2-abrmd >/dev/null 2>&1 || [ -x /usr/sbin/tpm2-abrmd ] || missing+=(tpm2-abrmd)
  command -v tpm2_ptool >/dev/null 2>&1 || missing+=(libtpm2-pkcs11-tools)
  command -v dbus-daemon >/dev/null 2>&1 || missing+=(dbus)
  [ -f "$(module_path)" ] || missing+=(libtpm2-pkcs11-1)
  ls /usr/lib/"$(multiarch)"/libtss2-tcti-tabrmd.so* >/dev/null 2>&1 || missing+=(libtss2-tcti-tabrmd0)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "missing: ${missing[*]}; run as root or: sudo apt-get install -y ${PACKAGES[*]}"
    exit 1
  fi
  log "installing ${PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  timeout 600 apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

# port_free reports whether nobody listens on 127.0.0.1:$1.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port_pair prints a port P such that P and P+1 are free (swtpm's server and control).
free_port_pair() {
  local p
  for p in $(seq 23210 2 23410); do
    if port_free "$p" && port_free $((p + 1)); then
      echo "$p"
      return 0
    fi
  done
  log "no two free ports in 23210..23411"
  exit 1
}

# wait_for runs "$@" until it succeeds or WAIT_SECONDS pass.
wait_for() {
  local what=$1 deadline
  shift
  deadline=$((SECONDS + WAIT_SECONDS))
  WAIT_GIVE_UP=
  until "$@" >/dev/null 2>&1; do
    if [ -n "$WAIT_GIVE_UP" ]; then
      log "gave up waiting for $what: $WAIT_GIVE_UP"
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "timed out after ${WAIT_SECONDS}s waiting for $what"
      return 1
    fi
    sleep 0.1
  done
}

abrmd_on_bus() {
  if ! alive "$(cat "$1")"; then
    WAIT_GIVE_UP="tpm2-abrmd exited"
    return 1
  fi
  dbus-send --session --print-reply --reply-timeout=1000 --dest=org.freedesktop.DBus / \
    org.freedesktop.DBus.NameHasOwner string:com.intel.tss2.Tabrmd | grep -q 'boolean true'
}

dump_logs() {
  local dir=$1 f
  for f in "$dir"/*.log; do
    [ -s "$f" ] || continue
    log "---- $f"
    tail -n 30 "$f" >&2
  done
}

start() {
  ensure_installed
  local dir port dbus_addr
  dir=$(mktemp -d /tmp/setpay-tpm2.XXXXXX)
  chmod 700 "$dir"
  mkdir -p "$dir/state" "$dir/store"
  # From here on, a failure tears down whatever was started.
  trap 'dump_logs "$dir"; stop "$dir"; exit 1' ERR

  port=$(free_port_pair)
  swtpm socket --tpm2 --tpmstate dir="$dir/state" \
    --server type=tcp,port="$port",bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 \
    --flags not-need-init,startup-clear \
    --pid file="$dir/swtpm.pid" --log file="$dir/swtpm.log" --daemon >>"$dir/swtpm.log" 2>&1 </dev/null
  wait_for "swtpm on 127.0.0.1:$port" test -s "$dir/swtpm.pid"
  wait_for "swtpm to listen on 127.0.0.1:$port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"

  # A private session bus, so tpm2-abrmd's well-known name never clashes with another run.
  dbus_addr="unix:path=$dir/bus"
  dbus-daemon --config-file=/usr/share/dbus-1/session.conf --address="$dbus_addr" \
    --fork --nopidfile --print-pid=3 3>"$dir/dbus.pid" >"$dir/dbus.log" 2>&1 </dev/null
  wait_for "the D-Bus session bus" test -S "$dir/bus"

  DBUS_SESSION_BUS_ADDRESS="$dbus_addr" tpm2-abrmd --session --allow-root --flush-all --max-connections=100 --max-transients=100 \
    --tcti="swtpm:host=127.0.0.1,port=$port" >"$dir/abrmd.log" 2>&1 </dev/null &
  echo $! >"$dir/abrmd.pid"

  export DBUS_SESSION_BUS_ADDRESS="$dbus_addr"
  export TPM2TOOLS_TCTI="tabrmd:bus_type=session"
  export TPM2_PKCS11_TCTI="tabrmd:bus_type=session"
  export TPM2_PKCS11_STORE="$dir/store"
  # Ask the bus whether tpm2-abrmd owns its name yet: a TCTI connecting earlier makes the
  # bus try to auto-start the service and hangs for its activation timeout.
  wait_for "tpm2-abrmd on the session bus" abrmd_on_bus "$dir/abrmd.pid"
  wait_for "the TPM through tpm2-abrmd" timeout 5 tpm2_getcap properties-fixed
  timeout 60 tpm2_ptool init --path "$dir/store" >"$dir/ptool.log" 2>&1
  trap - ERR

  log "running in $dir (swtpm on 127.0.0.1:$port)"
  cat <<EOF
export SETPAY_TEST_TPM2_DIR='$dir'
export SETPAY_TEST_PKCS11=tpm2
export SETPAY_TEST_MODULE='$(module_path)'
export DBUS_SESSION_BUS_ADDRESS='$dbus_addr'
export TPM2TOOLS_TCTI='$TPM2TOOLS_TCTI'
export TPM2_PKCS11_TCTI='$TPM2_PKCS11_TCTI'
export TPM2_PKCS11_STORE='$dir/store'
export TPM2_PKCS11_LOG_LEVEL='${TPM2_PKCS11_LOG_LEVEL:-0}'
export TSS2_LOG='${TSS2_LOG:-all+none}'
EOF
}

# alive reports whether pid runs; an exited daemon stays a zombie until its reaper
# (not us: it was reparented) collects it, which counts as gone.
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# kill_pidfile stops the one process whose id the file holds, waiting a bounded time.
kill_pidfile() {
  local f=$1 pid i
  [ -s "$f" ] || return 0
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 1 50); do
    alive "$pid" || return 0
    sleep 0.05
  done
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  local dir=${1:-${SETPAY_TEST_TPM2_DIR:-}}
  case "$dir" in
    /tmp/setpay-tpm2.*) ;;
    *) log "stop: not a tpm2-test dir: '$dir'"; return 1 ;;
  esac
  kill_pidfile "$dir/abrmd.pid"
  kill_pidfile "$dir/swtpm.pid"
  kill_pidfile "$dir/dbus.pid"
  rm -rf "$dir"
}

cmd=${1:-start}
[ $# -gt 0 ] && shift
case "$cmd" in
  start) start ;;
  stop) stop "$@" ;;
  run)
    [ $# -gt 0 ] || { log "run: need a command"; exit 2; }
    env_lines=$(start)
    eval "$env_lines"
    trap 'stop "$SETPAY_TEST_TPM2_DIR"' EXIT
    trap 'exit 130' INT TERM
    "$@"
    ;;
  *) log "usage: $0 start | stop [DIR] | run CMD..."; exit 2 ;;
esac
