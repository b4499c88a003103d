#!/usr/bin/env python3
"""Cache-sticky sessions, measured (see docs/sessions.md). Python 3 stdlib only.

Starts N fake OpenAI-compatible upstreams on free 127.0.0.1 ports, each with a real prefix
cache: a request's cached tokens are the longest prefix (in whole blocks of BLOCK tokens,
as vLLM's prefix cache counts) of its prompt that this endpoint has already seen, and it
reports them in `usage.prompt_tokens_details.cached_tokens`; prefill time is charged for
the uncached tokens only. Then it starts Relais (the binary given) in front of them as N
near-equal endpoints of one model (same prices and priors, so without pinning the router
shares load among them at random), replays multi-turn agent conversations (a long system
prompt and tool list, then turns that each add a user message and the assistant's answer),
several conversations interleaved, and reports the cache hit ratio, the cost Relais
charged and the latency, with sessions on (the shipped default) and off.

    cargo build --profile quick && bench/sessions.py --relais-bin $CARGO_TARGET_DIR/quick/relais
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOCK = 16
PREFILL_S_PER_TOKEN = 20e-6  # 20 µs per uncached prompt token (50k tokens/s prefill)
DECODE_S = 0.02  # fixed generation time per answer


def tokens(messages):
    """A deterministic tokenisation: words of the messages' contents, role-tagged."""
    out = []
    for m in messages:
        out.append("<" + m["role"] + ">")
        out.extend(str(m.get("content") or "").split())
    return out


class Cache:
    """One endpoint's prefix cache: hashes of every whole-block prefix it has seen."""

    def __init__(self):
        self.seen = set()
        self.lock = threading.Lock()

    def lookup_and_insert(self, toks):
        h = hashlib.sha256()
        cached = 0
        keys = []
        for i in range(0, len(toks) - len(toks) % BLOCK, BLOCK):
            h.update(" ".join(toks[i : i + BLOCK]).encode())
            keys.append(h.hexdigest())
        with self.lock:
            for n, k in enumerate(keys):
                if k in self.seen:
                    cached = (n + 1) * BLOCK
                else:
                    break
            self.seen.update(keys)
        return cached


def upstream(name):
    cache = Cache()
    stats = {"requests": 0, "prompt": 0, "cached": 0}

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            n = int(self.headers.get("content-length", "0"))
            req = json.loads(self.rfile.read(n))
            toks = tokens(req["messages"])
            cached = cache.lookup_and_insert(toks)
            stats["requests"] += 1
            stats["prompt"] += len(toks)
            stats["cached"] += cached
            time.sleep((len(toks) - cached) * PREFILL_S_PER_TOKEN + DECODE_S)
            text = f"done by {name}: " + " ".join(f"w{i}" for i in range(40))
            usage = {
                "prompt_tokens": len(toks),
                "completion_tokens": 42,
                "total_tokens": len(toks) + 42,
                "prompt_tokens_details": {"cached_tokens": cached},
            }
            if req.get("stream"):
                # Relais streams whole answers upstream by default (stream_whole_answers).
                def frame(choices, extra=None):
                    d = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 0,
                         "model": req["model"], "choices": choices}
                    d.update(extra or {})
                    return f"data: {json.dumps(d)}\n\n"
                body = (
                    frame([{"index": 0, "delta": {"role": "assistant", "content": text}}])
                    + frame([{"index": 0, "delta": {}, "finish_reason": "stop"}])
                    + frame([], {"usage": usage})
                    + "data: [DONE]\n\n"
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            body = json.dumps(
                {
                    "id": "chatcmpl-x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": req["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": len(toks),
                        "completion_tokens": 42,
                        "total_tokens": len(toks) + 42,
                        "prompt_tokens_details": {"cached_tokens": cached},
                    },
                }
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, stats


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def config(ports, listen, sessions_on, json_answers=False):
    out = [
        f'[server]\nlisten = "{listen}"\n',
        "[ledger]\nenabled = false\n",
        f"[sessions]\nenabled = {'true' if sessions_on else 'false'}\n",
    ]
    for i, p in enumerate(ports):
        out.append(
            f'[providers.p{i}]\napi = "openai"\nbase_url = "http://127.0.0.1:{p}/v1"\n'
            + ("stream_whole_answers = false\n" if json_answers else "")
        )
    out.append('[[models]]\nid = "agent"\n')
    for i in range(len(ports)):
        out.append(
            "[[models.endpoints]]\n"
            f'provider = "p{i}"\nupstream_model = "m"\n'
            "price_input_per_mtok = 1.0\nprice_cached_input_per_mtok = 0.1\n"
            "price_output_per_mtok = 4.0\nprior_ttft_ms = 300\nprior_tokens_per_s = 60\n"
        )
    return "\n".join(out)


def conversation(rng, cid, turns):
    """An agent conversation: a long system prompt and tools, then `turns` turns."""
    system = " ".join(f"sys{cid % 3}_{i}" for i in range(3000))  # shared by a few agents
    msgs = [{"role": "system", "content": system}]
    for t in range(turns):
        words = rng.randint(100, 600)  # a tool result or an instruction
        msgs.append(
            {"role": "user", "content": " ".join(f"c{cid}t{t}w{i}" for i in range(words))}
        )
        yield msgs
        msgs.append({"role": "assistant", "content": f"turn {t} " + "ok " * 40})


def post(url, body, headers):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=60) as r:
        data = json.loads(r.read())
        h = dict(r.headers)
    return time.monotonic() - t0, data, h


def run(relais_bin, sessions_on, args):
    ups = [upstream(f"p{i}") for i in range(args.endpoints)]
    port = free_port()
    d = tempfile.mkdtemp(prefix="relais-sessions-bench-")
    cfg = os.path.join(d, "relais.toml")
    with open(cfg, "w") as f:
        f.write(config([s.server_address[1] for s, _ in ups], f"127.0.0.1:{port}", sessions_on, args.json_answers))
    log = open(os.path.join(d, "relais.log"), "w")
    proc = subprocess.Popen(
        [relais_bin, "serve", "--config", cfg], stdout=log, stderr=log, env={**os.environ, "RELAIS_LOG": "warn"}
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit(f"relais did not start; see {d}/relais.log")
        rng = random.Random(args.seed)
        convs = [(cid, conversation(rng, cid, args.turns)) for cid in range(args.conversations)]
        cost = 0.0
        lat = []
        pins = {}

        def one(cid, msgs):
            body = {"model": "agent", "max_tokens": 64, "messages": msgs}
            headers = {"content-type": "application/json", "x-session-id": f"conv-{cid}"}
            return post(base + "/v1/chat/completions", body, headers)

        # Conversations advance together, `parallel` requests at a time: turn t of every
        # conversation, then turn t + 1 (an agent waits for its answer before its next turn).
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as ex:
            for _ in range(args.turns):
                futs = [ex.submit(one, cid, list(next(g))) for cid, g in convs]
                for f in futs:
                    dt, data, h = f.result()
                    lat.append(dt)
                    cost += float(h.get("x-relais-cost-eur", "0"))
                    p = h.get("x-relais-session-pin", "off").split(":")[0]
                    pins[p] = pins.get(p, 0) + 1
        prompt = sum(s["prompt"] for _, s in ups)
        cached = sum(s["cached"] for _, s in ups)
        lat.sort()
        return {
            "sessions": "on" if sessions_on else "off",
            "requests": len(lat),
            "prompt_tokens": prompt,
            "cached_tokens": cached,
            "hit_ratio": cached / prompt if prompt else 0.0,
            "cost_eur": cost,
            "latency_p50_ms": 1000 * lat[len(lat) // 2],
            "latency_mean_ms": 1000 * sum(lat) / len(lat),
            "per_endpoint": [s["requests"] for _, s in ups],
            "pins": pins,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for s, _ in ups:
            s.shutdown()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--relais-bin", required=True)
    ap.add_argument("--endpoints", type=int, default=3)
    ap.add_argument("--conversations", type=int, default=12)
    ap.add_argument("--turns", type=int, default=12)
    ap.add_argument("--parallel", type=int, default=6)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--json-answers",
        action="store_true",
        help="stream_whole_answers = false: no speed samples, so the endpoints stay exactly "
        "near-equal and share load at random without pinning",
    )
    args = ap.parse_args()
    rows = [run(args.relais_bin, on, args) for on in (False, True)]
    print(
        f"{args.conversations} conversations x {args.turns} turns over {args.endpoints} "
        f"near-equal endpoints ({args.parallel} in flight), prefix cache blocks of {BLOCK}\n"
    )
    print("| sessions | requests | prompt tokens | cached | hit ratio | cost EUR | p50 ms | mean ms | per endpoint | pin headers |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['sessions']} | {r['requests']} | {r['prompt_tokens']} | {r['cached_tokens']} "
            f"| {r['hit_ratio']:.1%} | {r['cost_eur']:.4f} | {r['latency_p50_ms']:.0f} "
            f"| {r['latency_mean_ms']:.0f} | {r['per_endpoint']} | {r['pins']} |"
        )
    off, on = rows
    if off["cost_eur"] > 0:
        print(f"\ncost with pinning: {on['cost_eur'] / off['cost_eur']:.1%} of without")
    json.dump(rows, sys.stderr)
    print(file=sys.stderr)


if __name__ == "__main__":
    main()
