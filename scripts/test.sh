#!/usr/bin/env bash
# The project's one test command (CI runs it through .ci/run):
#   1. cargo fmt --check, cargo clippy -D warnings
#   2. Rust unit and in-process integration tests (fake upstreams), with nextest
#   3. the real-client suite in tests/python: the official `anthropic` SDK against a fake
#      upstream and against the real SmolLM2 model (scripts/local-llm), the `openai` SDK (chat
#      completions and Responses), and Claude Code and Codex CLI headless.
#   4. a few seconds of the benchmark harness (bench/run --smoke), and ~15 s of the hedging
#      tail benchmark (bench/run --tail --smoke).
# It first installs what the tests need (scripts/install-test-deps.sh: the local model server
# and model, the SDK venv, Claude Code, Codex CLI; cached, so only the first run is slow). Set
# RELAIS_SKIP_INSTALL=1 to skip that; pieces whose tools are then missing are skipped,
# unless RELAIS_REQUIRE_ALL=1 (set by .ci/run) makes them fail.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${RELAIS_CACHE:-$HOME/.cache/relais}"
if [ "${RELAIS_SKIP_INSTALL:-0}" != 1 ]; then
  scripts/install-test-deps.sh
fi
export RELAIS_CLAUDE_DIR="${RELAIS_CLAUDE_DIR:-$CACHE/claude}"
export RELAIS_CODEX_DIR="${RELAIS_CODEX_DIR:-$CACHE/codex}"
PY="${RELAIS_PY_VENV:-$CACHE/py-venv}/bin/python"
failed=()

# Runs one stage; a failing stage is recorded and the next ones still run.
stage() {
  local name="$1"
  shift
  echo "== $name" >&2
  if ! "$@"; then
    echo "== FAILED: $name" >&2
    failed+=("$name")
  fi
}

rust_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    local rc=0
    cargo nextest run --no-fail-fast || rc=$?
    cargo test --doc || rc=$?
    return "$rc"
  fi
  cargo test --no-fail-fast
}

client_suite() {
  if [ ! -x "$PY" ] || ! "$PY" -c 'import anthropic, pytest' 2>/dev/null; then
    echo "no Python venv with anthropic and pytest at $PY (run .ci/run to install it)" >&2
    return 1
  fi
  cargo build --bin relais || return 1
  local target_dir rc=0
  target_dir="$(cargo metadata --format-version 1 --no-deps |
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  RELAIS_BIN="$target_dir/debug/relais" "$PY" -m pytest tests/python -q -rs -p no:cacheprovider || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
  fi
  return "$rc"
}

stage "cargo fmt --all -- --check" cargo fmt --all -- --check
stage "cargo clippy --all-targets -- -D warnings" cargo clippy --all-targets -- -D warnings
stage "Rust unit and integration tests" rust_tests
stage "client suite (pytest tests/python)" client_suite
# A few seconds of the benchmark harness (issue: it must keep working); numbers are not
# judged here, only that every request through Relais and straight to the upstream succeeds.
bench_smoke() {
  cargo build --bin relais || return 1
  local target_dir
  target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  local rc=0
  bench/run --smoke --relais-bin "$target_dir/debug/relais" || rc=$?
  # The tail benchmark (hedged requests against an occasionally slow upstream): every
  # request answered and the losing attempts cancelled; its tools are built above.
  bench/run --tail --smoke --no-build --relais-bin "$target_dir/debug/relais" || rc=$?
  return "$rc"
}
stage "benchmark harness smoke (bench/run --smoke, --tail --smoke)" bench_smoke

if [ "${#failed[@]}" -gt 0 ]; then
  printf 'FAILED stages:\n' >&2
  printf '  %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "all stages passed" >&2
