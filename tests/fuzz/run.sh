#!/usr/bin/env bash
# Run every fuzz target for a while and report how many executions each made.
#
#   tests/fuzz/run.sh            # 60 seconds per target
#   tests/fuzz/run.sh 600        # 10 minutes per target
#
# Needs the nightly toolchain (rustup) and cargo-fuzz (installed here if missing). Crashes
# are written to tests/fuzz/artifacts/<target>/ and fail the run; the corpus grows in
# tests/fuzz/corpus/<target>/ (not committed).
set -euo pipefail
seconds="${1:-60}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${TRICKLE_FUZZ_TARGET_DIR:-$HOME/.cache/trickle-fuzz-target}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
status=0
for target in stored_hash requests legacy_factors import_records; do
  log="$(mktemp)"
  # -rss_limit_mb: an input that makes a parser allocate beyond this is a failure.
  if cargo +nightly fuzz run --fuzz-dir tests/fuzz "$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=1024 -max_len=8192 -timeout=10 >"$log" 2>&1; then
    runs="$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)"
    echo "$target: ok, ${runs:-see $log}"
  else
    echo "$target: FAILED (log: $log)"; tail -30 "$log"; status=1
  fi
done
exit "$status"
