#!/usr/bin/env python3
"""Relais soak test with faults (Python 3 stdlib only). See docs/soak.md.

Starts a fake upstream (OpenAI chat completions and Anthropic messages on one port) that
injects faults at random: 500s, hangs, deaths mid-body, malformed JSON and runaway streams;
starts Relais (release build, SQLite ledger, metrics on) in front of it; drives mixed
traffic (all three doors, streaming and not) at a fixed concurrency for N minutes; reloads
the config (SIGHUP, with a changed price) every minute; samples Relais's RSS and open file
descriptors; at the end checks the log for panics and the ledger's rows against the
requests Relais answered or failed (after the documented flush).

    bench/soak --minutes 30 --relais-bin target/release/relais

Writes bench/results/soak-<time>/{summary.md,summary.json,samples.csv,relais.log}.
Exit 0 when every check passed, 1 when one failed, 2 on a setup error.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)

# Fault mix of the fake upstream, per request (weights).
FAULTS = {"ok": 62, "500": 10, "hang": 5, "death": 8, "malformed": 8, "runaway": 7}
RUNAWAY_CAP_S = 20       # a runaway answer stops by itself after this (if still read)
HANG_CAP_S = 60          # a hang ends by itself after this (if the peer is still there)
CLIENT_TIMEOUT_S = 90    # the load's bound on one request
CLIENT_MAX_BYTES = 1 << 20  # the load reads at most this much of an answer, then hangs up
MiB = 1024 * 1024


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the fake upstream


class Upstream:
    """One asyncio HTTP/1.1 server; chunked bodies so that a death is visible as such."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.counts = {k: 0 for k in FAULTS}
        self.open = 0

    def pick(self):
        k = self.rng.choices(list(FAULTS), weights=list(FAULTS.values()))[0]
        self.counts[k] += 1
        return k

    async def handle(self, reader, writer):
        self.open += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
                n = 0
                for ln in lines[1:]:
                    if ln.lower().startswith("content-length:"):
                        n = int(ln.split(":", 1)[1])
                body = await reader.readexactly(n) if n else b""
                try:
                    req = json.loads(body or b"{}")
                except ValueError:
                    req = {}
                keep = await self.answer(path, req, reader, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            self.open -= 1
            try:
                writer.close()
            except OSError:
                pass

    async def answer(self, path, req, reader, writer):
        anthropic = path.endswith("/messages")
        stream = bool(req.get("stream"))
        model = req.get("model", "m")
        fault = self.pick()
        if fault == "500":
            b = b'{"error":{"message":"injected 500","type":"server_error"}}'
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(b), b))
            await writer.drain()
            return True
        if fault == "hang":
            # Until the peer goes away (Relais's first-byte timeout) or the cap.
            try:
                await asyncio.wait_for(reader.read(1), HANG_CAP_S)
            except asyncio.TimeoutError:
                pass
            return False
        ctype = b"text/event-stream" if stream else b"application/json"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: " + ctype +
                     b"\r\ntransfer-encoding: chunked\r\n\r\n")

        def chunk(data):
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))

        if fault == "runaway":
            end = time.monotonic() + RUNAWAY_CAP_S
            piece = sse_delta(anthropic, model, "x" * 1000) if stream else b'"' + b"x" * 1000 + b'",'
            if not stream:
                chunk(b'{"id":"r","choices":[{"index":0,"message":{"role":"assistant","content":"')
            elif anthropic:
                chunk(anthropic_start(model))
            while time.monotonic() < end:
                chunk(piece * 4)
                await writer.drain()
                await asyncio.sleep(0.005)
            return False  # and no end: the cap is a death too
        parts = stream_parts(anthropic, model) if stream else [whole(anthropic, model)]
        if fault == "malformed":
            bad = b'data: {"choices":[{"delta":{"content":"br\n\n' if stream else b'{"id":"x","choices":[{"mess'
            parts = parts[:3] + [bad] + parts[3:] if stream else [bad]
        if fault == "death":
            if stream:
                parts = parts[: len(parts) // 2]
            else:
                parts = [parts[0][: len(parts[0]) // 2]]
        for p in parts:
            chunk(p)
            await writer.drain()
            if stream:
                await asyncio.sleep(0.002)
        if fault == "death":
            writer.transport.abort()
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def serve(self, port):
        srv = await asyncio.start_server(self.handle, "127.0.0.1", port, backlog=1024, limit=1 << 20)
        async with srv:
            await srv.serve_forever()


def anthropic_start(model):
    return sse("message_start", {"type": "message_start", "message": {
        "id": "msg_soak", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 1}}}) + \
        sse("content_block_start", {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "text", "text": ""}})


def sse(name, obj):
    return b"event: " + name.encode() + b"\ndata: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def sse_delta(anthropic, model, text):
    if anthropic:
        return sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": text}})
    return b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model,
                                   "choices": [{"index": 0, "delta": {"content": text}}]},
                                  separators=(",", ":")).encode() + b"\n\n"


def stream_parts(anthropic, model):
    words = [f"tok{i} " for i in range(12)] + ["soak-end"]
    if anthropic:
        return [anthropic_start(model)] + [sse_delta(True, model, w) for w in words] + [
            sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": 13}}),
            sse("message_stop", {"type": "message_stop"})]
    fin = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model,
           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    usage = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [],
             "usage": {"prompt_tokens": 5, "completion_tokens": 13, "total_tokens": 18}}
    return [sse_delta(False, model, w) for w in words] + [
        b"data: " + json.dumps(fin).encode() + b"\n\n", b"data: " + json.dumps(usage).encode() + b"\n\n",
        b"data: [DONE]\n\n"]


def whole(anthropic, model):
    if anthropic:
        o = {"id": "msg_soak", "type": "message", "role": "assistant", "model": model,
             "content": [{"type": "text", "text": "hello soak-end"}], "stop_reason": "end_turn",
             "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 3}}
    else:
        o = {"id": "c", "object": "chat.completion", "created": 0, "model": model,
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello soak-end"},
                          "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}
    return json.dumps(o).encode()


# ------------------------------------------------------------------ the load


DOORS = {
    "messages": "/v1/messages",
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
}


def request_body(door, model, stream):
    if door == "messages":
        d = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}
    elif door == "chat":
        d = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello"}]}
        if stream:
            d["stream_options"] = {"include_usage": True}
    else:
        d = {"model": model, "max_output_tokens": 64, "input": "Hello"}
    if stream:
        d["stream"] = True
    return json.dumps(d).encode()


class Load:
    def __init__(self, port, seed):
        self.port = port
        self.rng = random.Random(seed)
        self.stats = {}  # (door, stream, outcome) -> count
        self.sent = 0        # requests whose whole request was written
        self.no_conn = 0     # could not connect or write: Relais never saw a request
        self.running = True
        self.stream_share = 0.5

    def count(self, key):
        self.stats[key] = self.stats.get(key, 0) + 1

    async def one(self):
        door = self.rng.choice(list(DOORS))
        stream = self.rng.random() < self.stream_share
        model = self.rng.choice(["soak-oa", "soak-mixed"])
        body = request_body(door, model, stream)
        head = (f"POST {DOORS[door]} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer sk-soak-key\r\n"
                f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        kind = ("stream" if stream else "json")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            self.no_conn += 1
            return
        try:
            writer.write(head + body)
            await writer.drain()
        except OSError:
            self.no_conn += 1
            writer.close()
            return
        self.sent += 1
        outcome = "?"
        try:
            got = bytearray()
            deadline = time.monotonic() + CLIENT_TIMEOUT_S
            while len(got) < CLIENT_MAX_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    outcome = "client-timeout"
                    break
                b = await asyncio.wait_for(reader.read(65536), left)
                if not b:
                    break
                got += b
            else:
                outcome = "client-hung-up-at-1MiB"
            if outcome == "?":
                status = got[9:12].decode("latin-1", "replace") if got.startswith(b"HTTP/1.1 ") else "none"
                if status == "200" and stream:
                    done = (b"message_stop" in got or b"[DONE]" in got or b"response.completed" in got)
                    outcome = "200-complete" if done else ("200-error-event" if (b"event: error" in got or b"response.failed" in got or b'data: {"error"' in got) else "200-cut")
                else:
                    outcome = status
        except asyncio.TimeoutError:
            outcome = "client-timeout"
        except OSError:
            outcome = "reset"
        finally:
            writer.close()
        self.count((door, kind, outcome))

    async def worker(self):
        while self.running:
            await self.one()

    async def run(self, conc, seconds):
        tasks = [asyncio.create_task(self.worker()) for _ in range(conc)]
        await asyncio.sleep(seconds)
        self.running = False
        await asyncio.gather(*tasks)


# ------------------------------------------------------------------ Relais


CONFIG = """# generated by bench/soak.py
[server]
listen = "127.0.0.1:{port}"

[[keys]]
name = "soak"
key = "sk-soak-key"

[ledger]
enabled = true

[metrics]
enabled = true

[providers.oa1]
api = "openai"
base_url = "http://127.0.0.1:{up}/v1"
eu_native = true
zero_data_retention = true
first_byte_timeout_s = 3
idle_timeout_s = 3

[providers.oa2]
api = "openai"
base_url = "http://127.0.0.1:{up}/v1"
eu_native = true
zero_data_retention = true
first_byte_timeout_s = 3
idle_timeout_s = 3

[providers.an]
api = "anthropic"
base_url = "http://127.0.0.1:{up}/v1"
eu_native = true
zero_data_retention = true
first_byte_timeout_s = 3
idle_timeout_s = 3

[[models]]
id = "soak-oa"
[[models.endpoints]]
provider = "oa1"
upstream_model = "up-a"
context_window = 100000
max_output_tokens = 4096
price_input_per_mtok = 0.1
price_output_per_mtok = {price}
[[models.endpoints]]
provider = "oa2"
upstream_model = "up-b"
context_window = 100000
max_output_tokens = 4096
price_input_per_mtok = 0.1
price_output_per_mtok = 0.3

[[models]]
id = "soak-mixed"
[[models.endpoints]]
provider = "an"
upstream_model = "up-an"
context_window = 100000
max_output_tokens = 4096
price_input_per_mtok = 0.1
price_output_per_mtok = {price}
[[models.endpoints]]
provider = "oa1"
upstream_model = "up-c"
context_window = 100000
max_output_tokens = 4096
price_input_per_mtok = 0.1
price_output_per_mtok = 0.3
"""


def proc_sample(pid):
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, hwm, fds


def upstream_sockets(pid, up_port):
    """Relais's open sockets connected to the fake upstream (reqwest's idle pool)."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as fh:
                next(fh)
                for line in fh:
                    f = line.split()
                    if int(f[2].rsplit(":", 1)[1], 16) == up_port:
                        inodes.add(f[9])
        except OSError:
            pass
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            n += 1
    return n


def ledger_rows(binp, cfg):
    r = subprocess.run([binp, "usage", "--config", cfg, "--by", "day", "--json"],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return None, (r.stderr or r.stdout).strip()[-300:]
    try:
        return sum(x["requests"] for x in json.loads(r.stdout)["data"]), None
    except (ValueError, KeyError, TypeError) as e:
        return None, f"unreadable `relais usage` output: {e}"


async def soak(a, out):
    up_port, port = free_port(), free_port()
    cfg = os.path.join(out, "relais.toml")

    def write_cfg(i):
        with open(cfg, "w") as fh:
            fh.write(CONFIG.format(port=port, up=up_port, price=0.3 + 0.01 * (i % 5)))

    write_cfg(0)
    up = Upstream(a.seed)
    up.port = up_port
    up_task = asyncio.create_task(up.serve(up_port))
    logf = open(os.path.join(out, "relais.log"), "w")
    env = dict(os.environ, RELAIS_LOG=a.relais_log)
    rp = subprocess.Popen([a.relais_bin, "serve", "--config", cfg], stdout=logf, stderr=subprocess.STDOUT, env=env)
    try:
        return await drive(a, out, rp, up, port, cfg, write_cfg)
    finally:
        if rp.poll() is None:
            rp.kill()
        up_task.cancel()


async def drive(a, out, rp, up, port, cfg, write_cfg):
    for _ in range(300):  # bounded wait for the listener
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            if rp.poll() is not None:
                raise SystemExit(f"relais exited with {rp.returncode}")
            await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    samples = []
    idle = proc_sample(rp.pid)
    t0 = time.monotonic()
    load = Load(port, a.seed + 1)
    load.stream_share = a.stream_share
    reloads = 0
    samples_path = os.path.join(out, "samples.csv")
    csv = open(samples_path, "w")
    csv.write("t_s,rss_bytes,hwm_bytes,fds,requests_sent,upstream_open\n")

    async def sampler():
        nonlocal reloads
        next_reload = t0 + 60
        while load.running:
            rss, hwm, fds = proc_sample(rp.pid)
            t = time.monotonic() - t0
            samples.append((t, rss, hwm, fds))
            csv.write(f"{t:.1f},{rss},{hwm},{fds},{load.sent},{up.open}\n")
            csv.flush()
            if time.monotonic() >= next_reload:
                reloads += 1
                write_cfg(reloads)
                rp.send_signal(signal.SIGHUP)
                next_reload += 60
                log(f"{t/60:5.1f} min: reload {reloads}; rss {rss/MiB:.1f} MiB, fds {fds}, sent {load.sent}")
            await asyncio.sleep(a.sample_s)

    st = asyncio.create_task(sampler())
    await load.run(a.concurrency, a.minutes * 60)
    await st
    t_load = time.monotonic() - t0
    # The ledger writes a batch at most `flush_ms` (200 ms) after a record: wait well past it,
    # and for streams Relais may still be closing.
    await asyncio.sleep(10)
    after = proc_sample(rp.pid)
    pooled = upstream_sockets(rp.pid, up.port)
    rows_live, note_live = ledger_rows(a.relais_bin, cfg)
    rp.send_signal(signal.SIGTERM)
    for _ in range(600):
        if rp.poll() is not None:
            break
        await asyncio.sleep(0.1)
    rows_final, note_final = ledger_rows(a.relais_bin, cfg)
    with open(os.path.join(out, "relais.log"), errors="replace") as fh:
        logtext = fh.read()
    panics = sum(1 for ln in logtext.splitlines() if "panick" in ln)
    reload_errors = sum(1 for ln in logtext.splitlines() if "reload" in ln.lower() and ("ERROR" in ln or "WARN" in ln))
    return summarize(a, out, samples, idle, after, pooled, load, up, reloads, t_load, rows_live, note_live,
                     rows_final, note_final, panics, reload_errors, rp.returncode)


def summarize(a, out, samples, idle, after, pooled, load, up, reloads, t_load, rows_live, note_live,
              rows_final, note_final, panics, reload_errors, rc):
    warm = [s for s in samples if s[0] >= 60] or samples
    q1 = [s for s in warm if s[0] <= warm[0][0] + (warm[-1][0] - warm[0][0]) / 4] or warm
    q4 = [s for s in warm if s[0] >= warm[-1][0] - (warm[-1][0] - warm[0][0]) / 4] or warm
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    rss_q1, rss_q4 = mean([s[1] for s in q1]), mean([s[1] for s in q4])
    fds_q1, fds_q4 = mean([s[3] for s in q1]), mean([s[3] for s in q4])
    answered = sum(v for k, v in load.stats.items())
    by_outcome = {}
    for (door, kind, outcome), v in sorted(load.stats.items()):
        by_outcome.setdefault(f"{door}/{kind}", {})[outcome] = v
    res = {
        "minutes": a.minutes, "concurrency": a.concurrency, "load_seconds": round(t_load, 1),
        "requests_sent": load.sent, "requests_finished_by_client": answered, "connect_failures": load.no_conn,
        "requests_per_s": round(load.sent / t_load, 1),
        "outcomes": by_outcome, "upstream_faults": up.counts, "reloads": reloads,
        "rss_mib": {"idle": round(idle[0] / MiB, 1), "first_quarter_mean": round(rss_q1 / MiB, 1),
                    "last_quarter_mean": round(rss_q4 / MiB, 1), "max": round(max(s[1] for s in samples) / MiB, 1),
                    "peak_hwm": round(max(s[2] for s in samples) / MiB, 1),
                    "end_10s_after_load": round(after[0] / MiB, 1)},
        "fds": {"idle": idle[2], "first_quarter_mean": round(fds_q1, 1), "last_quarter_mean": round(fds_q4, 1),
                "max": max(s[3] for s in samples), "end_10s_after_load": after[2],
                "end_idle_upstream_pool_sockets": pooled},
        "ledger_rows_live_10s_after": rows_live, "ledger_rows_after_shutdown": rows_final,
        "ledger_notes": [n for n in (note_live, note_final) if n],
        "panics_in_log": panics, "reload_warnings_in_log": reload_errors, "relais_exit_code": rc,
    }
    checks = {
        "no panic": panics == 0,
        "RSS flat (last quarter within 32 MiB of the first)": rss_q4 - rss_q1 < 32 * MiB,
        "fds flat (last quarter within 16 of the first)": fds_q4 - fds_q1 < 16,
        "fds back to idle after the load (+4, idle upstream pool sockets aside)": after[2] - pooled <= idle[2] + 4,
        "ledger rows (after shutdown) == requests sent": rows_final == load.sent,
        "ledger rows (live, 10 s after) == requests sent": rows_live == load.sent,
        "clean exit on SIGTERM": rc == 0,
    }
    res["checks"] = checks
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(res, fh, indent=2)
    md = [f"# Soak: {a.minutes} min at c={a.concurrency}, faults {FAULTS}", "",
          f"- requests sent {load.sent} ({res['requests_per_s']}/s), connect failures {load.no_conn}, reloads {reloads}",
          f"- RSS MiB: idle {res['rss_mib']['idle']}, first quarter {res['rss_mib']['first_quarter_mean']}, "
          f"last quarter {res['rss_mib']['last_quarter_mean']}, max {res['rss_mib']['max']}, "
          f"end {res['rss_mib']['end_10s_after_load']}",
          f"- fds: idle {idle[2]}, first quarter {fds_q1:.0f}, last quarter {fds_q4:.0f}, "
          f"max {res['fds']['max']}, end {after[2]} ({pooled} of them idle pooled upstream connections)",
          f"- ledger rows: {rows_live} live (10 s after the load), {rows_final} after shutdown; "
          f"requests sent {load.sent} {res['ledger_notes'] or ''}",
          f"- panics in the log: {panics}; reload warnings: {reload_errors}; exit code {rc}",
          f"- upstream faults drawn: {up.counts}", "", "| door/kind | outcomes |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in by_outcome.items()]
    md += ["", "| check | result |", "|---|---|"] + [f"| {k} | {'ok' if v else 'FAILED'} |" for k, v in checks.items()]
    with open(os.path.join(out, "summary.md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0 if all(checks.values()) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--relais-bin", default=os.path.join(ROOT, "target", "release", "relais"))
    ap.add_argument("--relais-log", default="warn", help="RELAIS_LOG for Relais (default warn: panics and "
                    "failures logged, not one line per request)")
    ap.add_argument("--sample-s", type=float, default=5)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--faults", help="the upstream's fault weights, e.g. ok=50,runaway=50 (default "
                    + ",".join(f"{k}={v}" for k, v in FAULTS.items()) + ")")
    ap.add_argument("--stream-share", type=float, default=0.5, help="share of streaming requests")
    ap.add_argument("--out", help="results folder (default bench/results/soak-<time>)")
    a = ap.parse_args()
    if a.faults:
        FAULTS.clear()
        for kv in a.faults.split(","):
            k, _, v = kv.partition("=")
            if k not in ("ok", "500", "hang", "death", "malformed", "runaway") or not v.isdigit():
                log(f"--faults: unknown fault or weight {kv!r}")
                return 2
            FAULTS[k] = int(v)
    if not os.access(a.relais_bin, os.X_OK):
        log(f"no Relais binary at {a.relais_bin}: build it (cargo build --release) or pass --relais-bin")
        return 2
    out = a.out or os.path.join(BENCH, "results", time.strftime("soak-%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    log(f"results in {out}")
    return asyncio.run(soak(a, out))


if __name__ == "__main__":
    sys.exit(main())
