#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 120), one after the other, and prints a
# table of executions per target. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). See docs/fuzzing.md.
#
#   scripts/fuzz.sh [seconds-per-target] [target...]
#
# Each target starts from its committed corpus (fuzz/corpus/<target>), copied to a work
# folder so that the committed corpus stays small; a crash or broken invariant is written
# to fuzz/artifacts/<target>/ (add it to fuzz/corpus/<target>/ once fixed: the replay test,
# tests/fuzz_corpus.rs, then runs it on every CI build). Runs under `nice`.
# Environment: FUZZ_TARGET_DIR (default target/fuzz), FUZZ_WORK (default a temp folder),
# FUZZ_JOBS (cargo build jobs).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-120}"
shift || true
tdir="${FUZZ_TARGET_DIR:-$root/target/fuzz}"
work="${FUZZ_WORK:-$(mktemp -d)}"
out="$root/fuzz/artifacts/summary.md"
cd "$root/fuzz"
if [ "$#" -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo +nightly fuzz list); fi

if [ -n "${FUZZ_JOBS:-}" ]; then export CARGO_BUILD_JOBS="$FUZZ_JOBS"; fi
nice cargo +nightly fuzz build -s none --target-dir "$tdir" >&2 || exit 2

mkdir -p "$root/fuzz/artifacts"
{
  echo "| target | seconds | executions | exec/s | corpus (start → end) | result |"
  echo "|---|---:|---:|---:|---|---|"
} > "$out"
fail=0
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  cp -n "$root/fuzz/corpus/$t/"* "$work/$t/" 2>/dev/null
  n0=$(ls "$work/$t" | wc -l)
  log="$work/$t.log"
  echo "fuzz: $t for ${secs}s" >&2
  nice cargo +nightly fuzz run -s none --target-dir "$tdir" "$t" "$work/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  n1=$(ls "$work/$t" | wc -l)
  if [ "$rc" -eq 0 ]; then res="ok"; else res="FAILED (exit $rc, see $log and fuzz/artifacts/$t)"; fail=1; fi
  echo "| $t | $secs | ${execs:-?} | ${rate:-?} | $n0 → $n1 | $res |" | tee -a "$out" >&2
done
echo "fuzz: table in $out, work corpus in $work" >&2
cat "$out"
exit "$fail"
