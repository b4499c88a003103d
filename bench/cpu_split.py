#!/usr/bin/env python3
"""Relais's user and system CPU per request, for variants run alternately, each run in a
fresh process: where a feature's cost goes in real time, which callgrind (`bench/cg.py`)
cannot see (the kernel's side of its syscalls, SHA-NI). Relais on one core, the fake
upstream and the load on the other, non-streaming at `-c` (default 64); the CPU is read
from /proc/<pid>/stat before and after each run. With `--syscalls`, a second run of each
variant under `perf stat` counts the syscalls per request (perf slows that run: its CPU is
not reported).

  bench/cpu_split.py --relais-bin target/release/relais --repeats 5 \\
      defaults=bench/variants/receipts-on.toml \\
      both-off=bench/variants/sessions-receipts-off.toml --syscalls

Medians over the repeats; the first variant is the reference of the differences.
`--variant-bin NAME=BIN` runs variant NAME with another build (e.g. a change against its
base, same config, one run: `base=EMPTY.toml new=EMPTY.toml --variant-bin new=NEW/relais`).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the harness: upstream, configs, load generator)

SYSCALLS = ["writev", "write", "recvfrom", "pwrite64", "pread64", "fsync", "fdatasync",
            "futex", "epoll_wait", "sched_yield"]


def load(target, body, c, ms, cpus):
    cmd = [bench.LOAD, "run", "--url", target.url, "--format", "anthropic", "--body", body,
           "--concurrency", str(c), "--duration-ms", str(ms), "--warmup-ms", "0"]
    for h in target.headers:
        cmd += ["--header", h]
    r = subprocess.run(cmd, capture_output=True, timeout=ms / 1000 + 60, preexec_fn=bench.pin(cpus))
    if r.returncode != 0 or not r.stdout:
        raise bench.Fatal(f"load generator failed: {r.stderr.decode(errors='replace')[-1000:]}")
    return json.loads(r.stdout)["requests"]


def cpu_ticks(pid):
    # Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return int(f[11]), int(f[12])


def one(a, name, extra, up_port, out, body, syscalls):
    """(req/s, user µs/request, system µs/request, {syscall: per request})."""
    logdir = os.path.join(out, f"{name}-{time.monotonic_ns()}")
    binary = a.bins.get(name, a.relais_bin)
    target, proc = bench.start_relais(name, binary, up_port, extra, logdir, [1], None)
    try:
        load(target, body, a.concurrency, 1000, [0])  # warm-up: connections, pins, pages
        u0, s0 = cpu_ticks(proc.pid)
        n = load(target, body, a.concurrency, int(a.seconds * 1000), [0])
        u1, s1 = cpu_ticks(proc.pid)
        if n <= 0:
            raise bench.Fatal(f"{name}: no request was answered")
        counts = syscall_counts(a, target, body, proc.pid) if syscalls else {}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(logdir, ignore_errors=True)
    tick = os.sysconf("SC_CLK_TCK")
    return n / a.seconds, (u1 - u0) / tick / n * 1e6, (s1 - s0) / tick / n * 1e6, counts


def syscall_counts(a, target, body, pid):
    """Syscalls per request of one more run, counted by `perf stat` (tracepoints)."""
    events = ",".join(f"syscalls:sys_enter_{s}" for s in SYSCALLS)
    ps = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(pid)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.2)
        m = load(target, body, a.concurrency, int(a.seconds * 1000), [0])
        ps.send_signal(2)  # perf stat prints its counts on SIGINT
        _, err = ps.communicate(timeout=30)
    finally:
        if ps.poll() is None:
            ps.kill()
            ps.wait()
    counts = {}
    for line in err.splitlines():
        q = line.split(",")
        if len(q) > 2 and q[0].strip().isdigit():
            counts[q[2].replace("syscalls:sys_enter_", "")] = int(q[0]) / max(1, m)
    if len(counts) < len(SYSCALLS):
        # Not counted (no tracepoints, no permission): say so rather than print zeros.
        raise bench.Fatal(f"perf stat counted {sorted(counts)} only:\n{err[-1000:]}")
    return counts


def med(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--relais-bin", default="target/release/relais")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("-c", "--concurrency", type=int, default=64)
    ap.add_argument("--syscalls", action="store_true", help="also count syscalls per request (perf stat)")
    ap.add_argument("--variant-bin", action="append", default=[], metavar="NAME=BIN",
                    help="run variant NAME with this binary instead of --relais-bin (two builds in one run)")
    ap.add_argument("--out")
    ap.add_argument("variants", nargs="+", help="NAME=FILE (a config snippet, as bench/run)")
    a = ap.parse_args()
    a.bins = dict(v.split("=", 1) for v in a.variant_bin)
    if os.cpu_count() < 2:
        raise SystemExit("needs two cores: Relais on one, the upstream and load on the other")
    out = a.out or os.path.join(bench.ROOT, "bench", "results", time.strftime("cpu-%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    variants = [bench.parse_variant(v) for v in a.variants]
    body = bench.body("anthropic", "bench-instant", False)
    rows = {name: [] for name, _ in variants}
    try:
        up_port = bench.free_port()
        bench.start("upstream", [bench.UPSTREAM, "--listen", f"127.0.0.1:{up_port}"],
                    os.path.join(out, "upstream.log"), [0])
        time.sleep(0.5)
        for i in range(a.repeats):
            for name, path in variants:
                r = one(a, name, bench.read_extra(path), up_port, out, body, a.syscalls and i == 0)
                rows[name].append(r)
                bench.log(f"{name} #{i + 1}: {r[0]:,.0f} req/s, user {r[1]:.1f} µs, system {r[2]:.1f} µs")
    finally:
        bench.stop_all()
    ref = variants[0][0]
    print(f"\n| variant | req/s | user µs/req | system µs/req | total | vs {ref} |\n|---|--:|--:|--:|--:|--:|")
    tot = {n: med([r[1] + r[2] for r in rs]) for n, rs in rows.items()}
    for n, rs in rows.items():
        print(f"| {n} | {med([r[0] for r in rs]):,.0f} | {med([r[1] for r in rs]):.1f} | "
              f"{med([r[2] for r in rs]):.1f} | {tot[n]:.1f} | {tot[n] - tot[ref]:+.1f} |")
    if a.syscalls:
        print(f"\nsyscalls per request (one run each, under perf stat)\n\n| syscall | "
              + " | ".join(n for n, _ in variants) + " |\n|---|" + "--:|" * len(variants))
        for s in SYSCALLS:
            vals = [rows[n][0][3].get(s, 0.0) for n, _ in variants]
            if any(v >= 0.001 for v in vals):
                print(f"| {s} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")


if __name__ == "__main__":
    try:
        main()
    except bench.Fatal as e:
        sys.exit(f"cpu_split: {e}")
