"""A scripted fake OpenAI chat-completions upstream (stdlib only), run in a thread.

By default it answers every chat request with a short text (streamed or not, as asked),
or with a call of the named tool when the request forces one. Tests can queue other
replies; every request is recorded (path, headers, parsed JSON body).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_TEXT = "Hello from the fake upstream!"


@dataclass
class Reply:
    """status + JSON body, or an SSE stream of frames (strings written verbatim)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    sse: list[str] | None = None
    # After the SSE frames: "close" (normal end) or "abort" (cut the connection).
    end: str = "close"


def chat_response(text: str = DEFAULT_TEXT, tool_calls: list | None = None) -> dict:
    msg: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake",
        "choices": [
            {"index": 0, "message": msg, "finish_reason": "tool_calls" if tool_calls else "stop"}
        ],
        "usage": {"prompt_tokens": 13, "completion_tokens": 6, "total_tokens": 19},
    }


def _chunk(delta: dict, finish: str | None = None) -> str:
    c = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return "data: " + json.dumps(c) + "\n\n"


def text_stream(text: str = DEFAULT_TEXT) -> list[str]:
    words = text.split(" ")
    pieces = [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
    frames = [_chunk({"role": "assistant", "content": ""})]
    frames += [_chunk({"content": p}) for p in pieces]
    frames.append(_chunk({}, "stop"))
    usage = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake",
        "choices": [],
        "usage": {"prompt_tokens": 13, "completion_tokens": len(pieces), "total_tokens": 13 + len(pieces)},
    }
    frames.append("data: " + json.dumps(usage) + "\n\n")
    frames.append("data: [DONE]\n\n")
    return frames


def tool_stream(name: str, args: str, call_id: str = "call_fake_1") -> list[str]:
    """A tool call with its arguments split over several chunks."""
    frames = [_chunk({"role": "assistant", "content": None})]
    frames.append(
        _chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                "function": {"name": name, "arguments": ""}}]})
    )
    step = max(1, len(args) // 3)
    for i in range(0, len(args), step):
        frames.append(
            _chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + step]}}]})
        )
    frames.append(_chunk({}, "tool_calls"))
    frames.append("data: [DONE]\n\n")
    return frames


def completion_as_stream(c: dict) -> list[str]:
    """A chat completion as the stream a server would send for it (content, tool calls,
    finish, usage, [DONE])."""
    choice = c["choices"][0]
    msg = choice.get("message") or {}
    frames = [_chunk({"role": "assistant", "content": ""})]
    if msg.get("content"):
        frames.append(_chunk({"content": msg["content"]}))
    for i, call in enumerate(msg.get("tool_calls") or []):
        frames.append(_chunk({"tool_calls": [dict(call, index=i)]}))
    frames.append(_chunk({}, choice.get("finish_reason") or "stop"))
    if c.get("usage"):
        usage = {"id": c.get("id", "chatcmpl-fake"), "object": "chat.completion.chunk",
                 "choices": [], "usage": c["usage"]}
        frames.append("data: " + json.dumps(usage) + "\n\n")
    frames.append("data: [DONE]\n\n")
    return frames


class FakeOpenAI:
    def __init__(self) -> None:
        self.queue: deque[Reply] = deque()
        self.default: Reply | None = None  # None: the automatic answer
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                with fake.lock:
                    fake.requests.append(
                        {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                         "body": body}
                    )
                    reply = fake.queue.popleft() if fake.queue else fake.default
                if reply is None:
                    reply = fake.automatic(body or {})
                # Like a real server: a scripted completion is streamed when asked to be
                # (Relais streams non-streaming client requests upstream too).
                if (reply.sse is None and reply.status == 200 and isinstance(reply.body, dict)
                        and "choices" in reply.body and (body or {}).get("stream")):
                    reply = Reply(sse=completion_as_stream(reply.body), headers=reply.headers)
                if reply.sse is not None:
                    self.send_response(reply.status)
                    self.send_header("content-type", "text/event-stream")
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    try:
                        for frame in reply.sse:
                            self.wfile.write(frame.encode())
                            self.wfile.flush()
                        if reply.end == "abort":
                            time.sleep(0.1)
                            self.connection.shutdown(2)
                    except OSError:
                        pass
                    return
                self._json(reply.status, reply.body, reply.headers)

            def _json(self, status: int, body: Any, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def automatic(self, body: dict) -> Reply:
        stream = bool(body.get("stream"))
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "function":
            name = choice["function"]["name"]
            args = json.dumps({"city": "Paris"})
            if stream:
                return Reply(sse=tool_stream(name, args))
            return Reply(body=chat_response(
                "", [{"id": "call_fake_1", "type": "function",
                      "function": {"name": name, "arguments": args}}]))
        if stream:
            return Reply(sse=text_stream())
        return Reply(body=chat_response())

    def push(self, reply: Reply) -> None:
        with self.lock:
            self.queue.append(reply)

    def chat_requests(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
