#!/usr/bin/env bash
# Installs what the browser tests (make test-browser) need besides scripts/install-deps.sh:
# Debian's chromium, driven headless by chromedp over the DevTools protocol, and
# chromium-driver (its WebDriver, for running the same pages by hand with other tools).
# Idempotent: does nothing when everything is present.
set -euo pipefail

pkgs=(chromium chromium-driver fonts-dejavu-core)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "the browser tests need: ${missing[*]}. Run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
