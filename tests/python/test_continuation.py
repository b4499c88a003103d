"""Mid-stream continuation with the official SDKs (docs/continuation.md): a stream that dies
after some text on one endpoint is finished by another endpoint of the same model, and each
SDK (anthropic on /v1/messages, openai on /v1/chat/completions and /v1/responses) reads one
clean stream. Scripted upstreams first; then the real model (SmolLM2 on the local model
server, `continue_final_message`): at temperature 0 the client gets exactly the uncut answer."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from conftest import CLIENT_KEY, MODEL
from fake_openai import FakeOpenAI, Reply, _chunk, text_stream

SEA = "Write one sentence about the sea."


def two_endpoints(dead_url: str, cont_url: str, method: str) -> str:
    """`dead` is cheaper (tried first under `preference: cost`); `cont` may continue."""
    providers = ""
    endpoints = ""
    for name, url, price, extra in [("dead", dead_url, 0.1, ""),
                                    ("cont", cont_url, 1.0, f'continuation = "{method}"')]:
        providers += f"""
[providers.{name}]
api = "openai"
base_url = "{url}"
api_key_env = "RELAIS_PYTEST_UPSTREAM_KEY"
first_byte_timeout_s = 60
idle_timeout_s = 60
connect_timeout_s = 2
{extra}
"""
        endpoints += f"""
[[models.endpoints]]
provider = "{name}"
upstream_model = "upstream-model"
price_input_per_mtok = {price}
price_output_per_mtok = {price}
"""
    return f"""
[server]
listen = "127.0.0.1:0"
shutdown_grace_s = 2

[routing]
total_timeout_s = 120
explore_probability = 0

[[keys]]
name = "pytest"
key = "{CLIENT_KEY}"
{providers}
[[models]]
id = "{MODEL}"
aliases = ["claude-*"]
{endpoints}"""


def dying(pieces: list[str]) -> Reply:
    """A stream of `pieces` cut before it finishes."""
    frames = [_chunk({"role": "assistant", "content": ""})]
    frames += [_chunk({"content": p}) for p in pieces]
    return Reply(sse=frames, end="abort")


def read_all(door: str, base: str, max_tokens: int, fields: dict) -> tuple[str, dict]:
    """The streamed text through `door` with its SDK, and the Relais object of its final event."""
    body = {"preference": "cost", **fields}
    if door == "messages":
        c = anthropic.Anthropic(base_url=base, api_key=CLIENT_KEY, max_retries=0, timeout=120)
        with c.messages.stream(model=MODEL, max_tokens=max_tokens,
                               messages=[{"role": "user", "content": SEA}], extra_body=body) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert final.stop_reason in ("end_turn", "max_tokens"), final
        assert "".join(b.text for b in final.content if b.type == "text") == text
        return text, {}
    o = openai.OpenAI(base_url=f"{base}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=120)
    if door == "chat":
        chunks = list(o.chat.completions.create(
            model=MODEL, max_tokens=max_tokens, stream=True,
            messages=[{"role": "user", "content": SEA}], extra_body=body))
        assert len({c.id for c in chunks}) == 1, "one completion"
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(finishes) == 1, finishes
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        relais = [getattr(c, "relais", None) or (c.model_extra or {}).get("relais") for c in chunks]
        return text, next((r for r in relais if r), {})
    events = list(o.responses.create(model=MODEL, max_output_tokens=max_tokens, stream=True,
                                     input=SEA, extra_body=body))
    types = [e.type for e in events]
    assert types.count("response.completed") == 1 and types.count("response.created") == 1, types
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-1].response.output_text == text
    return text, {}


@pytest.mark.parametrize("door", ["messages", "chat", "responses"])
def test_sdk_reads_one_clean_stream_after_a_continuation(start_relais, door):
    dead, cont = FakeOpenAI(), FakeOpenAI()
    try:
        dead.push(dying(["The sea ", "is wi"]))
        cont.push(Reply(sse=text_stream("de and blue.")))
        relais = start_relais(two_endpoints(dead.base_url, cont.base_url, "prefix"))
        text, relais_obj = read_all(door, relais.base_url, 48, {})
        assert text == "The sea is wide and blue."
        (req,) = cont.chat_requests()
        last = req["body"]["messages"][-1]
        assert last == {"role": "assistant", "content": "The sea is wi", "prefix": True}
        if door == "chat":
            (c,) = relais_obj["continuations"]
            assert (c["from_endpoint"], c["to_endpoint"]) == ("dead/upstream-model", "cont/upstream-model")
    finally:
        dead.close()
        cont.close()


@pytest.mark.llm
@pytest.mark.parametrize("door", ["messages", "chat", "responses"])
def test_the_real_model_continues_a_cut_answer_into_the_uncut_one(start_relais, llama_server, door):
    """SmolLM2 at temperature 0: the answer cut after a third of its chunks on a dying
    endpoint, continued by the local model server (`continue_final_message`), reaches the
    client as exactly the answer the model gives uncut."""
    ask = {"model": "m", "max_tokens": 48, "temperature": 0, "stream": True,
           "messages": [{"role": "user", "content": SEA}]}
    pieces = []
    with httpx.Client(timeout=120) as h, h.stream("POST", f"{llama_server}/chat/completions", json=ask) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                import json
                c = json.loads(line[len("data: "):])
                if c["choices"] and c["choices"][0]["delta"].get("content"):
                    pieces.append(c["choices"][0]["delta"]["content"])
    full = "".join(pieces)
    assert len(pieces) >= 6, full
    dead = FakeOpenAI()
    try:
        dead.push(dying(pieces[: len(pieces) // 3]))
        relais = start_relais(two_endpoints(dead.base_url, llama_server, "continue_final_message"))
        text, _ = read_all(door, relais.base_url, 48, {"temperature": 0})
        assert text == full
    finally:
        dead.close()
