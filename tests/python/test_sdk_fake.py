"""The official `anthropic` Python SDK against Relais, with a Python fake OpenAI upstream."""

from __future__ import annotations

import json
import time

import anthropic
import pytest

from conftest import CLIENT_KEY, MODEL, UPSTREAM_KEY
from fake_openai import DEFAULT_TEXT, Reply, chat_response, text_stream

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]},
}


def test_create_non_stream(client, fake_openai):
    msg = client.messages.create(
        model=MODEL, max_tokens=50, system="Be brief.",
        messages=[{"role": "user", "content": "Say hi"}],
    )
    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.model == MODEL
    assert msg.id.startswith("msg_")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == DEFAULT_TEXT
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == 13
    # Non-streaming upstream too (stream_whole_answers is off): the fake's JSON answer
    # reports 6 completion tokens.
    assert msg.usage.output_tokens == 6
    (req,) = fake_openai.chat_requests()
    assert "stream" not in req["body"]
    assert req["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert req["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi"},
    ]
    assert req["body"]["max_tokens"] == 50


def test_stream_text_and_final_message(client, fake_openai):
    with client.messages.stream(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "Say hi"}],
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1, "streamed in several deltas"
    assert "".join(pieces) == DEFAULT_TEXT
    assert final.content[0].text == DEFAULT_TEXT
    assert final.stop_reason == "end_turn"
    assert final.model == MODEL
    assert final.usage.output_tokens > 0
    (req,) = fake_openai.chat_requests()
    assert req["body"]["stream"] is True


def test_raw_stream_event_order(client):
    events = list(client.messages.create(
        model=MODEL, max_tokens=50, stream=True,
        messages=[{"role": "user", "content": "Say hi"}],
    ))
    types = [e.type for e in events]
    assert types[0] == "message_start"
    assert types[1] == "content_block_start"
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"}


def test_forced_tool_call_non_stream(client, fake_openai):
    msg = client.messages.create(
        model=MODEL, max_tokens=100, tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    tool_uses = [b for b in msg.content if b.type == "tool_use"]
    assert len(tool_uses) == 1, msg
    assert tool_uses[0].name == "get_weather"
    assert tool_uses[0].input == {"city": "Paris"}
    assert msg.stop_reason == "tool_use"
    (req,) = fake_openai.chat_requests()
    assert req["body"]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_forced_tool_call_stream(client):
    with client.messages.stream(
        model=MODEL, max_tokens=100, tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    tool_uses = [b for b in final.content if b.type == "tool_use"]
    assert len(tool_uses) == 1, final
    assert tool_uses[0].name == "get_weather"
    assert tool_uses[0].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_tool_result_round_trip(client, fake_openai):
    msg = client.messages.create(
        model=MODEL, max_tokens=50, tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny, 21C"}]},
        ],
    )
    assert msg.content[0].text == DEFAULT_TEXT
    (req,) = fake_openai.chat_requests()
    roles = [m["role"] for m in req["body"]["messages"]]
    assert roles == ["user", "assistant", "tool"]
    assert req["body"]["messages"][2] == {"role": "tool", "tool_call_id": "toolu_01",
                                           "content": "sunny, 21C"}


def test_count_tokens(client, fake_openai):
    r = client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Hello, how are you today?"}],
    )
    assert r.input_tokens > 0
    assert fake_openai.chat_requests() == []


def test_models_list_and_retrieve(client):
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert ids == [MODEL]
    m = client.models.retrieve(MODEL)
    assert m.id == MODEL
    assert m.type == "model"
    assert m.display_name == "Relais test model"
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("no-such-model")


def test_error_types(client, relais_fake):
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-model", max_tokens=10,
                               messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404
    assert e.value.body["error"]["type"] == "not_found_error"
    assert e.value.response.headers.get("request-id")

    bad = anthropic.Anthropic(base_url=relais_fake.base_url, api_key="sk-wrong-key-123456",
                              max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401

    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODEL, max_tokens=0, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["error"]["type"] == "invalid_request_error"

    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=MODEL, max_tokens=10, stop_sequences=list("abcde"),
                               messages=[{"role": "user", "content": "hi"}])


def test_sdk_retries_5xx(relais_fake, fake_openai):
    fake_openai.default = Reply(status=500, body={"error": {"message": "boom"}})
    c = anthropic.Anthropic(base_url=relais_fake.base_url, api_key=CLIENT_KEY, max_retries=2)
    t = time.monotonic()
    with pytest.raises(anthropic.InternalServerError) as e:
        c.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502
    assert e.value.body["error"]["type"] == "api_error"
    assert len(fake_openai.chat_requests()) == 3, "the SDK retried a retryable status twice"
    assert time.monotonic() - t < 20


def test_sdk_retries_429_then_succeeds(relais_fake, fake_openai):
    fake_openai.push(Reply(status=429, body={"error": {"message": "slow down"}},
                           headers={"retry-after": "1"}))
    c = anthropic.Anthropic(base_url=relais_fake.base_url, api_key=CLIENT_KEY, max_retries=2)
    msg = c.messages.create(model=MODEL, max_tokens=10,
                            messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == DEFAULT_TEXT
    assert len(fake_openai.chat_requests()) == 2


def _recording_client(relais_fake, seen: list[int]) -> anthropic.Anthropic:
    """The SDK with its default retries, recording every HTTP status Relais answered."""
    http = anthropic.DefaultHttpxClient(event_hooks={"response": [lambda r: seen.append(r.status_code)]})
    return anthropic.Anthropic(base_url=relais_fake.base_url, api_key=CLIENT_KEY, http_client=http)


def test_sdk_never_sees_503_from_a_healthy_single_provider_after_faults(relais_fake, fake_openai):
    # Three faults of three kinds (a 500, a malformed stream, a dropped connection) open the
    # default breaker of the only provider; it is healthy right after.
    fake_openai.push(Reply(status=500, body={"error": {"message": "boom"}}))
    fake_openai.push(Reply(sse=["data: {not json\n\n"]))
    fake_openai.push(Reply(sse=[], end="abort"))
    seen: list[int] = []
    c = _recording_client(relais_fake, seen)
    with pytest.raises(anthropic.InternalServerError):
        c.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert seen == [502, 502, 502], "the SDK's default retries each met a real upstream fault"
    for stream in (False, True):
        if stream:
            with c.messages.stream(model=MODEL, max_tokens=10,
                                   messages=[{"role": "user", "content": "hi"}]) as s:
                text = s.get_final_message().content[0].text
        else:
            text = c.messages.create(model=MODEL, max_tokens=10,
                                     messages=[{"role": "user", "content": "hi"}]).content[0].text
        assert text == DEFAULT_TEXT
    assert 503 not in seen and 529 not in seen, seen
    assert seen[3:] == [200, 200]


def test_sdk_sees_the_providers_429_then_success_never_503(relais_fake, fake_openai):
    fake_openai.push(Reply(status=429, body={"error": {"message": "slow down"}},
                           headers={"retry-after": "1"}))
    seen: list[int] = []
    c = _recording_client(relais_fake, seen)
    msg = c.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == DEFAULT_TEXT
    # The SDK's retry came within the provider's retry-after second: Relais still asked
    # the provider (a last resort) instead of answering a made-up 503.
    assert seen == [429, 200], seen


def test_sdk_does_not_retry_400(relais_fake, fake_openai):
    fake_openai.default = Reply(status=400, body={"error": {"message": "context too long",
                                                            "code": "context_length_exceeded"}})
    c = anthropic.Anthropic(base_url=relais_fake.base_url, api_key=CLIENT_KEY, max_retries=2)
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert "context too long" in e.value.message
    assert len(fake_openai.chat_requests()) == 1


def test_stream_cut_after_content_raises(client, fake_openai):
    frames = text_stream("one two three four")[:3]
    fake_openai.push(Reply(sse=frames, end="abort"))
    with pytest.raises(anthropic.APIError):
        with client.messages.stream(model=MODEL, max_tokens=50,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            for _ in stream.text_stream:
                pass


def test_beta_messages_with_unknown_fields(client, fake_openai):
    # Claude Code sends these through the beta endpoint (`?beta=true`).
    msg = client.beta.messages.create(
        model=MODEL, max_tokens=50, betas=["context-management-2025-06-27"],
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"context_management": {"edits": []}, "output_config": {"effort": "low"},
                    "preference": "cost"},
    )
    assert msg.content[0].text == DEFAULT_TEXT
    (req,) = fake_openai.chat_requests()
    for k in ("context_management", "output_config", "preference"):
        assert k not in req["body"]


def test_keys_not_in_logs(client, relais_fake, fake_openai):
    fake_openai.push(Reply(status=500, body={"error": {"message": "x"}}))
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    log = relais_fake.log()
    assert "request request_id=" in log, log
    assert CLIENT_KEY not in log
    assert UPSTREAM_KEY not in log
    assert json.dumps(CLIENT_KEY)[1:-1] not in log
