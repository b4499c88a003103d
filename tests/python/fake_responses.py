"""A scripted stand-in for an OpenAI Responses API server (`POST /v1/responses`), stdlib only,
run in a thread. It records every request (method, path, headers, parsed JSON body) and
answers each `POST .../responses` with the next scripted turn, streamed as Responses SSE
events the way OpenAI sends them: response.created, response.in_progress, then per output
item output_item.added / (content_part.added, output_text.delta+, output_text.done,
content_part.done | function_call_arguments.delta+, function_call_arguments.done) /
output_item.done, and response.completed carrying usage.

It is what Codex CLI is checked against before Relais's own `/v1/responses` door exists,
and the reference for the event sequence that door must produce.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class TextTurn:
    text: str


@dataclass
class CallTurn:
    """The model calls one function tool."""

    name: str
    arguments: str
    call_id: str = "call_fake_1"


@dataclass
class ErrorTurn:
    status: int
    body: Any = field(default_factory=lambda: {"error": {"message": "scripted failure",
                                                          "type": "server_error"}})


Turn = TextTurn | CallTurn | ErrorTurn


def _frame(event: dict) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def turn_events(turn: Turn, *, response_id: str, model: str, usage: dict) -> list[dict]:
    """The Responses stream events for one scripted turn, sequence numbers from 0."""
    base = {"id": response_id, "object": "response", "created_at": 1700000000,
            "model": model, "output": [], "status": "in_progress", "usage": None,
            "error": None, "incomplete_details": None}
    events: list[dict] = [
        {"type": "response.created", "response": dict(base)},
        {"type": "response.in_progress", "response": dict(base)},
    ]
    if isinstance(turn, TextTurn):
        item_id = f"msg_{response_id}"
        part_empty = {"type": "output_text", "text": "", "annotations": []}
        item = {"id": item_id, "type": "message", "role": "assistant", "status": "in_progress",
                "content": []}
        events.append({"type": "response.output_item.added", "output_index": 0, "item": item})
        events.append({"type": "response.content_part.added", "item_id": item_id,
                       "output_index": 0, "content_index": 0, "part": part_empty})
        words = turn.text.split(" ")
        for i, w in enumerate(words):
            piece = w + (" " if i < len(words) - 1 else "")
            events.append({"type": "response.output_text.delta", "item_id": item_id,
                           "output_index": 0, "content_index": 0, "delta": piece,
                           "logprobs": []})
        part = {"type": "output_text", "text": turn.text, "annotations": []}
        events.append({"type": "response.output_text.done", "item_id": item_id,
                       "output_index": 0, "content_index": 0, "text": turn.text,
                       "logprobs": []})
        events.append({"type": "response.content_part.done", "item_id": item_id,
                       "output_index": 0, "content_index": 0, "part": part})
        done_item = dict(item, status="completed", content=[part])
    else:
        assert isinstance(turn, CallTurn)
        item_id = f"fc_{response_id}"
        item = {"id": item_id, "type": "function_call", "status": "in_progress",
                "name": turn.name, "call_id": turn.call_id, "arguments": ""}
        events.append({"type": "response.output_item.added", "output_index": 0, "item": item})
        step = max(1, len(turn.arguments) // 3)
        for i in range(0, len(turn.arguments), step):
            events.append({"type": "response.function_call_arguments.delta", "item_id": item_id,
                           "output_index": 0, "delta": turn.arguments[i:i + step]})
        events.append({"type": "response.function_call_arguments.done", "item_id": item_id,
                       "output_index": 0, "arguments": turn.arguments})
        done_item = dict(item, status="completed", arguments=turn.arguments)
    events.append({"type": "response.output_item.done", "output_index": 0, "item": done_item})
    events.append({"type": "response.completed",
                   "response": dict(base, status="completed", output=[done_item], usage=usage)})
    for n, e in enumerate(events):
        e["sequence_number"] = n
    return events


USAGE = {"input_tokens": 21, "input_tokens_details": {"cached_tokens": 0},
         "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0},
         "total_tokens": 28}


class FakeResponses:
    """Answers scripted turns in order; with the script exhausted, a fixed text."""

    def __init__(self, turns: list[Turn] | None = None, default_text: str = "Done.",
                 transform: Callable[[list[dict]], list[dict]] | None = None) -> None:
        self.turns: deque[Turn] = deque(turns or [])
        # Rewrites each turn's events before they are sent: to check what a client
        # tolerates (a missing field, a missing event).
        self.transform = transform
        self.default_text = default_text
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.count = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _record(self, body: Any) -> None:
                with fake.lock:
                    fake.requests.append({
                        "method": self.command, "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    })

            def do_GET(self) -> None:
                self._record(None)
                self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

            def do_POST(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = {"__unparsed__": raw.decode(errors="replace")}
                self._record(body)
                if not self.path.split("?")[0].rstrip("/").endswith("/responses"):
                    self._json(404, {"error": {"message": "not found",
                                               "type": "invalid_request_error"}})
                    return
                with fake.lock:
                    turn = fake.turns.popleft() if fake.turns else TextTurn(fake.default_text)
                    fake.count += 1
                    rid = f"resp_fake_{fake.count}"
                if isinstance(turn, ErrorTurn):
                    self._json(turn.status, turn.body)
                    return
                model = (body or {}).get("model", "fake")
                events = turn_events(turn, response_id=rid, model=model, usage=USAGE)
                if fake.transform is not None:
                    events = fake.transform(events)
                frames = [_frame(e) for e in events]
                data = "".join(frames).encode()
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
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

    def response_requests(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["method"] == "POST"
                    and r["path"].split("?")[0].rstrip("/").endswith("/responses")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
