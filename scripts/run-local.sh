#!/usr/bin/env bash
# Runs Relais on the embedded default: a local llama.cpp server with SmolLM2-135M (CPU,
# no keys, no accounts) behind Relais on 127.0.0.1:8080. First run builds llama.cpp
# (5-9 minutes on 2 cores, cached afterwards). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
LLM_PORT="${RELAIS_LLM_PORT:-8000}"
MODEL="$(scripts/setup-llm.sh)"
VENV="${RELAIS_LLM_VENV:-$HOME/.cache/relais/llm-venv}"
cargo build --release --quiet
"$VENV/bin/python" -m llama_cpp.server --model "$MODEL" --host 127.0.0.1 --port "$LLM_PORT" \
  --n_ctx 2048 --chat_format chatml-function-calling --interrupt_requests False --n_threads 1 \
  >/tmp/relais-llm.log 2>&1 &
LLM_PID=$!
trap 'kill $LLM_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$LLM_PORT/v1/models', timeout=1)" 2>/dev/null; then break; fi
  if ! kill -0 $LLM_PID 2>/dev/null; then echo "llama.cpp server died; see /tmp/relais-llm.log" >&2; exit 1; fi
  sleep 0.5
done
echo "local model ready on 127.0.0.1:$LLM_PORT; starting Relais" >&2
echo "try: curl -s http://127.0.0.1:8080/v1/messages -H 'x-api-key: sk-relais-dev' -H 'content-type: application/json' -d '{\"model\":\"smollm2\",\"max_tokens\":64,\"messages\":[{\"role\":\"user\",\"content\":\"Say hello\"}]}'" >&2
target/release/relais serve --config relais.local.toml "$@"
