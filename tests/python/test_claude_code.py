"""Claude Code (the real CLI, headless) against Relais, with a Python fake OpenAI upstream
behind it: Claude Code's ~20k-token prompt is far beyond SmolLM2's 2048-token context."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import CLIENT_KEY, MODEL, UPSTREAM_KEY
from fake_openai import DEFAULT_TEXT

pytestmark = pytest.mark.claude


def run_claude(claude_bin, base_url: str, home, *extra: str) -> dict:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_", "CLAUDE_"))
    }
    env.update(
        HOME=str(home),
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY=CLIENT_KEY,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
    )
    r = subprocess.run(
        [str(claude_bin), "-p", "say hi", "--output-format", "json", *extra],
        env=env, cwd=str(home), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=120,
    )
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == 0, f"claude exited {r.returncode}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    try:
        return json.loads(out)
    except ValueError:
        pytest.fail(f"claude did not print JSON:\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}")


def check_upstream(fake_openai) -> None:
    reqs = fake_openai.chat_requests()
    assert reqs, "Claude Code's request never reached the upstream"
    main = max(reqs, key=lambda r: len(json.dumps(r["body"])))
    body = main["body"]
    assert body["model"] == "upstream-model"
    assert body["stream"] is True
    assert len(body.get("tools") or []) >= 5, "Claude Code's tools are translated"
    assert body["max_tokens"] > 0
    assert body["messages"][0]["role"] == "system"
    for r in reqs:
        assert r["headers"].get("authorization") == f"Bearer {UPSTREAM_KEY}"
        assert CLIENT_KEY not in json.dumps(r["headers"])
        for k in ("thinking", "context_management", "output_config"):
            assert k not in r["body"], f"Anthropic-only field {k} sent to an OpenAI upstream"


def test_claude_code_with_configured_model(claude_bin, relais_fake, fake_openai, tmp_path):
    result = run_claude(claude_bin, relais_fake.base_url, tmp_path, "--model", MODEL)
    assert result.get("is_error") is False, result
    assert result.get("subtype") == "success", result
    assert DEFAULT_TEXT in result.get("result", ""), result
    check_upstream(fake_openai)


def test_claude_code_default_model_through_alias(claude_bin, relais_fake, fake_openai, tmp_path):
    # No --model: Claude Code asks for its default Claude model ids; the `claude-*` alias
    # routes them to the configured model.
    result = run_claude(claude_bin, relais_fake.base_url, tmp_path)
    assert result.get("is_error") is False, result
    assert DEFAULT_TEXT in result.get("result", ""), result
    check_upstream(fake_openai)
