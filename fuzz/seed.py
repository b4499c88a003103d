#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/corpus/<target>/seed-*) from the repo's fixtures and a few
hand-written inputs. Seeds stay small (long strings and lists cut) so that libFuzzer's
default input size (4 KiB) holds them whole. Run from anywhere: python3 fuzz/seed.py"""

import glob
import hashlib
import json
import os

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)


def shrink(v, depth=0):
    if isinstance(v, str):
        return v[:120]
    if isinstance(v, list):
        return [shrink(x, depth + 1) for x in v[:3]]
    if isinstance(v, dict):
        return {k: shrink(x, depth + 1) for k, x in v.items()}
    return v


def put(target, data):
    if isinstance(data, (dict, list)):
        data = json.dumps(data, separators=(",", ":"))
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(FUZZ, "corpus", target)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as fh:
        fh.write(data)


def load(p):
    with open(os.path.join(ROOT, p), "rb") as fh:
        return fh.read()


def payloads(sse):
    out = []
    for line in sse.split(b"\n"):
        if line.startswith(b"data:"):
            out.append(line[5:].strip())
    return b"\n".join(out)


# ---- requests
cc = json.loads(load("tests/fixtures/translate/claude-code-request.json"))
MSG = [
    shrink(cc),
    {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]},
    {"model": "m", "max_tokens": 64, "stream": True, "system": [{"type": "text", "text": "be brief"}],
     "stop_sequences": ["END"], "temperature": 0.2, "preference": "cheapest", "eu_native": True,
     "messages": [{"role": "user", "content": [{"type": "text", "text": "weather?"}]},
                  {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                                     {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                                               {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}],
     "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
     "tool_choice": {"type": "auto"}, "thinking": {"type": "enabled", "budget_tokens": 1024}, "metadata": {"user_id": "u"}},
]
for m in MSG:
    put("messages_request", m)
    put("count_tokens_request", m)

CHAT = [
    {"model": "m", "messages": [{"role": "user", "content": "Hello"}]},
    {"model": "m", "max_completion_tokens": 32, "stream": True, "stream_options": {"include_usage": True},
     "messages": [{"role": "system", "content": "be brief"},
                  {"role": "user", "content": [{"type": "text", "text": "what is this"},
                                               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                  {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                  {"role": "tool", "tool_call_id": "c1", "content": "42"}],
     "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}],
     "tool_choice": "auto", "parallel_tool_calls": False, "stop": ["END"], "allowed_providers": ["p"]},
    {"model": "m", "max_tokens": 8, "response_format": {"type": "json_object"}, "reasoning_effort": "low",
     "messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "y"}]},
]
for m in CHAT:
    put("chat_request", m)

codex = json.loads(load("tests/fixtures/codex/request.json"))
RESP = [
    shrink(codex),
    {"model": "m", "input": "Hello"},
    {"model": "m", "stream": True, "max_output_tokens": 64, "instructions": "be brief",
     "reasoning": {"effort": "low"}, "store": False, "include": ["reasoning.encrypted_content"],
     "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
               {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
               {"type": "function_call_output", "call_id": "c1", "output": "ok"},
               {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
               {"type": "custom_tool_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "done"}]}],
     "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}},
               {"type": "custom", "name": "apply_patch", "description": "p"}, {"type": "web_search"}],
     "tool_choice": "auto", "parallel_tool_calls": True},
]
for m in RESP:
    put("responses_request", m)

# ---- SSE and streams
oa = sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/openai_streams/*.sse")))
an = sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/anthropic_streams/*.sse")))
for p in oa + an:
    with open(p, "rb") as fh:
        raw = fh.read()
    put("sse_decoder", b"\x03\x05" + raw)
for p in oa:
    with open(p, "rb") as fh:
        data = payloads(fh.read())
    for t in ("chat_to_anthropic_stream", "chat_relay_stream", "chat_to_responses_stream", "chat_chunk"):
        put(t, data)
for p in an:
    with open(p, "rb") as fh:
        data = payloads(fh.read())
    for t in ("anthropic_to_chat_stream", "anthropic_event"):
        put(t, data)
put("sse_decoder", b"\x00\x00\xef\xbb\xbfdata: a\r\ndata: b\r\n\r\n: comment\nevent: x\ndata:c\r\r")

# ---- whole answers
for c in [
    {"id": "c", "object": "chat.completion", "created": 1, "model": "up",
     "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi", "reasoning_content": "r"},
                  "finish_reason": "stop"}],
     "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
               "prompt_tokens_details": {"cached_tokens": 2}}},
    {"id": "c", "model": "up", "choices": [{"index": 0, "message": {"role": "assistant", "content": None,
     "tool_calls": [{"id": "t", "type": "function", "function": {"name": "apply_patch", "arguments": "{\"input\":\"x\"}"}}]},
     "finish_reason": "tool_calls"}]},
    {"id": "c", "choices": [{"message": {"refusal": "no"}, "finish_reason": "length"}]},
    {"id": "c", "choices": []},
]:
    put("chat_completion", c)
for m in [
    {"id": "msg", "type": "message", "role": "assistant", "model": "up",
     "content": [{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "hi"},
                 {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}],
     "stop_reason": "tool_use", "stop_sequence": None,
     "usage": {"input_tokens": 5, "output_tokens": 3, "cache_read_input_tokens": 1}},
    {"id": "msg", "type": "message", "role": "assistant", "model": "up", "content": [],
     "stop_reason": "max_tokens", "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 0}},
]:
    put("anthropic_message", m)

# ---- config
for p in ["relais.example.toml", "relais.local.toml"] + sorted(glob.glob(os.path.join(ROOT, "bench/variants/*.toml"))):
    put("config", load(p))
