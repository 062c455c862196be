#!/usr/bin/env bash
# Installs what the browser tests (make test-browser) need besides scripts/install-deps.sh:
# Debian's chromium, driven headless by chromedp over the DevTools protocol, and
# chromium-driver (its WebDriver, for running the same pages by hand with other tools).
# Idempotent: does nothing when everything is present.
set -euo pipefail
exec bash "$(dirname "$0")/install-deps.sh" --for "the browser tests" chromium chromium-driver fonts-dejavu-core
