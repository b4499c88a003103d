#!/usr/bin/env bash
# Runs Relais on the embedded default: SmolLM2-135M on CPU behind Relais on 127.0.0.1:8080,
# no keys, no accounts. The model is served by scripts/local-llm/server.mjs, a small
# OpenAI-compatible server over node-llama-cpp's prebuilt llama.cpp (npm; no compiler).
# The first run installs it (about 20 s, while Relais compiles) and builds Relais with the
# `quick` profile (unoptimized, no LTO: see Cargo.toml; RELAIS_PROFILE=release for the fat-LTO
# build, 6.5 minutes on 2 cores); later runs start in seconds. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
LLM_PORT="${RELAIS_LLM_PORT:-8000}"
LOG="${TMPDIR:-/tmp}/relais-llm.log"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
PROFILE="${RELAIS_PROFILE:-quick}"

# The model server installs (network and disk), starts and warms up while Relais compiles (CPU).
echo "installing and starting the local model server in the background (log: $LOG)" >&2
(MODEL="$(scripts/local-llm/setup.sh)" &&
  exec node scripts/local-llm/server.mjs --model "$MODEL" --port "$LLM_PORT") >"$LOG" 2>&1 &
LLM_PID=$!
trap 'kill $LLM_PID 2>/dev/null || true' EXIT
cargo build --profile "$PROFILE" --quiet --bin relais
for _ in $(seq 1 600); do
  if grep -q "^listening on" "$LOG" 2>/dev/null; then break; fi
  if ! kill -0 $LLM_PID 2>/dev/null; then echo "the local model server failed; see $LOG:" >&2; tail -n 20 "$LOG" >&2; exit 1; fi
  sleep 0.25
done
grep -q "^listening on" "$LOG" || { echo "the local model server did not start; see $LOG" >&2; exit 1; }
echo "local model ready on 127.0.0.1:$LLM_PORT; starting Relais" >&2
echo "try: curl -s http://127.0.0.1:8080/v1/messages -H 'x-api-key: sk-relais-dev' -H 'content-type: application/json' -d '{\"model\":\"smollm2\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"Say hello\"}]}'" >&2
"$TARGET_DIR/$PROFILE/relais" serve --config relais.local.toml "$@"
