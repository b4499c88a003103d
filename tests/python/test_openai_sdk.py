"""The official `openai` Python SDK against Relais's OpenAI-compatible door
(`/v1/chat/completions`, `/v1/models`): over the Python fake upstream, and through to the
real local model (SmolLM2-135M on llama.cpp)."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import CLIENT_KEY, MODEL, UPSTREAM_KEY
from fake_openai import DEFAULT_TEXT, Reply, chat_response

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}


def sdk(relais, timeout=30) -> openai.OpenAI:
    return openai.OpenAI(base_url=relais.base_url + "/v1", api_key=CLIENT_KEY, max_retries=0,
                         timeout=timeout)


@pytest.fixture
def oai(relais_fake):
    return sdk(relais_fake)


def test_openai_create(oai, fake_openai):
    r = oai.chat.completions.create(
        model=MODEL, max_completion_tokens=50, seed=3,
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Say hi"}],
    )
    assert r.object == "chat.completion"
    assert r.model == MODEL
    assert r.choices[0].message.content == DEFAULT_TEXT
    assert r.choices[0].finish_reason == "stop"
    # Non-streaming upstream too (stream_whole_answers is off): the fake's JSON answer
    # reports 6 completion tokens.
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (13, 6)
    (req,) = fake_openai.chat_requests()
    assert "stream" not in req["body"]
    assert req["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    body = req["body"]
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Say hi"}]
    assert body["max_completion_tokens"] == 50 and body["seed"] == 3
    assert body["model"] != MODEL, "the upstream's own model name"


def test_openai_stream_with_usage_and_trace(oai, fake_openai):
    stream = oai.chat.completions.create(
        model=MODEL, max_tokens=50, stream=True, stream_options={"include_usage": True},
        extra_body={"include_metadata": True},
        messages=[{"role": "user", "content": "Say hi"}],
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_TEXT
    assert all(c.model == MODEL for c in chunks)
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens > 0
    trace = last.model_extra["relais"]
    assert trace["attempts"][0]["outcome"] == "ok"
    (req,) = fake_openai.chat_requests()
    assert req["body"]["stream_options"] == {"include_usage": True}


def test_openai_stream_helper(oai):
    with oai.chat.completions.stream(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "Say hi"}],
    ) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content == DEFAULT_TEXT
    assert final.choices[0].finish_reason == "stop"


def test_openai_tools(oai, fake_openai):
    forced = {"type": "function", "function": {"name": "get_weather"}}
    for stream in (False, True):
        kw = dict(model=MODEL, max_tokens=50, tools=[WEATHER], tool_choice=forced,
                  parallel_tool_calls=False,
                  messages=[{"role": "user", "content": "Weather in Paris?"}])
        if stream:
            with oai.chat.completions.stream(**kw) as s:
                msg = s.get_final_completion().choices[0]
        else:
            msg = oai.chat.completions.create(**kw).choices[0]
        assert msg.finish_reason == "tool_calls", msg
        (call,) = msg.message.tool_calls
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
    for req in fake_openai.chat_requests():
        assert req["body"]["tools"] == [WEATHER]
        assert req["body"]["tool_choice"] == forced
        assert req["body"]["parallel_tool_calls"] is False


def test_openai_images_and_response_format_pass_through(oai, fake_openai):
    parts = [{"type": "text", "text": "What is this?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
             {"type": "image_url", "image_url": {"url": "https://example.com/a.png",
                                                 "detail": "high"}}]
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    oai.chat.completions.create(model=MODEL, max_tokens=20, response_format=fmt,
                                messages=[{"role": "user", "content": parts}])
    (req,) = fake_openai.chat_requests()
    assert req["body"]["messages"][0]["content"] == parts
    assert req["body"]["response_format"] == fmt


def test_openai_errors(oai, relais_fake, fake_openai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=MODEL, n=2, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 400
    assert e.value.body["type"] == "invalid_request_error" and e.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError) as e:
        oai.chat.completions.create(model="no-such", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=relais_fake.base_url + "/v1", api_key="sk-wrong", max_retries=0
                      ).chat.completions.create(model=MODEL,
                                                messages=[{"role": "user", "content": "x"}])
    fake_openai.push(Reply(status=500, body={"error": {"message": "boom"}}))
    with pytest.raises(openai.InternalServerError) as e:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502 and e.value.body["type"] == "server_error"
    fake_openai.push(Reply(status=429, body={"error": {"message": "slow down"}},
                           headers={"retry-after": "1"}))
    with pytest.raises(openai.RateLimitError) as e:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "requests" and e.value.body["code"] == "rate_limit_exceeded"


def test_openai_models_list(oai, relais_fake):
    ids = [m.id for m in oai.models.list()]
    assert ids == [MODEL]
    m = oai.models.retrieve(MODEL)
    assert (m.id, m.object, m.owned_by) == (MODEL, "model", "relais")


# ---------- the real model ----------


@pytest.fixture
def llama_oai(relais_llama):
    return sdk(relais_llama, timeout=120)


@pytest.mark.llm
def test_openai_llama_create_and_stream(llama_oai):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    r = llama_oai.chat.completions.create(model=MODEL, max_tokens=24, temperature=0,
                                          messages=msgs)
    assert r.model == MODEL
    assert r.choices[0].message.content.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 24
    chunks = list(llama_oai.chat.completions.create(
        model=MODEL, max_tokens=24, temperature=0, messages=msgs, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content, "temperature 0: same answer both ways"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.llm
def test_openai_llama_length_and_tools(llama_oai):
    r = llama_oai.chat.completions.create(
        model=MODEL, max_completion_tokens=3, max_tokens=3, temperature=0,
        messages=[{"role": "user", "content": "Write a long story about a dragon."}])
    assert r.choices[0].finish_reason == "length"
    r = llama_oai.chat.completions.create(
        model=MODEL, max_tokens=64, temperature=0, tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments).get("city"), str)


@pytest.mark.llm
def test_openai_llama_models(llama_oai):
    assert [m.id for m in llama_oai.models.list()] == [MODEL]
