"""Codex CLI (the real one, `codex exec` headless) against Relais's `/v1/responses` door, with
the scripted Python fake OpenAI chat-completions upstream behind it: Relais turns Codex's
Responses requests into chat completions and the upstream's answers back into Responses
events, and Codex runs its shell tool in between.

The last tests run Codex against a stand-in Responses server (fake_responses.py) instead of
Relais: they pin down what Codex itself sends and requires (the contract the door is built
on), so that a Codex upgrade that changes it fails here, next to the fixture to refresh
(`python tests/python/codex_harness.py` re-captures tests/fixtures/codex/).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from codex_harness import run_codex, write_codex_home
from conftest import CLIENT_KEY, MODEL, UPSTREAM_KEY, ledger_rows, relais_config
from fake_openai import DEFAULT_TEXT, Reply, chat_response, tool_stream
from fake_responses import CallTurn, FakeResponses, TextTurn

pytestmark = pytest.mark.codex

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "codex"
SHELL_TOOL = "exec_command"  # Codex 0.169's shell tool: {"cmd": "<shell command>", ...}
# Fields of a Responses request that mean nothing to a chat-completions upstream.
RESPONSES_ONLY = ("input", "instructions", "store", "include", "prompt_cache_key",
                  "client_metadata", "reasoning", "text", "previous_response_id",
                  "max_output_tokens", "truncation")


def codex_through(codex_bin, relais, tmp_path: Path, prompt: str, key: str = CLIENT_KEY,
                  model: str = MODEL):
    home, work = tmp_path / "codex-home", tmp_path / "proj"
    write_codex_home(home, relais.base_url + "/v1", model)
    return run_codex(codex_bin, home, work, prompt, key), work


def metrics_text(relais) -> str:
    req = urllib.request.Request(relais.base_url + "/metrics",
                                 headers={"authorization": f"Bearer {CLIENT_KEY}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def check_translated_request(body: dict, captured: dict) -> None:
    """What every chat request Relais makes of a Codex request looks like upstream."""
    assert body["model"] == "upstream-model"
    assert body["stream"] is True
    for k in RESPONSES_ONLY:
        assert k not in body, f"Responses-only field {k} sent to a chat upstream"
    msgs = body["messages"]
    # Codex's developer messages (its base prompt, permissions) become system messages:
    # many OpenAI-compatible servers reject the `developer` role.
    assert msgs[0]["role"] == "system"
    assert "Codex" in json.dumps(msgs[0]["content"])
    assert all(m["role"] in ("system", "user", "assistant", "tool") for m in msgs)
    tools = body.get("tools") or []
    assert tools and all(t["type"] == "function" for t in tools), "only function tools go up"
    names = [t["function"]["name"] for t in tools]
    assert len(names) == len(set(names)), names
    assert SHELL_TOOL in names
    shell = next(t for t in tools if t["function"]["name"] == SHELL_TOOL)
    codex_shell = next(t for t in captured["tools"] if t.get("name") == SHELL_TOOL)
    assert shell["function"]["parameters"] == codex_shell["parameters"]
    # `namespace` tools are flattened into their members (own name, or ns__name on a clash).
    for ns in (t for t in captured["tools"] if t["type"] == "namespace"):
        for member in ns["tools"]:
            assert member["name"] in names or f"{ns['name']}__{member['name']}" in names, \
                (ns["name"], member["name"], names)
    # Hosted tools (`web_search`) cannot run on a chat upstream: dropped, not sent.
    assert "web_search" not in json.dumps(tools)


@pytest.fixture(scope="module")
def captured() -> dict:
    return json.loads((FIXTURES / "request.json").read_text())


def test_codex_text_turn_through_relais(codex_bin, relais_fake, fake_openai, tmp_path, captured):
    run, _ = codex_through(codex_bin, relais_fake, tmp_path, "say hi")
    assert run.returncode == 0, run.describe()
    assert run.agent_text() == DEFAULT_TEXT, run.describe()
    (turn,) = [e for e in run.events() if e.get("type") == "turn.completed"]
    assert turn["usage"]["input_tokens"] > 0 and turn["usage"]["output_tokens"] > 0, turn

    (req,) = fake_openai.chat_requests()
    assert req["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in json.dumps(req["headers"])
    check_translated_request(req["body"], captured)
    assert req["body"]["messages"][-1] == {"role": "user", "content": "say hi"} or \
        "say hi" in json.dumps(req["body"]["messages"][-1]["content"])

    (row,) = ledger_rows(tmp_path, 1)
    assert row["api"] == "responses", row
    assert (row["model_requested"], row["status"], row["http_status"]) == (MODEL, "ok", 200), row
    assert bool(row["stream"]) is True
    assert 'relais_requests_total{api="responses"' in metrics_text(relais_fake)


def test_codex_runs_its_shell_tool_through_relais(codex_bin, relais_fake, fake_openai, tmp_path,
                                                  captured):
    args = json.dumps({"cmd": "echo relais-tool-ok | tee marker.txt"})
    fake_openai.push(Reply(sse=tool_stream(SHELL_TOOL, args, call_id="call_relais_1")))
    final = "The command printed relais-tool-ok."
    fake_openai.push(Reply(body=chat_response(final)))

    run, work = codex_through(codex_bin, relais_fake, tmp_path,
                              "Run `echo relais-tool-ok` and tell me what it printed.")
    assert run.returncode == 0, run.describe()
    (cmd,) = run.items("command_execution")
    assert cmd["exit_code"] == 0 and "relais-tool-ok" in cmd["aggregated_output"], cmd
    assert (work / "marker.txt").read_text().strip() == "relais-tool-ok", "the command ran"
    assert run.agent_text() == final, run.describe()

    first, second = fake_openai.chat_requests()
    check_translated_request(first["body"], captured)
    check_translated_request(second["body"], captured)
    msgs = second["body"]["messages"]
    # The call goes back as the assistant's tool_calls, its output as a `tool` message with
    # the same id, and nothing after it.
    calls = [c for m in msgs if m["role"] == "assistant" for c in (m.get("tool_calls") or [])]
    assert [(c["id"], c["function"]["name"]) for c in calls] == [("call_relais_1", SHELL_TOOL)]
    assert json.loads(calls[0]["function"]["arguments"]) == json.loads(args)
    assert msgs[-1]["role"] == "tool", msgs[-1]
    assert msgs[-1]["tool_call_id"] == "call_relais_1"
    assert "relais-tool-ok" in json.dumps(msgs[-1]["content"])
    assert msgs[-2]["role"] == "assistant" and msgs[-2]["tool_calls"][0]["id"] == "call_relais_1"
    # The rest of the conversation is resent whole (Codex keeps the state, not Relais).
    assert msgs[:len(first["body"]["messages"])] == first["body"]["messages"]

    rows = ledger_rows(tmp_path, 2)
    assert [r["api"] for r in rows] == ["responses", "responses"], rows
    assert all(r["status"] == "ok" for r in rows), rows


def test_codex_with_a_model_it_knows_through_an_alias(codex_bin, start_relais, fake_openai,
                                                      tmp_path):
    """Naming a model Codex has metadata for (here gpt-5.5, routed by a `gpt-*` alias)
    changes its request: a freeform `custom` apply_patch tool, a client-run `tool_search`,
    `reasoning.effort` and `text.verbosity` (tests/fixtures/codex/request-gpt-5.5.json)."""
    cfg = relais_config(fake_openai.base_url).replace('aliases = ["claude-*"]',
                                                       'aliases = ["claude-*", "gpt-*"]')
    relais = start_relais(cfg)
    run, _ = codex_through(codex_bin, relais, tmp_path, "say hi", model="gpt-5.5")
    assert run.returncode == 0, run.describe()
    assert run.agent_text() == DEFAULT_TEXT, run.describe()
    (req,) = fake_openai.chat_requests()
    body = req["body"]
    assert body["model"] == "upstream-model"
    for k in RESPONSES_ONLY:
        assert k not in body, f"Responses-only field {k} sent to a chat upstream"
    tools = body.get("tools") or []
    assert tools and all(t["type"] == "function" for t in tools), tools
    names = [t["function"]["name"] for t in tools]
    assert SHELL_TOOL in names
    assert "tool_search" not in names and "web_search" not in json.dumps(tools)


def test_codex_sees_an_upstream_failure_as_an_error(codex_bin, relais_fake, fake_openai, tmp_path):
    fake_openai.push(Reply(status=500, body={"error": {"message": "boom"}}))
    run, _ = codex_through(codex_bin, relais_fake, tmp_path, "say hi")
    assert run.returncode != 0, run.describe()
    failed = [e for e in run.events() if e.get("type") == "turn.failed"]
    assert failed, run.describe()
    assert run.agent_text() == ""
    assert len(fake_openai.chat_requests()) == 1


def test_codex_with_a_wrong_key_is_refused(codex_bin, relais_fake, fake_openai, tmp_path):
    run, _ = codex_through(codex_bin, relais_fake, tmp_path, "say hi", key="sk-wrong-key-0000")
    assert run.returncode != 0, run.describe()
    assert "401" in run.stdout + run.stderr, run.describe()
    assert fake_openai.chat_requests() == []


# ---------- Codex's side of the contract (a stand-in Responses server, no Relais) ----------

@pytest.fixture
def stand_in():
    servers: list[FakeResponses] = []

    def make(turns, transform=None) -> FakeResponses:
        s = FakeResponses(turns, transform=transform)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def codex_against(codex_bin, server: FakeResponses, tmp_path: Path, prompt: str):
    home, work = tmp_path / "codex-home", tmp_path / "proj"
    write_codex_home(home, server.base_url, MODEL)
    return run_codex(codex_bin, home, work, prompt, "sk-stand-in-key")


def test_codex_request_shape_matches_the_fixture(codex_bin, stand_in, tmp_path, captured):
    """What the door translates: Codex's fields, tool types, shell tool and headers, and how
    it sends a tool's output back. A Codex upgrade that changes any of it fails here."""
    server = stand_in([CallTurn(SHELL_TOOL, json.dumps({"cmd": "echo contract-ok"}), "call_c1"),
                       TextTurn("It printed contract-ok.")])
    run = codex_against(codex_bin, server, tmp_path, "Run `echo contract-ok`.")
    assert run.returncode == 0, run.describe()
    assert run.agent_text() == "It printed contract-ok."
    first, second = server.response_requests()
    body = first["body"]
    assert sorted(body) == sorted(captured), "top-level fields changed: re-capture the fixture"
    assert (body["stream"], body["store"], body["tool_choice"]) == (True, False, "auto")

    def tool_shape(tools):
        return sorted((t["type"], t.get("name")) for t in tools)

    assert tool_shape(body["tools"]) == tool_shape(captured["tools"])
    assert {"namespace", "web_search", "function"} <= {t["type"] for t in body["tools"]}
    assert [i.get("role") for i in body["input"]] == [i.get("role") for i in captured["input"]]
    h = first["headers"]
    assert h["authorization"] == "Bearer sk-stand-in-key"
    assert h["originator"] == "codex_exec" and h["accept"] == "text/event-stream"
    assert h["session-id"] and h["session-id"] == body["prompt_cache_key"]
    # The second request resends everything, then the call and its output.
    call, output = second["body"]["input"][-2:]
    assert (call["type"], call["call_id"], call["name"]) == ("function_call", "call_c1", SHELL_TOOL)
    assert (output["type"], output["call_id"]) == ("function_call_output", "call_c1")
    assert isinstance(output["output"], str) and "contract-ok" in output["output"]


def test_codex_request_shape_for_a_known_model(codex_bin, stand_in, tmp_path):
    captured = json.loads((FIXTURES / "request-gpt-5.5.json").read_text())
    server = stand_in([TextTurn("Hi.")])
    home, work = tmp_path / "codex-home", tmp_path / "proj"
    write_codex_home(home, server.base_url, "gpt-5.5")
    run = run_codex(codex_bin, home, work, "say hi", "sk-stand-in-key")
    assert run.returncode == 0, run.describe()
    (req,) = server.response_requests()
    body = req["body"]
    assert sorted(body) == sorted(captured), "top-level fields changed: re-capture the fixture"
    assert sorted((t["type"], t.get("name")) for t in body["tools"]) == \
        sorted((t["type"], t.get("name")) for t in captured["tools"])
    assert {"custom", "tool_search", "web_search"} <= {t["type"] for t in body["tools"]}
    assert body["reasoning"].get("effort") and body["text"].get("verbosity")


def _drop(*types):
    return lambda events: [e for e in events if e["type"] not in types]


def _completed_without_id(events):
    for e in events:
        if e["type"] == "response.completed":
            del e["response"]["id"]
    return events


@pytest.mark.parametrize("transform, ok, text", [
    # Codex takes an item's content from output_item.done, not from the deltas.
    (_drop("response.output_text.delta", "response.content_part.added",
           "response.content_part.done", "response.output_text.done",
           "response.created", "response.in_progress"), True, "Hello."),
    (_drop("response.output_item.done"), True, ""),
    # The turn ends only on response.completed, which must carry the response's id.
    (_drop("response.completed"), False, "Hello."),
    (_completed_without_id, False, "Hello."),
], ids=["done-item-suffices", "no-done-item-no-text", "no-completed-fails",
        "completed-without-id-fails"])
def test_codex_stream_requirements(codex_bin, stand_in, tmp_path, transform, ok, text):
    server = stand_in([TextTurn("Hello.")], transform=transform)
    run = codex_against(codex_bin, server, tmp_path, "say hi")
    assert (run.returncode == 0) is ok, run.describe()
    assert run.agent_text() == text, run.describe()
