"""The local model server (scripts/local-llm/server.mjs: SmolLM2-135M on node-llama-cpp's
prebuilt llama.cpp) tested directly, as any OpenAI-compatible upstream: chat, streams,
usage, tool calls, errors, the queue, and `continue_final_message` (a cut answer, continued
at temperature 0, ends as the uncut answer did)."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

pytestmark = pytest.mark.llm

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}
PARIS = [{"role": "user", "content": "What is the weather in Paris?"}]
# One earlier call in the conversation: enough for the 135M model to call the tool by itself
# (tool_choice auto), through node-llama-cpp's function-calling syntax.
FEW_SHOT = [
    {"role": "user", "content": "What is the weather in Rome?"},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "Rainy, 12 C"},
    {"role": "assistant", "content": "It is rainy in Rome, 12 C."},
    *PARIS,
]


@pytest.fixture(scope="module")
def llm(llama_server):
    with httpx.Client(base_url=llama_server, timeout=120) as c:
        yield c


def chat(llm, **body):
    r = llm.post("/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def stream(llm, **body):
    """The stream's parsed chunks, checked to end with `data: [DONE]`."""
    with llm.stream("POST", "/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        data = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert data and data[-1] == "[DONE]", data[-3:]
    return [json.loads(d) for d in data[:-1]]


def streamed_text(chunks):
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def streamed_tool_calls(chunks):
    calls: dict[int, dict] = {}
    for c in chunks:
        for tc in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            call = calls.setdefault(tc["index"], {"name": "", "arguments": ""})
            if tc.get("id"):
                call["id"] = tc["id"]
            f = tc.get("function") or {}
            call["name"] += f.get("name") or ""
            call["arguments"] += f.get("arguments") or ""
    return [calls[i] for i in sorted(calls)]


def test_models(llm):
    r = llm.get("/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert [m["object"] for m in body["data"]] == ["model"]


def test_chat_and_usage(llm):
    r = chat(llm, model="smollm2-135m", max_tokens=24, temperature=0,
             messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert r["object"] == "chat.completion" and r["model"] == "smollm2-135m"
    (choice,) = r["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    u = r["usage"]
    assert u["prompt_tokens"] > 5 and 0 < u["completion_tokens"] <= 24
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]


def test_stream_shape_usage_and_same_answer(llm):
    ask = dict(model="m", max_tokens=24, temperature=0,
               messages=[{"role": "user", "content": "Name three colors."}])
    whole = chat(llm, **ask)
    chunks = stream(llm, **ask, stream_options={"include_usage": True})
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    *content, final, usage_chunk = chunks
    assert final["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert final["choices"][0]["delta"] == {}
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == whole["usage"]
    assert streamed_text(chunks) == whole["choices"][0]["message"]["content"], "temperature 0"
    # Without include_usage: no usage chunk.
    plain = stream(llm, **ask)
    assert plain[-1]["choices"][0]["finish_reason"] and "usage" not in plain[-1]


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_output_limit(llm, limit):
    r = chat(llm, temperature=0, messages=[{"role": "user", "content": "Write a long story about a dragon."}],
             **{limit: 3})
    assert r["choices"][0]["finish_reason"] == "length"
    assert r["usage"]["completion_tokens"] <= 3


def test_stop_sequence(llm):
    ask = dict(max_tokens=24, temperature=0,
               messages=[{"role": "user", "content": "What is the capital of France?"}])
    full = chat(llm, **ask)["choices"][0]["message"]["content"]
    assert "France" in full, "the uncut answer names France (a precondition of this test)"
    r = chat(llm, **ask, stop=["France"])
    assert r["choices"][0]["finish_reason"] == "stop"
    assert r["choices"][0]["stop_reason"] == "France"
    assert r["choices"][0]["message"]["content"] == full[:full.index("France")]
    assert streamed_text(stream(llm, **ask, stop=["France"])) == full[:full.index("France")]


@pytest.mark.parametrize("choice", [{"type": "function", "function": {"name": "get_weather"}}, "required"])
def test_forced_tool_call(llm, choice):
    ask = dict(max_tokens=64, temperature=0, tools=[WEATHER], tool_choice=choice, messages=PARIS)
    r = chat(llm, **ask)
    msg = r["choices"][0]["message"]
    (call,) = msg["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)
    assert msg["content"] is None and r["choices"][0]["finish_reason"] == "tool_calls"
    chunks = stream(llm, **ask)
    (scall,) = streamed_tool_calls(chunks)
    assert scall["name"] == "get_weather" and scall["id"].startswith("call_")
    assert json.loads(scall["arguments"]) == json.loads(call["function"]["arguments"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_auto_tool_call_through_function_calling(llm):
    ask = dict(max_tokens=48, temperature=0, tools=[WEATHER], messages=FEW_SHOT)
    r = chat(llm, **ask, tool_choice="auto")
    (call,) = r["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert r["choices"][0]["finish_reason"] == "tool_calls"
    chunks = stream(llm, **ask)  # no tool_choice: auto, as OpenAI
    (scall,) = streamed_tool_calls(chunks)
    assert scall["name"] == "get_weather"
    assert json.loads(scall["arguments"]) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # tool_choice none: the same conversation gets text.
    r = chat(llm, **ask, tool_choice="none")
    assert "tool_calls" not in r["choices"][0]["message"]
    assert r["choices"][0]["finish_reason"] in ("stop", "length")


def test_tool_result_turn(llm):
    r = chat(llm, max_tokens=24, temperature=0, tools=[WEATHER], messages=FEW_SHOT[:3])
    assert r["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")
    assert r["usage"]["prompt_tokens"] > 20


def test_continue_final_message_continues_the_cut_answer(llm):
    """At temperature 0, the continuation of an answer cut after any streamed chunk is the
    rest of the uncut answer: the final assistant message is rendered without its end of turn."""
    msgs = [{"role": "user", "content": "Write one sentence about the sea."}]
    pieces = [c["choices"][0]["delta"].get("content") or ""
              for c in stream(llm, max_tokens=48, temperature=0, messages=msgs) if c["choices"]]
    pieces = [p for p in pieces if p]
    full = "".join(pieces)
    assert len(pieces) >= 6, full
    for cut in (1, len(pieces) // 3, len(pieces) // 2, len(pieces) - 1):
        prefix = "".join(pieces[:cut])
        ask = dict(max_tokens=48, temperature=0, continue_final_message=True, add_generation_prompt=False,
                   messages=[*msgs, {"role": "assistant", "content": prefix}])
        rest = chat(llm, **ask)["choices"][0]["message"]["content"]
        assert prefix + rest == full, (cut, prefix, rest)
        assert prefix + streamed_text(stream(llm, **ask)) == full, cut
    # A new turn (the default) is not a continuation.
    again = chat(llm, max_tokens=48, temperature=0, messages=[*msgs, {"role": "assistant", "content": pieces[0]}])
    assert again["choices"][0]["message"]["content"] != full[len(pieces[0]):]


def test_one_generation_at_a_time(llm):
    ask = dict(max_tokens=16, temperature=0, messages=[{"role": "user", "content": "Name a fruit."}])
    expected = chat(llm, **ask)["choices"][0]["message"]["content"]
    results: list[str] = []

    def one() -> None:
        results.append(streamed_text(stream(llm, **ask)))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [expected] * 3, "queued, not interleaved or cut"


@pytest.mark.parametrize("body, status, code", [
    ("{not json", 400, None),
    ({"messages": [{"role": "user", "content": "hello " * 3000}], "max_tokens": 8}, 400, "context_length_exceeded"),
    ({"messages": [{"role": "user", "content": "hi"}], "continue_final_message": True}, 400, None),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, None),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, 400, None),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER],
      "tool_choice": {"type": "function", "function": {"name": "nope"}}}, 400, None),
    ({"messages": []}, 400, None),
])
def test_errors_in_openai_envelope(llm, body, status, code):
    content = body if isinstance(body, str) else json.dumps(body)
    r = llm.post("/chat/completions", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert err["code"] == code
    r = llm.post("/nowhere", content="{}")
    assert r.status_code == 404 and r.json()["error"]["message"]
