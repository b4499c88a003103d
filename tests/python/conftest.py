"""Fixtures for the real-client suite: the Relais binary (built once), Relais processes
started on a free loopback port with a generated config, a Python fake OpenAI upstream,
the real SmolLM2 model on llama.cpp (scripts/local-llm/server.mjs), and Claude Code.

Environment:
  RELAIS_BIN            use this binary instead of building one with cargo
  RELAIS_CACHE          where scripts/local-llm/setup.sh put the model (default ~/.cache/relais)
  RELAIS_CLAUDE_DIR     where @anthropic-ai/claude-code is npm-installed
                        (default ~/.cache/relais/claude)
  RELAIS_CODEX_DIR      where @openai/codex is npm-installed (default ~/.cache/relais/codex)
  RELAIS_REQUIRE_ALL=1  fail instead of skipping when the local model, Claude Code or Codex is
                        missing
                        (scripts/test.sh sets it in CI)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_openai import FakeOpenAI  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CLIENT_KEY = "sk-relais-pytest-client-key-0123"
UPSTREAM_KEY = "sk-upstream-pytest-secret-4567"
MODEL = "relais-test"
REQUIRE_ALL = os.environ.get("RELAIS_REQUIRE_ALL") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "llm: needs the real SmolLM2 model (scripts/local-llm)")
    config.addinivalue_line("markers", "claude: needs Claude Code")
    config.addinivalue_line("markers", "codex: needs Codex CLI")


def missing(what: str) -> None:
    if REQUIRE_ALL:
        pytest.fail(f"{what} (RELAIS_REQUIRE_ALL=1)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def relais_bin() -> Path:
    env_bin = os.environ.get("RELAIS_BIN")
    if env_bin:
        p = Path(env_bin)
        assert p.is_file(), f"RELAIS_BIN={env_bin} does not exist"
        return p
    out = subprocess.run(
        ["cargo", "build", "--bin", "relais", "--message-format=json-render-diagnostics"],
        cwd=REPO, check=True, stdout=subprocess.PIPE, timeout=1200,
    ).stdout.decode()
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable") and \
                msg.get("target", {}).get("name") == "relais":
            return Path(msg["executable"])
    pytest.fail("cargo build did not report the relais executable")


class RelaisProcess:
    def __init__(self, proc: subprocess.Popen, base_url: str, log_path: Path):
        self.proc = proc
        self.base_url = base_url
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def relais_config(base_url: str, *, first_byte_timeout_s: float = 5, context_window: int | None = None,
                  max_output_tokens: int | None = None, quantization: str = "none",
                  provider_extra: str = "") -> str:
    endpoint_extra = ""
    if context_window:
        endpoint_extra += f"context_window = {context_window}\n"
    if max_output_tokens:
        endpoint_extra += f"max_output_tokens = {max_output_tokens}\n"
    return f"""
[server]
listen = "127.0.0.1:0"
shutdown_grace_s = 2

[routing]
total_timeout_s = 120
max_attempts = 1
explore_probability = 0

[[keys]]
name = "pytest"
roles = ["metrics"]
key = "{CLIENT_KEY}"

[providers.up]
api = "openai"
base_url = "{base_url}"
api_key_env = "RELAIS_PYTEST_UPSTREAM_KEY"
first_byte_timeout_s = {first_byte_timeout_s}
idle_timeout_s = 60
connect_timeout_s = 2
{provider_extra}

[[models]]
id = "{MODEL}"
display_name = "Relais test model"
# Claude Code and SDK examples name Claude models: route them all here.
aliases = ["claude-*"]

[[models.endpoints]]
provider = "up"
upstream_model = "upstream-model"
quantization = "{quantization}"
{endpoint_extra}
"""


@pytest.fixture
def start_relais(relais_bin: Path, tmp_path: Path):
    """Factory: start_relais(config_text) -> RelaisProcess, stopped at teardown."""
    started: list[RelaisProcess] = []

    def start(config_text: str) -> RelaisProcess:
        cfg = tmp_path / f"relais-{len(started)}.toml"
        cfg.write_text(config_text)
        log_path = tmp_path / f"relais-{len(started)}.log"
        log = open(log_path, "wb")
        env = dict(os.environ, RELAIS_PYTEST_UPSTREAM_KEY=UPSTREAM_KEY, NO_COLOR="1",
                   RELAIS_LOG="relais=debug")
        proc = subprocess.Popen(
            [str(relais_bin), "serve", "--config", str(cfg), "--listen", "127.0.0.1:0"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()
        deadline = time.monotonic() + 30
        addr = None
        while time.monotonic() < deadline:
            text = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace"))
            m = re.search(r"relais listening.*?addr=(127\.0\.0\.1:\d+)", text) or \
                re.search(r"addr=(127\.0\.0\.1:\d+).*relais listening", text)
            if m:
                addr = m.group(1)
                break
            if proc.poll() is not None:
                pytest.fail(f"relais exited with {proc.returncode}:\n{text}")
            time.sleep(0.05)
        if addr is None:
            proc.kill()
            pytest.fail(f"relais did not start within 30 s:\n{log_path.read_text(errors='replace')}")
        r = RelaisProcess(proc, f"http://{addr}", log_path)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


@pytest.fixture
def fake_openai():
    f = FakeOpenAI()
    yield f
    f.close()


@pytest.fixture
def relais_fake(start_relais, fake_openai) -> RelaisProcess:
    """Relais in front of the Python fake upstream."""
    return start_relais(relais_config(fake_openai.base_url))


@pytest.fixture
def client(relais_fake):
    import anthropic

    return anthropic.Anthropic(base_url=relais_fake.base_url, api_key=CLIENT_KEY, max_retries=0,
                               timeout=30)


def ledger_rows(tmp_path: Path, want: int, timeout: float = 5.0) -> list[dict]:
    """The usage ledger's rows (the SQLite file beside the test config, `relais.db`), once
    `want` of them are written (the writer batches for up to 200 ms); what it has after
    `timeout` otherwise."""
    import sqlite3

    db = tmp_path / "relais.db"
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        if db.exists():
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
            try:
                con.row_factory = sqlite3.Row
                rows = [dict(r) for r in con.execute(
                    "SELECT api, model_requested, model_served, stream, status, http_status, "
                    "attempts, input_tokens, output_tokens FROM requests ORDER BY time_ms")]
            except sqlite3.OperationalError:  # not created yet
                rows = []
            finally:
                con.close()
            if len(rows) >= want:
                return rows
        time.sleep(0.1)
    return rows


# ---------- the real model ----------

def start_local_llm(model: str) -> tuple[subprocess.Popen, str, Path]:
    """Starts scripts/local-llm/server.mjs on a free port (it picks one and prints it)."""
    log_path = Path(tempfile.mkstemp(prefix="local-llm-", suffix=".log")[1])
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        ["node", str(REPO / "scripts/local-llm/server.mjs"), "--model", model, "--port", "0"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"^listening on (http://127\.0\.0\.1:\d+)", log_path.read_text(errors="replace"),
                      re.MULTILINE)
        if m:
            return proc, m.group(1), log_path
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=10)
    pytest.fail(f"the local model server did not start; log:\n{log_path.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="session")
def local_llm_model() -> str:
    """The SmolLM2 GGUF, once scripts/local-llm/setup.sh has installed it and node-llama-cpp."""
    if shutil.which("node") is None:
        missing("no node on PATH (the local model server needs Node.js 20+)")
    found = subprocess.run([str(REPO / "scripts/local-llm/setup.sh"), "--no-install"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if found.returncode != 0:
        missing(f"the local model server is not installed: {found.stderr.decode()[-500:]}")
    return found.stdout.decode().strip()


@pytest.fixture(scope="session")
def llama_server(local_llm_model):
    """The real model: SmolLM2-135M on llama.cpp (node-llama-cpp's prebuilt binaries) behind
    scripts/local-llm/server.mjs; its OpenAI base URL."""
    proc, base, _log = start_local_llm(local_llm_model)
    yield f"{base}/v1"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def relais_llama(start_relais, llama_server) -> RelaisProcess:
    # As relais.local.toml: the default, non-streaming requests sent upstream as JSON.
    return start_relais(relais_config(llama_server, first_byte_timeout_s=60, context_window=2048,
                                      max_output_tokens=1024, quantization="int4"))


@pytest.fixture
def llama_client(relais_llama):
    import anthropic

    return anthropic.Anthropic(base_url=relais_llama.base_url, api_key=CLIENT_KEY, max_retries=0,
                               timeout=120)


# ---------- Claude Code ----------

@pytest.fixture(scope="session")
def claude_bin() -> Path:
    explicit = os.environ.get("RELAIS_CLAUDE_BIN")
    if explicit:
        return Path(explicit)
    d = Path(os.environ.get("RELAIS_CLAUDE_DIR", Path.home() / ".cache/relais/claude"))
    b = d / "node_modules" / ".bin" / "claude"
    if not b.exists():
        found = shutil.which("claude")
        if not found:
            missing(f"Claude Code not installed under {d} (run .ci/run or npm install there)")
        b = Path(found)
    r = subprocess.run([str(b), "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    if r.returncode != 0:
        missing(f"{b} --version failed: {r.stdout.decode()[-500:]}")
    return b


# ---------- Codex CLI ----------

@pytest.fixture(scope="session")
def codex_bin() -> Path:
    from codex_harness import CODEX_VERSION, default_codex_bin

    b = default_codex_bin()
    if not b.exists():
        missing(f"Codex CLI not installed at {b} (run scripts/install-test-deps.sh)")
    r = subprocess.run([str(b), "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    out = r.stdout.decode(errors="replace")
    if r.returncode != 0:
        missing(f"{b} --version failed: {out[-500:]}")
    if CODEX_VERSION not in out:
        missing(f"Codex {CODEX_VERSION} expected, {b} is {out.strip()}")
    return b
