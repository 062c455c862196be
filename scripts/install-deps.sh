#!/usr/bin/env bash
# Installs the system packages setpay needs (SoftHSM2 as the dev/CI token, OpenSC's
# pkcs11-tool and OpenSSL's PKCS#11 engine for the independent-tool tests; systemd for
# `systemd-analyze verify` of the unit examples in deploy/systemd and curl for the
# health checks in docs/operate.md, which the tests run).
# Idempotent: does nothing when everything is present.
#
#   scripts/install-deps.sh                  the packages above
#   scripts/install-deps.sh --for WHAT PKG...  those packages instead (scripts/browser-deps.sh)
set -euo pipefail

who="setpay"
pkgs=(softhsm2 opensc openssl libengine-pkcs11-openssl systemd curl)
if [ "${1:-}" = "--for" ]; then
  who=$2
  shift 2
  pkgs=("$@")
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing for $who: ${missing[*]}. Run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
