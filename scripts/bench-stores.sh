#!/usr/bin/env bash
# Purchases/s on SQLite and on a durable PostgreSQL, interleaved in one run.
#
#   scripts/bench-stores.sh [ROUNDS] [DURATION] [CONCURRENCY]    (default 3 10s 1,4,16,64)
#
# Starts a throwaway PostgreSQL with its default durability (scripts/pg-test.sh
# --durable: fsync=on, synchronous_commit=on), then runs `setpay bench purchase`
# ROUNDS times on each store, alternating which store goes first, each
# PostgreSQL run on a fresh schema. The JSON of every run goes to
# $BENCH_OUT (default a temp dir); SETPAY_BIN runs that binary instead of
# building this tree; the summary is the median purchases/s and
# p99 per store and concurrency over the rounds. On a shared machine the load
# changes from minute to minute; interleaving puts both stores under the same.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SETPAY_TEST_PG_DSN:-}" ]; then
  exec bash scripts/pg-test.sh run --durable bash "$0" "$@"
fi
rounds=${1:-3}
duration=${2:-10s}
conc=${3:-1,4,16,64}
out=${BENCH_OUT:-$(mktemp -d /tmp/setpay-bench-stores.XXXXXX)}
mkdir -p "$out"
# SETPAY_BIN: a setpay binary built elsewhere (e.g. from an older commit, to compare).
bin=${SETPAY_BIN:-$out/setpay}
[ -n "${SETPAY_BIN:-}" ] || go build -o "$bin" ./cmd/setpay
psql "$SETPAY_TEST_PG_DSN" -Atc "SELECT 'postgres ' || version() || ', fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit')" >&2

run() { # store round
  local dsn=""
  if [ "$1" = postgres ]; then
    psql -q "$SETPAY_TEST_PG_DSN" -c "CREATE SCHEMA bench_$2"
    dsn="$SETPAY_TEST_PG_DSN&search_path=bench_$2"
  fi
  echo "bench-stores: round $2, $1" >&2
  "$bin" bench purchase --store "$dsn" --concurrency "$conc" --duration "$duration" --out "$out/$1-$2.json" >/dev/null
}
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then run sqlite "$r"; run postgres "$r"; else run postgres "$r"; run sqlite "$r"; fi
done

python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
runs = {s: [json.load(open(f"{out}/{s}-{r}.json")) for r in range(1, rounds + 1)] for s in ("sqlite", "postgres")}
levels = [x["concurrency"] for x in runs["sqlite"][0]["results"]]
def series(store, key):
    return {c: [next(x for x in run["results"] if x["concurrency"] == c) for run in runs[store]] for c in levels}
print(f"| wallets | SQLite purchases/s | PostgreSQL purchases/s | PG/SQLite | SQLite p99 ms | PostgreSQL p99 ms | PG change from previous level |")
print("|---|---|---|---|---|---|---|")
prev = None
for c in levels:
    sq = series("sqlite", None)[c]; pg = series("postgres", None)[c]
    sq_t = statistics.median(x["purchases_per_sec"] for x in sq)
    pg_t = statistics.median(x["purchases_per_sec"] for x in pg)
    sq_p = statistics.median(x["steps"]["total"]["p99_us"] for x in sq) / 1e3
    pg_p = statistics.median(x["steps"]["total"]["p99_us"] for x in pg) / 1e3
    chg = "" if prev is None else f"{(pg_t / prev - 1) * 100:+.0f}%"
    prev = pg_t
    sqr = " ".join(f"{x['purchases_per_sec']:.0f}" for x in sq)
    pgr = " ".join(f"{x['purchases_per_sec']:.0f}" for x in pg)
    print(f"| {c} | {sq_t:.0f} ({sqr}) | {pg_t:.0f} ({pgr}) | {pg_t / sq_t:.2f} | {sq_p:.0f} | {pg_p:.0f} | {chg} |")
print(f"\nruns: {out}")
PY
