"""Runs Codex CLI (`codex exec`) headless against a Responses API server: a throwaway
CODEX_HOME whose config.toml declares that server as the only model provider, approvals and
the sandbox off (so a shell tool call runs without a prompt), and everything that would reach
OpenAI, ChatGPT or GitHub on its own turned off (update check, analytics, feedback, plugins,
apps). No login: the key comes from the environment variable the provider names.

Run as a script, it captures one real Codex request into tests/fixtures/codex/:
  python tests/python/codex_harness.py [CODEX_BIN]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CODEX_VERSION = "0.169.1"  # scripts/install-test-deps.sh pins the same
KEY_ENV = "RELAIS_CODEX_TEST_KEY"


def default_codex_bin() -> Path:
    d = Path(os.environ.get("RELAIS_CODEX_DIR", Path.home() / ".cache/relais/codex"))
    return d / "node_modules" / ".bin" / "codex"


def write_codex_home(home: Path, base_url: str, model: str) -> None:
    """config.toml for `codex exec` against `base_url` (ending in /v1: Codex appends
    /responses). Unknown keys would be rejected by --strict-config, which run_codex passes,
    so a renamed key fails loudly instead of silently re-enabling network calls."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f"""
model = "{model}"
model_provider = "relais"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[model_providers.relais]
name = "Relais"
base_url = "{base_url}"
wire_api = "responses"
env_key = "{KEY_ENV}"
# One try: a failure shows at once instead of after Codex's backoff.
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 30000

[analytics]
enabled = false

[feedback]
enabled = false

[history]
persistence = "none"

[features]
plugins = false
apps = false
remote_plugin = false
in_app_updates = false
""")


@dataclass
class CodexRun:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def events(self) -> list[dict]:
        """`codex exec --json` prints one JSON event a line."""
        out = []
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def items(self, kind: str) -> list[dict]:
        return [e["item"] for e in self.events()
                if e.get("type") == "item.completed" and e.get("item", {}).get("type") == kind]

    def agent_text(self) -> str:
        return "\n".join(i.get("text", "") for i in self.items("agent_message"))

    def describe(self) -> str:
        return (f"codex exited {self.returncode} after {self.seconds:.1f} s\n"
                f"stdout: {self.stdout[-3000:]}\nstderr: {self.stderr[-3000:]}")


def run_codex(codex_bin: Path, home: Path, workdir: Path, prompt: str, key: str,
              timeout: float = 120) -> CodexRun:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update(CODEX_HOME=str(home), HOME=str(home), NO_COLOR="1", **{KEY_ENV: key})
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    r = subprocess.run(
        [str(codex_bin), "exec", "--json", "--strict-config", "--ephemeral",
         "--skip-git-repo-check", "--color", "never", prompt],
        env=env, cwd=str(workdir), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=timeout,
    )
    return CodexRun(r.returncode, r.stdout.decode(errors="replace"),
                    r.stderr.decode(errors="replace"), time.monotonic() - start)


# ---------- capturing a request for tests/fixtures/codex ----------

def scrub(value, replacements: dict[str, str]):
    """Machine- and run-specific strings (paths, ids, dates) replaced by fixed ones, so the
    fixture is stable and says nothing about the machine it was captured on."""
    if isinstance(value, dict):
        return {k: scrub(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, replacements) for v in value]
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        # Not \b: ids such as `fco_<uuid>` have a word character before the uuid.
        value = re.sub(r"(?<![0-9a-f])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?![0-9a-f])",
                       "00000000-0000-4000-8000-000000000000", value)
        value = re.sub(r"\b\d{4}-\d{2}-\d{2}\b", "2026-01-01", value)
        value = re.sub(r"\"turn_started_at_unix_ms\":\d+", "\"turn_started_at_unix_ms\":0", value)
        value = re.sub(r"Chunk ID: [0-9a-f]+", "Chunk ID: 000000", value)
        return value
    return value


def _capture_run(codex_bin: Path, model: str, turns: list, prompt: str) -> tuple[list, dict]:
    """Runs Codex once against the stand-in; its requests and the scrubbing map."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    from fake_responses import FakeResponses

    fake = FakeResponses(turns)
    try:
        with tempfile.TemporaryDirectory(prefix="codex-capture-") as tmp:
            home, work = Path(tmp) / "home", Path(tmp) / "proj"
            write_codex_home(home, fake.base_url, model)
            run = run_codex(codex_bin, home, work, prompt, "sk-relais-capture-key")
            if run.returncode != 0:
                raise SystemExit(run.describe())
            print(f"{model}: {len(fake.response_requests())} requests in {run.seconds:.1f} s")
            return fake.response_requests(), {
                str(work): "/home/dev/proj", str(home): "/home/dev/.codex",
                f"127.0.0.1:{fake.port}": "127.0.0.1:8080"}
    finally:
        fake.close()


def _write_body(path: Path, body: dict, replacements: dict[str, str]) -> None:
    body = scrub(body, replacements)
    # Codex writes this map in hash order: sorted, so a re-capture diffs cleanly.
    body["client_metadata"] = dict(sorted(body.get("client_metadata", {}).items()))
    path.write_text(json.dumps(body, indent=2) + "\n")


def capture(codex_bin: Path) -> None:
    """request.json and request-tool-output.json: a model Codex has no metadata for (what
    a Relais model id is to Codex), turn 1 and turn 2 after a shell call. headers.json: turn
    1's headers. request-gpt-5.5.json: a model Codex knows, which changes the tools
    (`custom` apply_patch, `tool_search`) and adds `reasoning.effort` and `text`."""
    from fake_responses import CallTurn, TextTurn

    out = REPO / "tests" / "fixtures" / "codex"
    out.mkdir(parents=True, exist_ok=True)
    reqs, repl = _capture_run(codex_bin, "relais-test", [
        CallTurn("exec_command", json.dumps({"cmd": "echo relais-tool-ok"}), "call_capture_1"),
        TextTurn("The command printed relais-tool-ok."),
    ], "Run `echo relais-tool-ok` and tell me what it printed.")
    _write_body(out / "request.json", reqs[0]["body"], repl)
    _write_body(out / "request-tool-output.json", reqs[-1]["body"], repl)
    headers = scrub({k: v for k, v in reqs[0]["headers"].items() if k != "content-length"}, repl)
    headers["authorization"] = "Bearer <env_key value>"
    (out / "headers.json").write_text(json.dumps(headers, indent=2) + "\n")
    reqs, repl = _capture_run(codex_bin, "gpt-5.5", [TextTurn("Hi.")], "say hi")
    _write_body(out / "request-gpt-5.5.json", reqs[0]["body"], repl)
    print(f"written to {out}")


if __name__ == "__main__":
    capture(Path(sys.argv[1]) if len(sys.argv) > 1 else default_codex_bin())
