"""The official `openai` Python SDK's Responses API (`client.responses`) against Relais's
`/v1/responses` door, over the Python fake chat-completions upstream: Relais turns each
Responses request into a chat completion upstream and renders the answer as a Response
object, or as Responses stream events."""

from __future__ import annotations

import json
import re

import openai
import pytest

from conftest import CLIENT_KEY, MODEL, UPSTREAM_KEY, ledger_rows
from fake_openai import DEFAULT_TEXT, Reply, chat_response

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False},
    "strict": False,
}
FORCE_WEATHER = {"type": "function", "name": "get_weather"}
# The fake upstream's scripted text comes in 5 pieces, one completion token each.
FAKE_USAGE = (13, 5)
# A non-streaming request goes upstream non-streaming (docs/hedging.md): the fake's JSON
# answer reports 6 completion tokens.
JSON_USAGE = (13, 6)


def sdk(relais, key: str = CLIENT_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=relais.base_url + "/v1", api_key=key, max_retries=0, timeout=30)


@pytest.fixture
def oai(relais_fake):
    return sdk(relais_fake)


def text_of(content) -> str:
    """A chat message's text, whether a string or a list of text parts."""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [])


def test_responses_create(oai, fake_openai, tmp_path):
    raw = oai.responses.with_raw_response.create(
        model=MODEL, instructions="Be brief.", input="Say hi", max_output_tokens=50,
        temperature=0.5)
    r = raw.parse()
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "completed" and r.error is None and r.incomplete_details is None
    assert r.model == MODEL
    assert r.output_text == DEFAULT_TEXT
    (msg,) = r.output
    assert (msg.type, msg.role, msg.status) == ("message", "assistant", "completed")
    assert msg.id and msg.content[0].type == "output_text"
    assert (r.usage.input_tokens, r.usage.output_tokens) == JSON_USAGE
    assert r.usage.total_tokens == sum(JSON_USAGE)
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    # The request's settings are echoed.
    assert (r.instructions, r.max_output_tokens, r.temperature) == ("Be brief.", 50, 0.5)
    assert r.previous_response_id is None
    # Routing headers, as on the other doors.
    assert raw.headers["x-relais-provider"] == "up"
    assert raw.headers["x-relais-model"] == MODEL
    assert raw.headers.get("request-id")

    (req,) = fake_openai.chat_requests()
    assert req["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    body = req["body"]
    assert body["model"] == "upstream-model"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert text_of(body["messages"][0]["content"]) == "Be brief."
    assert text_of(body["messages"][1]["content"]) == "Say hi"
    assert body["max_completion_tokens"] == 50 and body["temperature"] == 0.5
    for k in ("input", "instructions", "max_output_tokens", "store"):
        assert k not in body, k

    (row,) = ledger_rows(tmp_path, 1)
    assert (row["api"], row["status"], row["http_status"]) == ("responses", "ok", 200), row
    assert (row["input_tokens"], row["output_tokens"]) == JSON_USAGE


def test_responses_input_items_and_developer_role(oai, fake_openai):
    r = oai.responses.create(model=MODEL, input=[
        {"type": "message", "role": "developer",
         "content": [{"type": "input_text", "text": "Answer in French."}]},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Say hi"},
                     {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=",
                      "detail": "auto"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Salut !", "annotations": []}]},
        {"role": "user", "content": "Again"},
    ])
    assert r.output_text == DEFAULT_TEXT
    msgs = fake_openai.chat_requests()[0]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert text_of(msgs[0]["content"]) == "Answer in French."
    parts = msgs[1]["content"]
    assert {"type": "text", "text": "Say hi"} in parts
    assert any(p["type"] == "image_url" and p["image_url"]["url"].startswith("data:image/png")
               for p in parts), parts
    assert text_of(msgs[2]["content"]) == "Salut !"
    assert text_of(msgs[3]["content"]) == "Again"


EVENT_ORDER = re.compile(
    r"response\.created response\.in_progress response\.output_item\.added "
    r"response\.content_part\.added (response\.output_text\.delta )+response\.output_text\.done "
    r"response\.content_part\.done response\.output_item\.done response\.completed")


def test_responses_stream(oai, fake_openai, tmp_path):
    events = list(oai.responses.create(model=MODEL, input="Say hi", stream=True,
                                       extra_body={"include_metadata": True}))
    types = [e.type for e in events]
    assert EVENT_ORDER.fullmatch(" ".join(types)), types
    seq = [e.sequence_number for e in events]
    assert seq == list(range(seq[0], seq[0] + len(seq))), seq
    created, final = events[0].response, events[-1].response
    assert created.status == "in_progress" and created.id == final.id
    assert final.status == "completed" and final.model == MODEL
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") \
        == DEFAULT_TEXT
    assert final.output_text == DEFAULT_TEXT
    assert (final.usage.input_tokens, final.usage.output_tokens) == FAKE_USAGE
    # Every item event names the same item and index.
    item_id = events[2].item.id
    for e in events[2:-1]:
        assert e.output_index == 0, e
        assert getattr(e, "item_id", None) in (None, item_id), e
        if hasattr(e, "content_index"):
            assert e.content_index == 0, e
    assert final.output[0].id == item_id
    # The routing trace rides on the final response.
    trace = final.model_extra["relais"]
    assert trace["attempts"][0]["outcome"] == "ok"
    (req,) = fake_openai.chat_requests()
    assert req["body"]["stream"] is True
    assert req["body"].get("stream_options", {}).get("include_usage") is True
    assert "include_metadata" not in req["body"]
    (row,) = ledger_rows(tmp_path, 1)
    assert (row["api"], bool(row["stream"]), row["status"]) == ("responses", True, "ok"), row


def test_responses_stream_helper_accumulates(oai):
    # The SDK's own accumulator checks that item ids, output and content indexes line up.
    with oai.responses.stream(model=MODEL, input="Say hi") as s:
        texts = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert "".join(texts) == DEFAULT_TEXT
    assert final.output_text == DEFAULT_TEXT and final.status == "completed"


def _call_then_output(r, output: str) -> list:
    (call,) = [o for o in r.output if o.type == "function_call"]
    return [{"role": "user", "content": "Weather in Paris?"},
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": output}]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_responses_function_tool_round_trip(oai, fake_openai, stream):
    kw = dict(model=MODEL, input="Weather in Paris?", tools=[WEATHER], tool_choice=FORCE_WEATHER,
              parallel_tool_calls=False)
    if stream:
        events = list(oai.responses.create(stream=True, **kw))
        types = [e.type for e in events]
        assert "response.function_call_arguments.delta" in types, types
        assert "response.function_call_arguments.done" in types, types
        assert types[-1] == "response.completed", types
        r = events[-1].response
    else:
        r = oai.responses.create(**kw)
    assert r.status == "completed"
    (call,) = r.output
    assert (call.type, call.name, call.status) == ("function_call", "get_weather", "completed")
    assert call.call_id == "call_fake_1"
    assert json.loads(call.arguments) == {"city": "Paris"}
    first = fake_openai.chat_requests()[0]["body"]
    (tool,) = first["tools"]
    assert tool["type"] == "function", tool
    assert (tool["function"]["name"], tool["function"]["parameters"]) == \
        ("get_weather", WEATHER["parameters"]), tool
    assert first["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert first["parallel_tool_calls"] is False

    r2 = oai.responses.create(model=MODEL, tools=[WEATHER],
                              input=_call_then_output(r, "18 C and sunny"))
    assert r2.output_text == DEFAULT_TEXT
    msgs = fake_openai.chat_requests()[1]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool"]
    (tc,) = msgs[1]["tool_calls"]
    assert (tc["id"], tc["type"], tc["function"]["name"]) == ("call_fake_1", "function",
                                                              "get_weather")
    assert json.loads(tc["function"]["arguments"]) == {"city": "Paris"}
    assert msgs[2]["tool_call_id"] == "call_fake_1"
    assert text_of(msgs[2]["content"]) == "18 C and sunny"


def test_responses_namespace_tools_are_flattened_and_mapped_back(oai, fake_openai):
    """Codex groups MCP tools in `namespace` tools; upstream they are plain functions, and a
    call comes back as a function_call naming its namespace."""
    ns = {"type": "namespace", "name": "mcp__calendar__", "description": "Calendar tools.",
          "tools": [{"type": "function", "name": "search_events", "description": "Search.",
                     "strict": False,
                     "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]}
    fake_openai.push(Reply(body=chat_response(None, tool_calls=[
        {"id": "call_ns_1", "type": "function",
         "function": {"name": "search_events", "arguments": json.dumps({"q": "standup"})}}])))
    r = oai.responses.create(model=MODEL, input="Find the standup", tools=[ns, WEATHER])
    (call,) = r.output
    assert (call.type, call.name, call.call_id) == ("function_call", "search_events", "call_ns_1")
    assert call.model_extra.get("namespace") == "mcp__calendar__"
    up = fake_openai.chat_requests()[0]["body"]["tools"]
    assert sorted(t["function"]["name"] for t in up) == ["get_weather", "search_events"]
    assert all(t["type"] == "function" for t in up)

    oai.responses.create(model=MODEL, tools=[ns, WEATHER], input=[
        {"role": "user", "content": "Find the standup"},
        {"type": "function_call", "call_id": "call_ns_1", "name": "search_events",
         "namespace": "mcp__calendar__", "arguments": json.dumps({"q": "standup"})},
        {"type": "function_call_output", "call_id": "call_ns_1", "output": "[]"}])
    msgs = fake_openai.chat_requests()[1]["body"]["messages"]
    assert msgs[1]["tool_calls"][0]["function"]["name"] == "search_events"
    assert msgs[2] == {"role": "tool", "tool_call_id": "call_ns_1", "content": "[]"} or \
        (msgs[2]["tool_call_id"], text_of(msgs[2]["content"])) == ("call_ns_1", "[]")


def test_responses_hosted_tools_are_dropped_and_said_so(oai, fake_openai):
    raw = oai.responses.with_raw_response.create(
        model=MODEL, input="Say hi", tools=[WEATHER, {"type": "web_search"}])
    assert raw.parse().output_text == DEFAULT_TEXT
    assert "web_search" in raw.headers["x-relais-dropped-tools"]
    up = fake_openai.chat_requests()[0]["body"]["tools"]
    assert [t["function"]["name"] for t in up] == ["get_weather"]


def _length_cut(text: str) -> dict:
    c = chat_response(text)
    c["choices"][0]["finish_reason"] = "length"
    return c


def test_responses_max_output_tokens_hit(oai, fake_openai):
    fake_openai.push(Reply(body=_length_cut("Once upon a")))
    r = oai.responses.create(model=MODEL, input="Tell a long story", max_output_tokens=3)
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "Once upon a"
    assert fake_openai.chat_requests()[0]["body"]["max_completion_tokens"] == 3

    fake_openai.push(Reply(body=_length_cut("Once upon a")))
    events = list(oai.responses.create(model=MODEL, input="Tell a long story",
                                       max_output_tokens=3, stream=True))
    assert events[-1].type == "response.incomplete", [e.type for e in events]
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert "response.completed" not in [e.type for e in events]


def test_responses_previous_response_id_is_refused(oai, fake_openai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.responses.create(model=MODEL, input="And then?", previous_response_id="resp_abc123")
    assert e.value.status_code == 400
    body = e.value.body
    assert body["type"] == "invalid_request_error", body
    assert body["param"] == "previous_response_id", body
    assert "previous_response_id" in body["message"]
    assert set(body) >= {"message", "type", "param", "code"}
    assert fake_openai.chat_requests() == []


def test_responses_bad_key_is_401(relais_fake, fake_openai):
    with pytest.raises(openai.AuthenticationError) as e:
        sdk(relais_fake, key="sk-wrong-key-0000").responses.create(model=MODEL, input="hi")
    assert e.value.status_code == 401
    assert e.value.body["type"] == "invalid_request_error", e.value.body
    assert e.value.body["code"] == "invalid_api_key", e.value.body
    assert fake_openai.chat_requests() == []


def test_responses_unknown_model_and_upstream_failure(oai, fake_openai):
    with pytest.raises(openai.NotFoundError) as e:
        oai.responses.create(model="no-such-model", input="hi")
    assert e.value.body["code"] == "model_not_found"
    fake_openai.push(Reply(status=500, body={"error": {"message": "boom"}}))
    with pytest.raises(openai.InternalServerError) as e:
        oai.responses.create(model=MODEL, input="hi")
    assert e.value.status_code == 502 and e.value.body["type"] == "server_error"


def test_responses_include_metadata_trace(oai, fake_openai):
    r = oai.responses.create(model=MODEL, input="Say hi", extra_body={"include_metadata": True})
    trace = r.model_extra["relais"]
    assert trace["attempts"][0]["outcome"] == "ok"
    assert "include_metadata" not in fake_openai.chat_requests()[0]["body"]
    plain = oai.responses.create(model=MODEL, input="Say hi")
    assert "relais" not in (plain.model_extra or {})
