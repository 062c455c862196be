#!/usr/bin/env bash
# The test suite: every package with -race on real tokens, loopback gRPC and real
# stores. Run it through `make test`, which installs SoftHSM2/OpenSC and wraps it in a
# throwaway PostgreSQL cluster (scripts/pg-test.sh) so the PostgreSQL variants run too.
# With SETPAY_REQUIRE=all (set by .ci/run) a missing tool or database fails the test
# that needs it instead of skipping it (internal/testenv).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
cases=$(mktemp)
trap 'rm -f "$cases"' EXIT
export SETPAY_PG_CASES_FILE="$cases"
pkgs=$($GO list ./... | grep -v '/gateway/crashtest$')
$GO test -race -count=1 -timeout 20m $pkgs
# The crash test runs verbose, so the log shows how many times it killed the gateway
# and how many operations it checked afterwards.
$GO test -race -count=1 -timeout 10m -v ./gateway/crashtest 2>&1 |
  grep -E 'crash test:|^(ok|FAIL|PASS)|--- FAIL|panic:|Error Trace|Error:'
echo "PostgreSQL cases run (fresh schemas handed out): $(wc -l <"$cases")"
