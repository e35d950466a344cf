#!/usr/bin/env bash
# The scaling table of docs/BENCHMARKS.md: for each hashing thread count, start `trickle dev`
# (SQLite, one process) with that many hashing threads in the user-store and the connector,
# and run `trickle bench --json --hash-threads N` against it: migrated logins against the
# floor at exactly N threads, and the cheap calls' latency while those logins saturate the N
# threads. Prints one JSON report per line (each with its `hash_threads`), then a table.
#
#   tests/bench/scaling.sh                 # 1, 2, 4, 8, 16 threads, those up to this machine's cores
#   tests/bench/scaling.sh 1 2 4           # these counts (more than the cores is allowed)
#   TRICKLE_BENCH_ARGS="--duration 5" tests/bench/scaling.sh
#
# Needs a release build (cargo build --release -p trickle) and python3.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
trickle="${TRICKLE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/trickle}"
[ -x "$trickle" ] || { echo "no release binary at $trickle: cargo build --release -p trickle" >&2; exit 1; }
cores="$(nproc)"
counts=("$@")
if [ "${#counts[@]}" -eq 0 ]; then
  for n in 1 2 4 8 16; do [ "$n" -le "$cores" ] && counts+=("$n"); done
fi

work="$(mktemp -d)"
dev_pid=""
cleanup() {
  [ -n "$dev_pid" ] && kill "$dev_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export RUST_LOG="${RUST_LOG:-warn}"
reports="$work/reports.jsonl"
for n in "${counts[@]}"; do
  rm -rf "$work/dev"
  TRICKLE_STORE__HASH_WORKERS="$n" TRICKLE_LEGACY__HASH_WORKERS="$n" \
    "$trickle" dev --data-dir "$work/dev" >"$work/dev.log" 2>&1 &
  dev_pid=$!
  for _ in $(seq 100); do
    if echo x | "$trickle" login nobody@bench.trickle.invalid 2>&1 | grep -q "login failed"; then break; fi
    sleep 0.2
  done
  # shellcheck disable=SC2086
  "$trickle" bench --json --hash-threads "$n" --watch-pid "$dev_pid" \
    --scenario migrated-login,validate-token,get-user ${TRICKLE_BENCH_ARGS:-} \
    | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))' | tee -a "$reports"
  kill "$dev_pid"; wait "$dev_pid" 2>/dev/null || true; dev_pid=""
done

python3 - "$reports" "$cores" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"\nmachine: {sys.argv[2]} cores")
print("| hashing threads | migrated logins/s | floor/s at those threads | ratio | ValidateToken p99 ms | GetUser p99 ms |")
print("|---|---|---|---|---|---|")
for r in rows:
    s = {x["scenario"]: x for x in r["scenarios"]}
    m = s.get("migrated-login", {})
    p99 = lambda k: f'{s[k]["latency_ms"]["p99"]:.2f}' if k in s else "-"
    print(f'| {r["hash_threads"]} | {m.get("per_second", 0):.1f} | {m.get("floor_per_second") or 0:.1f} '
          f'| {m.get("ratio") or 0:.3f} | {p99("validate-token")} | {p99("get-user")} |')
EOF
