#!/usr/bin/env python3
"""Probe: a runaway upstream against a release build of Relais, on a fresh process.

The upstream (OpenAI chat-completions, in this script) answers every request with a first
small chunk, then 64 KiB chunks of text forever. A client asks for `max_tokens: 16`,
streamed, through each door, with a fast reader and with a slow one (4 KiB every 50 ms).
For each run it prints how long the stream took to end, the bytes the client received,
how the stream ended, what the upstream managed to send, Relais's RSS rise (peak VmRSS
sampled every 10 ms, minus the RSS before the request), and what the ledger charged.

Bounds it checks (exit 1 if one is missed): ends within 10 s, the client gets < 8 MB, the
RSS rise is < 64 MB, the charged output <= 16 tokens.

    cargo build --release
    python3 scripts/probes/runaway.py [--relais-bin target/release/relais]

Needs only python3 (stdlib). Everything listens on 127.0.0.1, on free ports.
"""

import argparse
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

PIECE = 64 * 1024
KEY = "sk-probe-client-0123456789abcdef"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Runaway(threading.Thread):
    """A raw-socket upstream: 200, then SSE chunks until the connection breaks."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.sent = 0

    def run(self):
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = conn.recv(65536)
            if not d:
                return
            buf += d
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(rest) < length:
            rest += conn.recv(65536)

        def chunk(delta):
            c = {"id": "chatcmpl-run", "object": "chat.completion.chunk",
                 "created": 1700000000, "model": "m",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            return ("data: " + json.dumps(c) + "\n\n").encode()

        first = chunk({"role": "assistant", "content": "hi"})
        piece = chunk({"content": "x" * PIECE})
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                         b"connection: close\r\n\r\n")
            conn.sendall(first)
            self.sent += len(first)
            while True:
                conn.sendall(piece)
                self.sent += len(piece)
        except OSError:
            pass
        finally:
            conn.close()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssPeak(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.01)


DOORS = {
    "messages": ("/v1/messages", lambda: {
        "model": "test-model", "max_tokens": 16, "stream": True,
        "messages": [{"role": "user", "content": "write forever"}]},
        {"x-api-key": KEY, "anthropic-version": "2023-06-01"}),
    "chat": ("/v1/chat/completions", lambda: {
        "model": "test-model", "max_tokens": 16, "stream": True,
        "messages": [{"role": "user", "content": "write forever"}]},
        {"authorization": "Bearer " + KEY}),
    "responses": ("/v1/responses", lambda: {
        "model": "test-model", "max_output_tokens": 16, "stream": True,
        "input": [{"role": "user", "content": "write forever"}]},
        {"authorization": "Bearer " + KEY}),
}


def one(relais_port, pid, door, slow):
    path, body, headers = DOORS[door]
    before = rss_kb(pid)
    peak = RssPeak(pid)
    peak.start()
    started = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", relais_port, timeout=30)
    c.request("POST", path, json.dumps(body()),
              {"content-type": "application/json", **headers})
    r = c.getresponse()
    rid = r.getheader("request-id")
    got = 0
    tail = b""
    while True:
        d = r.read1(4096) if slow else r.read1(1 << 20)
        if not d:
            break
        got += len(d)
        tail = (tail + d)[-600:]
        if slow:
            time.sleep(0.05)
        if time.monotonic() - started > 60:
            break
    took = time.monotonic() - started
    c.close()
    time.sleep(0.2)
    peak.stop = True
    peak.join()
    return {
        "door": door, "reader": "slow" if slow else "fast", "seconds": round(took, 2),
        "client_bytes": got, "rss_rise_mb": round((peak.peak - before) / 1024, 1),
        "ends_with": tail.decode(errors="replace").strip().splitlines()[-1][:160],
        "request_id": rid, "status": r.status,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--relais-bin", default="target/release/relais")
    a = ap.parse_args()
    up = Runaway()
    up.start()
    tmp = tempfile.mkdtemp(prefix="relais-probe-")
    port = free_port()
    cfg = os.path.join(tmp, "relais.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:{port}"

[[keys]]
name = "probe"
key = "{KEY}"

[providers.runaway]
api = "openai"
base_url = "http://127.0.0.1:{up.port}"
api_key_env = "PROBE_UPSTREAM_KEY"

[[models]]
id = "test-model"

[[models.endpoints]]
provider = "runaway"
upstream_model = "m"
price_input_per_mtok = 1000
price_output_per_mtok = 1000
""")
    env = dict(os.environ, PROBE_UPSTREAM_KEY="sk-upstream-probe", RELAIS_LOG="relais=warn")
    log = open(os.path.join(tmp, "relais.log"), "w")
    p = subprocess.Popen([a.relais_bin, "serve", "--config", cfg], env=env,
                         stdout=log, stderr=log)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        sys.exit("relais did not start")
    results = []
    try:
        for slow in (False, True):
            for door in DOORS:
                sent_before = up.sent
                res = one(port, p.pid, door, slow)
                res["upstream_bytes"] = up.sent - sent_before
                results.append(res)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    db = sqlite3.connect(os.path.join(tmp, "relais.db"))
    charged = dict(db.execute(
        "SELECT request_id, output_tokens || ' out, ' || input_tokens || ' in, ' "
        "|| status || '/' || coalesce(error_kind, '') FROM requests"))
    ok = True
    for r in results:
        r["charged"] = charged.get(r["request_id"], "NO ROW")
        out = int(r["charged"].split()[0]) if r["charged"] != "NO ROW" else 1 << 62
        good = (r["seconds"] < 10 and r["client_bytes"] < 8_000_000
                and r["rss_rise_mb"] < 64 and out <= 16)
        ok &= good
        r["ok"] = good
        print(json.dumps(r))
    print("probe:", "all bounds held" if ok else "A BOUND WAS MISSED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
