#!/usr/bin/env python3
"""Instructions per request of Relais variants, counted by callgrind (repeatable whatever
else the machine does, unlike wall-clock throughput): the fake upstream, then each variant
under `valgrind --tool=callgrind`, a warm-up, counters zeroed, N requests at concurrency C,
counters dumped. Kernel time and cache effects are not counted: this splits Relais's own
CPU work per request by function, the throughput runs (`bench/run`) say what it costs.

  bench/cg.py --relais-bin target/release/relais --requests 2000 \
      off=bench/variants/off.toml metrics-on=bench/variants/metrics-on.toml \
      ledger-sqlite=bench/variants/ledger-sqlite.toml

A realistic request instead of the bench's small one: `--body-from FILE` (a JSON file
holding a Messages body, or an object with it under "body", such as
../shared/reference/claude-code-request.json: ~25 KB, most of it tool schemas; its model is
replaced, its `stream` and `metadata` dropped) and `--header "NAME: VALUE"` (e.g.
`x-relais-session: s1`, so that no opening digest is made). docs/hot-path.md uses both.
`--responses-body-from FILE` sends a Responses API body (Codex's, say) to `/v1/responses`
instead (its model replaced, `stream` false).

Writes callgrind.out.<variant> under --out (default bench/results/cg-<time>/);
`callgrind_annotate <file>` shows where the instructions went.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the harness: config template, bodies, helpers)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--relais-bin", default="target/release/relais")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--postgres", action="store_true")
    ap.add_argument("--body-from", help="a Messages body to send instead of the bench's (see above)")
    ap.add_argument("--header", action="append", default=[], help="an extra request header, NAME: VALUE")
    ap.add_argument("--responses-body-from", help="a Responses API body, sent to /v1/responses (see above)")
    ap.add_argument("--out")
    ap.add_argument("variants", nargs="+", help="NAME=FILE (a config snippet, as bench/run)")
    a = ap.parse_args()
    out = a.out or os.path.join(bench.ROOT, "bench", "results", time.strftime("cg-%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    try:
        pg = bench.start_postgres(out, None) if a.postgres else None
        up_port = bench.free_port()
        bench.start("upstream", [bench.UPSTREAM, "--listen", f"127.0.0.1:{up_port}"],
                    os.path.join(out, "upstream.log"))
        time.sleep(0.5)
        rows = []
        for v in a.variants:
            name, path = bench.parse_variant(v)
            rows.append((name, measure(a, name, bench.read_extra(path, pg), up_port, out)))
        base = rows[0][1]
        print(f"\n{'variant':<18}{'instr/request':>16}{'vs ' + rows[0][0]:>16}")
        for name, ir in rows:
            print(f"{name:<18}{ir:>16,.0f}{ir - base:>+16,.0f}")
    finally:
        bench.stop_all()
        for c in reversed(bench.CLEANUP):
            c()


def measure(a, name, extra, up_port, out):
    rport = bench.free_port()
    cfg = bench.RELAIS_CONFIG.format(port=rport, up=up_port) + bench.RELAIS_MODEL.format(
        mode="instant") + extra
    d = tempfile.mkdtemp(prefix=f"cg-{name}-", dir=out)
    cfg_path = os.path.join(d, "relais.toml")
    with open(cfg_path, "w") as fh:
        fh.write(cfg)
    cg_out = os.path.join(out, f"callgrind.out.{name}")
    p = bench.start(name, ["valgrind", "--tool=callgrind", "--compress-strings=no", "--compress-pos=no",
                           f"--callgrind-out-file={cg_out}",
                           a.relais_bin, "serve", "--config", cfg_path],
                    os.path.join(out, f"{name}.log"))
    t = bench.Target(name, f"http://127.0.0.1:{rport}/v1/messages", "anthropic", "bench-",
                     ["x-api-key: sk-bench", "anthropic-version: 2023-06-01"], p.pid)
    bench.wait_ready(t, p, 120)  # with a Messages request, whichever door is measured
    if a.responses_body_from:
        t.url = f"http://127.0.0.1:{rport}/v1/responses"
    load(a, t, a.warmup)
    subprocess.run(["callgrind_control", "--zero", str(p.pid)], check=True, capture_output=True)
    n = load(a, t, a.requests)
    subprocess.run(["callgrind_control", "--dump", str(p.pid)], check=True, capture_output=True)
    time.sleep(1)  # the ledger's writer flushes (flush_ms) after the last request
    subprocess.run(["callgrind_control", "--dump", str(p.pid)], check=True, capture_output=True)
    p.terminate()
    p.wait(timeout=60)
    total = 0
    for part in (".1", ".2"):  # the requests, then the ledger's last flush
        total += summary(cg_out + part)
    return total / n


def summary(path):
    with open(path) as fh:
        for line in fh:
            m = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    return 0


def request_body(a, t):
    if a.responses_body_from:
        with open(a.responses_body_from) as fh:
            d = json.load(fh)
        d["model"], d["stream"] = t.model("instant"), False
        return json.dumps(d)
    if a.body_from:
        return bench.messages_body(a.body_from, t.model("instant"), a.stream)
    return bench.body(t.fmt, t.model("instant"), a.stream)


def load(a, t, n):
    cmd = [bench.LOAD, "run", "--url", t.url, "--format", t.fmt,
           "--body", request_body(a, t),
           "--concurrency", str(a.concurrency), "--duration-ms", "600000",
           "--warmup-ms", "0", "--max-requests", str(n), "--expect", "bench-end"]
    for h in t.headers + a.header:
        cmd += ["--header", h]
    if a.stream:
        cmd.append("--stream")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise bench.Fatal(f"load failed: {r.stderr[-1000:]}")
    m = re.search(r'"requests":\s*(\d+)', r.stdout)
    return int(m.group(1)) if m else n


if __name__ == "__main__":
    main()
