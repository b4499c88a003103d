"""The official `anthropic` SDK through Relais to a real model: SmolLM2-135M on llama.cpp
(CPU), served by scripts/local-llm/server.mjs. Answers are checked for shape, not wording."""

from __future__ import annotations

import anthropic
import pytest

from conftest import MODEL

pytestmark = pytest.mark.llm

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]},
}


def test_llama_create(llama_client):
    msg = llama_client.messages.create(
        model=MODEL, max_tokens=24, extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert msg.model == MODEL
    assert msg.content and msg.content[0].type == "text"
    assert msg.content[0].text.strip()
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.input_tokens > 0
    assert 0 < msg.usage.output_tokens <= 24


def test_llama_whole_answer_as_json(start_relais, llama_server):
    """`stream_whole_answers = false` (the default, spelled out): a non-streaming request goes
    to the real server as a plain JSON request; same answer as a stream."""
    from conftest import CLIENT_KEY, relais_config

    streamed = start_relais(relais_config(llama_server, first_byte_timeout_s=60,
                                          context_window=2048, max_output_tokens=1024,
                                          provider_extra="stream_whole_answers = false"))
    c = anthropic.Anthropic(base_url=streamed.base_url, api_key=CLIENT_KEY, max_retries=0,
                            timeout=120)
    ask = dict(model=MODEL, max_tokens=24, extra_body={"temperature": 0},
               messages=[{"role": "user", "content": "What is the capital of France?"}])
    msg = c.messages.create(**ask)
    assert msg.content and msg.content[0].type == "text"
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.input_tokens > 0 and 0 < msg.usage.output_tokens <= 24
    with c.messages.stream(**ask) as s:
        direct = s.get_final_message()
    assert msg.content[0].text == direct.content[0].text, "temperature 0: the same answer"


def test_llama_max_tokens_stop_reason(llama_client):
    msg = llama_client.messages.create(
        model=MODEL, max_tokens=3, extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
    )
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens <= 3


def test_llama_stream(llama_client):
    with llama_client.messages.stream(
        model=MODEL, max_tokens=24, extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Say hello."}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip()
    assert final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens")
    # The usage the server reports in its stream's last chunk reaches the client.
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0


def test_llama_stream_deterministic(llama_client):
    def once() -> str:
        m = llama_client.messages.create(
            model=MODEL, max_tokens=16, extra_body={"temperature": 0},
            messages=[{"role": "user", "content": "Name a color."}],
        )
        return m.content[0].text

    with llama_client.messages.stream(
        model=MODEL, max_tokens=16, extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "Name a color."}],
    ) as stream:
        streamed = "".join(stream.text_stream)
    assert streamed == once(), "temperature 0: streamed and whole answers agree"


def test_llama_forced_tool_non_stream(llama_client):
    msg = llama_client.messages.create(
        model=MODEL, max_tokens=64, extra_body={"temperature": 0}, tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    )
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert len(uses) == 1, msg
    assert uses[0].name == "get_weather"
    assert isinstance(uses[0].input, dict) and isinstance(uses[0].input.get("city"), str), uses[0]
    assert uses[0].id
    assert msg.stop_reason == "tool_use", msg


def test_llama_forced_tool_stream(llama_client):
    with llama_client.messages.stream(
        model=MODEL, max_tokens=64, extra_body={"temperature": 0}, tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert len(uses) == 1, final
    assert uses[0].name == "get_weather", "name taken once even though llama.cpp repeats it"
    assert isinstance(uses[0].input, dict) and isinstance(uses[0].input.get("city"), str), uses[0]
    assert final.stop_reason == "tool_use", final


def test_llama_tool_result_turn(llama_client):
    msg = llama_client.messages.create(
        model=MODEL, max_tokens=16, extra_body={"temperature": 0}, tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny, 21 C"}]},
        ],
    )
    assert msg.type == "message"
    assert msg.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_llama_count_tokens_and_models(llama_client):
    n = llama_client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "Hello there, model."}])
    assert n.input_tokens > 0
    assert [m.id for m in llama_client.models.list().data] == [MODEL]


def test_llama_prompt_over_context_is_400(llama_client):
    # ~3000 tokens: over the 2048-token window (Relais's fit check or llama.cpp's own 400).
    with pytest.raises(anthropic.BadRequestError):
        llama_client.messages.create(
            model=MODEL, max_tokens=16,
            messages=[{"role": "user", "content": "hello " * 3000}],
        )
