#!/usr/bin/env python3
"""Memory probes for the client-side bounds (issue 15), each on a fresh Relais process
at the shipped defaults (release build). Figures go in docs/limits.md.

    cargo build --release && python3 scripts/probes/client_bounds.py [target/release/relais]

Probes:
  messages   one 31 MB body: 10 million `{}` in `metadata.x` on /v1/messages
  chat       the same in an unknown field on /v1/chat/completions
  four       four of the `messages` bodies at once
  trickle    10 connections declaring a 33 MB body, sending it 1 byte per segment for 8 s
For each: idle RSS, peak RSS rise (VmHWM - idle), the answers, and how long RSS takes to
come back within 32 MB of idle (checked for 10 s after the burst).
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/relais"
KEY = "sk-probe-0123456789"
MB = 1024 * 1024
# Seconds between two 1-byte sends of the trickle probe (0: as fast as Python sends).
PAUSE = float(os.environ.get("TRICKLE_PAUSE", "0"))

CONFIG = """
[server]
listen = "127.0.0.1:{port}"

[[keys]]
name = "probe"
key = "{key}"

[providers.nowhere]
api = "openai"
base_url = "http://127.0.0.1:9/v1"

[[models]]
id = "m"

[[models.endpoints]]
provider = "nowhere"
upstream_model = "m"
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


class Relais:
    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory()
        cfg = os.path.join(self.dir.name, "relais.toml")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(port=self.port, key=KEY))
        self.proc = subprocess.Popen(
            [BIN, "serve", "--config", cfg],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("relais did not start")
        time.sleep(0.5)
        self.idle = status_kb(self.proc.pid, "VmRSS")

    def rss(self):
        return status_kb(self.proc.pid, "VmRSS")

    def peak(self):
        return status_kb(self.proc.pid, "VmHWM")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.dir.cleanup()


def post(port, path, body, headers):
    """One HTTP/1.1 POST on a raw socket; returns (status, first 300 bytes of the body)."""
    s = socket.create_connection(("127.0.0.1", port))
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    s.sendall(head.encode() + body)
    data = b""
    s.settimeout(60)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    status = int(data.split(b" ", 2)[1]) if data else 0
    return status, data.split(b"\r\n\r\n", 1)[-1][:300].decode(errors="replace")


def empty_objects_body(prefix, n=10_000_000):
    return prefix + b"{}," * (n - 1) + b"{}]}}"


MESSAGES = empty_objects_body(
    b'{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}],'
    b'"metadata":{"x":['
)
CHAT = empty_objects_body(
    b'{"model":"m","messages":[{"role":"user","content":"hi"}],"unused":{"x":['
)
ANTHROPIC = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
OPENAI = {"authorization": f"Bearer {KEY}"}


def settle(r, within_kb=32 * 1024, limit_s=10.0):
    """Seconds until RSS is within 32 MB of idle (None: not within limit_s)."""
    start = time.time()
    while time.time() - start < limit_s:
        if r.rss() - r.idle <= within_kb:
            return round(time.time() - start, 2)
        time.sleep(0.1)
    return None


def report(name, r, answers, extra=""):
    rise = (r.peak() - r.idle) / 1024
    back = settle(r)
    after = (r.rss() - r.idle) / 1024
    print(
        f"{name:9} idle {r.idle / 1024:6.1f} MB  peak rise {rise:7.1f} MB  "
        f"back within 32 MB after {back} s (now +{after:.1f} MB)  {extra}"
    )
    for a in sorted(set(answers)):
        print(f"          answer: {a[0]} {a[1][:160]}")


def probe_one(name, path, body, headers, n=1):
    r = Relais()
    answers = []
    threads = [
        threading.Thread(target=lambda: answers.append(post(r.port, path, body, headers)))
        for _ in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report(name, r, answers, f"body {len(body) / 1e6:.1f} MB x {n}")
    r.stop()


def trickle(seconds=8.0, conns=10, declared=33_000_000):
    r = Relais()
    sent = [0] * conns
    answers = []
    stop = time.time() + seconds

    def one(i):
        s = socket.create_connection(("127.0.0.1", r.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = (
            f"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"x-api-key: {KEY}\r\nanthropic-version: 2023-06-01\r\n"
            f"content-length: {declared}\r\n\r\n"
        )
        s.sendall(head.encode())
        s.sendall(b'{"model":"m","pad":"')
        try:
            while time.time() < stop:
                s.send(b"x")
                sent[i] += 1
                if PAUSE:
                    time.sleep(PAUSE)
        except OSError as e:
            answers.append((0, f"send failed: {e}"))
        s.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report("trickle", r, answers, f"{conns} conns, {sum(sent) / 1e6:.2f} MB sent in all")
    r.stop()


if __name__ == "__main__":
    which = sys.argv[2:] or ["messages", "chat", "four", "trickle"]
    if "messages" in which:
        probe_one("messages", "/v1/messages", MESSAGES, ANTHROPIC)
    if "chat" in which:
        probe_one("chat", "/v1/chat/completions", CHAT, OPENAI)
    if "four" in which:
        probe_one("four", "/v1/messages", MESSAGES, ANTHROPIC, n=4)
    if "trickle" in which:
        trickle()
