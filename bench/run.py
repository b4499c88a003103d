#!/usr/bin/env python3
"""Relais benchmark harness (Python 3 stdlib only). See bench/README.md.

Builds the bench tools (bench/tools) and the router, starts the fake upstream and Relais on
free 127.0.0.1 ports, runs the load generator against the upstream directly (OpenAI format)
and through each gateway (Anthropic format through Relais) in the same run, interleaved,
repeats every point and reports medians and same-run ratios as markdown.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import nginx_upstream

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
TOOLS_TARGET = os.path.join(BENCH, "target")
LOAD = os.path.join(TOOLS_TARGET, "release", "bench-load")
UPSTREAM = os.path.join(TOOLS_TARGET, "release", "bench-upstream")

CHILDREN = []
CLEANUP = []  # callables run at exit, after the children are stopped (e.g. stop Postgres)
NOISY = 0.15  # cores of foreign CPU use in a run above which its point is flagged
T_START = time.monotonic()


def log(msg):
    el = time.monotonic() - T_START
    print(f"[bench {el:6.1f}s] {msg}", file=sys.stderr, flush=True)


class Fatal(Exception):
    pass


# ---------------------------------------------------------------- processes


def pin(cpus):
    if not cpus:
        return None

    def f():
        os.sched_setaffinity(0, cpus)

    return f


def pin_nice(cpus, nice):
    """pin(cpus), then lower the priority by `nice` (inherited by the process's children)."""
    def f():
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nice:
            os.nice(nice)

    return f


def start(name, cmd, logpath, cpus=None, env=None):
    log(f"start {name}: {' '.join(cmd)}" + (f" (cpus {sorted(cpus)})" if cpus else ""))
    lf = open(logpath, "ab")  # O_APPEND: the log can be truncated while the process writes
    p = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         preexec_fn=pin(cpus), env=env, cwd=ROOT)
    p.bench_name = name
    p.bench_log = logpath
    CHILDREN.append(p)
    return p


def stop_all():
    for p in CHILDREN:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 5
    for p in CHILDREN:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
    while CLEANUP:
        try:
            CLEANUP.pop()()
        except Exception as e:  # keep tearing down the rest
            log(f"cleanup failed: {e}")


def tail(path, n=20):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
    except OSError:
        return ""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http(method, url, body=None, headers=None, timeout=5):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def proc_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# ---------------------------------------------------------------- build


def build(args):
    jobs = str(args.jobs)
    if not shutil.which("cargo"):
        raise Fatal("cargo not found: install a Rust toolchain (rustup) first")
    log("building bench tools (bench/tools)")
    t = time.monotonic()
    r = subprocess.run(["cargo", "build", "--release", "--locked", "-j", jobs, "--manifest-path",
                        os.path.join(BENCH, "tools", "Cargo.toml"), "--target-dir", TOOLS_TARGET])
    if r.returncode != 0:
        raise Fatal("building bench tools failed")
    log(f"bench tools built in {time.monotonic() - t:.0f}s")
    if args.no_relais or args.relais_bin:
        return
    log("building relais (cargo build --release at the repo root)")
    t = time.monotonic()
    r = subprocess.run(["cargo", "build", "--release", "-j", jobs], cwd=ROOT)
    if r.returncode != 0:
        raise Fatal("building relais failed")
    log(f"relais built in {time.monotonic() - t:.0f}s")


# ---------------------------------------------------------------- targets

PROMPT = [{"role": "user", "content": "Hello"}]


# `--body-from FILE`: the Messages body sent through Relais instead of the small one (a JSON
# file holding it, or an object with it under "body", such as
# ../shared/reference/claude-code-request.json); the direct baseline keeps its own.
BODY_FROM = None


def messages_body(path, model, stream):
    """The Messages body in `path`, for `model`: its `metadata` (whose session id would stand
    in for the opening digest) and `stream` dropped, `stream` set as asked."""
    with open(path) as fh:
        d = json.load(fh)
    d = d.get("body", d)
    d["model"] = model
    d.pop("metadata", None)
    d.pop("stream", None)
    if stream:
        d["stream"] = True
    return json.dumps(d, separators=(",", ":"))


def body(fmt, model, stream):
    if BODY_FROM and fmt == "anthropic":
        return messages_body(BODY_FROM, model, stream)
    d = {"model": model, "max_tokens": 64, "messages": PROMPT}
    if stream:
        d["stream"] = True
        if fmt == "openai":
            d["stream_options"] = {"include_usage": True}
    return json.dumps(d, separators=(",", ":"))


class Target:
    def __init__(self, name, url, fmt, prefix, headers=(), pid=None):
        self.name, self.url, self.fmt, self.prefix = name, url, fmt, prefix
        self.headers, self.pid = list(headers), pid
        self.variant = False

    def model(self, mode):
        return self.prefix + mode


# What every generated bench config starts with (bench/tail.py's too): the listener and
# the client key.
CONFIG_HEAD = """[server]
listen = "127.0.0.1:{port}"

[[keys]]
name = "bench"
key = "sk-bench"
"""


def provider_toml(name):
    """A fake OpenAI upstream as a provider; its port is the format field `{name}`."""
    return f"""
[providers.{name}]
api = "openai"
base_url = "http://127.0.0.1:{{{name}}}/v1"
eu_native = true
zero_data_retention = true
"""


RELAIS_CONFIG = "# generated by bench/run.py\n" + CONFIG_HEAD + provider_toml("up")

RELAIS_MODEL = """
[[models]]
id = "bench-{mode}"
[[models.endpoints]]
provider = "up"
upstream_model = "up-{mode}"
context_window = 100000
max_output_tokens = 4096
price_input_per_mtok = 0.1
price_output_per_mtok = 0.3
"""


PG_PLACEHOLDER = "{postgres_url}"


def read_extra(path, pg_url=None):
    """A TOML snippet appended to the generated Relais config (e.g. a [metrics] table).
    `{postgres_url}` in it becomes the URL of the Postgres that `--postgres` started."""
    if not path:
        return ""
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as e:
        raise Fatal(f"cannot read config snippet {path}: {e}")
    if PG_PLACEHOLDER in text:
        if not pg_url:
            raise Fatal(f"{path} contains {PG_PLACEHOLDER}: run with --postgres")
        text = text.replace(PG_PLACEHOLDER, pg_url)
    return "\n# from " + path + "\n" + text + "\n"


def snippet_wants_postgres(path):
    try:
        with open(path) as fh:
            return PG_PLACEHOLDER in fh.read()
    except OSError:
        return False


# ---------------------------------------------------------------- postgres (--postgres)


def pg_bin_dir():
    """The newest /usr/lib/postgresql/*/bin with initdb, or $RELAIS_PG_BIN (as tests/common/pg.rs)."""
    if os.environ.get("RELAIS_PG_BIN"):
        return os.environ["RELAIS_PG_BIN"]
    found = []
    try:
        for v in os.listdir("/usr/lib/postgresql"):
            b = os.path.join("/usr/lib/postgresql", v, "bin")
            if v.isdigit() and os.path.exists(os.path.join(b, "initdb")):
                found.append((int(v), b))
    except OSError:
        pass
    if not found:
        raise Fatal("--postgres: no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql, "
                    "or set RELAIS_PG_BIN)")
    return max(found)[1]


def start_postgres(logdir, cpus, nice=0):
    """A throwaway Postgres (default settings) on a free 127.0.0.1 port, data in a temporary
    folder; stopped and removed at exit (also on failure). As root it runs as the `postgres`
    system user, since Postgres refuses to run as root. Returns its URL."""
    import pwd
    bind = pg_bin_dir()
    user = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise Fatal("--postgres as root needs the `postgres` system user (apt-get install postgresql)")
        user = "postgres"
    d = tempfile.mkdtemp(prefix="relais-bench-pg-")
    CLEANUP.append(lambda: shutil.rmtree(d, ignore_errors=True))
    if user:
        os.chown(d, pw.pw_uid, pw.pw_gid)

    def cmd(prog, *args):
        c = [os.path.join(bind, prog), *args]
        return ["runuser", "-u", user, "--"] + c if user else c

    data = os.path.join(d, "data")
    r = subprocess.run(cmd("initdb", "-D", data, "-U", "relais", "-A", "trust", "-E", "UTF8", "--no-sync"),
                       capture_output=True, text=True, timeout=120, cwd=d)
    if r.returncode != 0:
        raise Fatal(f"initdb failed: {r.stderr[-2000:]}")
    for _ in range(5):  # a free port can be taken between probing and binding
        port = free_port()
        logp = os.path.join(logdir, "postgres.log")
        log(f"start postgres on 127.0.0.1:{port}" + (f" (cpus {sorted(cpus)})" if cpus else "")
            + (f" (nice {nice})" if nice else ""))
        with open(logp, "ab") as lf:  # not a CHILD: it must outlive Relais's shutdown flush
            p = subprocess.Popen(cmd("postgres", "-D", data, "-k", d, "-p", str(port),
                                     "-c", "listen_addresses=127.0.0.1"),
                                 stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 preexec_fn=pin_nice(cpus, nice), cwd=d)

        def stop(p=p):
            try:
                subprocess.run(cmd("pg_ctl", "-D", data, "stop", "-m", "fast", "-s", "-t", "10"),
                               capture_output=True, timeout=30, cwd=d)
            except subprocess.TimeoutExpired:
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        CLEANUP.append(stop)
        # If the harness is killed outright, stop Postgres anyway (bounded by pg_ctl's -t).
        subprocess.Popen(["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null && kill -0 {p.pid} 2>/dev/null; "
                          f"do sleep 1; done; {' '.join(cmd('pg_ctl'))} -D '{data}' stop -m immediate -s -t 10"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, cwd=d)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and p.poll() is None:
            r = subprocess.run([os.path.join(bind, "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port),
                                "-U", "relais", "-d", "postgres", "-t", "2"], timeout=10)
            if r.returncode == 0:
                url = f"postgres://relais@127.0.0.1:{port}/postgres"
                log(f"postgres ready at {url}")
                return url
            time.sleep(0.1)
        if p.poll() is not None and "Address already in use" in tail(logp, 50):
            continue
        raise Fatal(f"postgres did not become ready within 30 s:\n{tail(logp)}")
    raise Fatal("postgres could not bind a free port in 5 tries")


def parse_variant(v):
    name, sep, path = v.partition("=")
    if not sep or not name or name == "relais" or not path:
        raise Fatal(f"--relais-variant wants NAME=FILE (NAME other than relais), got {v!r}")
    return name, path


def start_relais(name, binp, up_port, extra, logdir, cpus, env):
    rport = free_port()
    cfg = RELAIS_CONFIG.format(port=rport, up=up_port) + "".join(
        RELAIS_MODEL.format(mode=m) for m in ("instant", "paced", "hold")) + extra
    # Each Relais in its own folder: the default SQLite ledger (relais.db beside the config)
    # is then its own too.
    os.makedirs(os.path.join(logdir, name), exist_ok=True)
    cfg_path = os.path.join(logdir, name, f"{name}.toml")
    with open(cfg_path, "w") as fh:
        fh.write(cfg)
    rp = start(name, [binp, "serve", "--config", cfg_path, "--listen", f"127.0.0.1:{rport}"],
               os.path.join(logdir, f"{name}.log"), cpus, env)
    rt = Target(name, f"http://127.0.0.1:{rport}/v1/messages", "anthropic", "bench-",
                ["x-api-key: sk-bench", "anthropic-version: 2023-06-01"], rp.pid)
    rt.variant = name != "relais"
    rt.cfg_path, rt.proc = cfg_path, rp
    wait_ready(rt, rp, 60)
    time.sleep(0.5)
    return rt, rp


def wait_ready(target, proc, timeout_s):
    """Until the target answers a real request with 200 (bounded)."""
    deadline = time.monotonic() + timeout_s
    hdrs = {"content-type": "application/json"}
    for h in target.headers:
        k, v = h.split(":", 1)
        hdrs[k.strip()] = v.strip()
    data = body(target.fmt, target.model("instant"), False).encode()
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Fatal(f"{target.name} exited with {proc.returncode}:\n{tail(proc.bench_log)}")
        try:
            st, b = http("POST", target.url, data, hdrs, timeout=2)
            if st == 200 and b"bench-end" in b:
                return
            last = f"status {st}: {b[:200]!r}"
        except urllib.error.HTTPError as e:
            last = f"status {e.code}: {e.read()[:300]!r}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise Fatal(f"{target.name} not reachable/answering at {target.url} within {timeout_s}s: {last}")


def ledger_check(binp, gateways, runs):
    """For each Relais: scrape its ledger counters from /metrics (when on), stop it with
    SIGTERM (its shutdown writes what is queued), then count its ledger rows with
    `relais usage` and compare with the requests it answered. A ledger that wrote nothing
    would make the on/off comparison meaningless."""
    out = {}
    for g in gateways:
        if not getattr(g, "cfg_path", None):
            continue
        ans = sum(r["res"].get("requests_total", r["res"]["requests"]) for r in runs if r["target"] == g.name)
        info = {"answered": ans, "rows": None, "metrics": {}}
        try:
            base = g.url.rsplit("/v1/", 1)[0]
            _, b = http("GET", base + "/metrics", headers={"authorization": "Bearer sk-bench"})
            for line in b.decode(errors="replace").splitlines():
                if line.startswith("relais_ledger_"):
                    k, _, v = line.rpartition(" ")
                    info["metrics"][k] = float(v)
        except (OSError, ValueError):
            pass  # metrics off (404) or unreachable: rows are counted anyway
        p = g.proc
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                info["note"] = "did not stop within 30 s"
        r = subprocess.run([binp, "usage", "--config", g.cfg_path, "--by", "day", "--json"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            info["note"] = (r.stderr or r.stdout).strip()[-300:]  # e.g. no database: ledger off
        else:
            try:
                info["rows"] = sum(x["requests"] for x in json.loads(r.stdout)["data"])
            except (ValueError, KeyError, TypeError) as e:
                info["note"] = f"unreadable `relais usage` output: {e}"
        log(f"ledger {g.name}: {info['rows']} rows for {ans} answered requests "
            f"{info['metrics'] or ''} {info.get('note', '')}")
        out[g.name] = info
    return out


# ---------------------------------------------------------------- load runs


def load_cmd(sub, target, mode, stream, watch):
    return [LOAD, sub, "--url", target.url, "--format", target.fmt,
            "--body", body(target.fmt, target.model(mode), stream)] + load_flags(target, stream, watch)


def load_flags(target, stream, watch):
    """bench-load's options for the target's headers, streaming and the processes watched
    (bench/tail.py's runs too)."""
    cmd = []
    for h in target.headers:
        cmd += ["--header", h]
    if stream:
        cmd.append("--stream")
    for name, pid in watch:
        cmd += ["--watch", f"{name}={pid}"]
    return cmd


def machine_busy(interval=0.25):
    """Cores' worth of CPU the whole machine used over `interval` (from /proc/stat)."""
    def snap():
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return v[0] + v[1] + v[2] + v[5] + v[6], sum(v[:8])
    b0, t0 = snap()
    time.sleep(interval)
    b1, t1 = snap()
    ncpu = os.cpu_count() or 1
    return (b1 - b0) / max(1, t1 - t0) * ncpu


def wait_quiet(ctx):
    """With --quiet-wait S: before a run, wait (at most S s) until other processes use < 0.1 core."""
    if ctx["quiet_wait"] <= 0:
        return 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < ctx["quiet_wait"]:
        if machine_busy() < 0.1:
            break
        time.sleep(0.75)
    waited = time.monotonic() - t0
    ctx["waited"] = ctx.get("waited", 0.0) + waited
    return waited


def real_cores(res):
    # (older bench-load builds also reported the aggregate /proc/stat line as a bogus cpu)
    return [c for c in res.get("procs", {}).get("_cores", []) if c["cpu"] < 4096]


def foreign_load(res):
    """Cores used by processes other than upstream, gateway and load generator in the window."""
    p = res.get("procs", {})
    cores = real_cores(res)
    w = res.get("window_s") or 0
    if not cores or w <= 0:
        return None
    acc = 0.0
    for k in ("upstream", "gateway", "_load"):
        if k in p:
            v = p[k].get("sched_cpu_s")
            if v is None:
                v = p[k].get("cpu_s") or 0.0
            acc += v
    return max(0.0, sum(c["busy"] for c in cores) - acc / w)


def run_load(ctx, target, mode, stream, c, duration, warmup, quiet=True):
    if quiet:
        wait_quiet(ctx)
    watch = [("upstream", ctx["upstream"].pid)]
    if target.pid:
        watch.append(("gateway", target.pid))
    cmd = load_cmd("run", target, mode, stream, watch) + [
        "--concurrency", str(c), "--duration-ms", str(int(duration * 1000)),
        "--warmup-ms", str(int(warmup * 1000)), "--timeout-ms", str(ctx["timeout_ms"])]
    limit = duration + warmup + ctx["timeout_ms"] / 1000 + 30
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=limit, preexec_fn=pin(ctx["load_cpus"]))
    except subprocess.TimeoutExpired:
        raise Fatal(f"load generator did not finish within {limit:.0f}s")
    if r.returncode != 0:
        raise Fatal(f"load generator failed: {r.stderr.decode(errors='replace')[-2000:]}")
    res = json.loads(r.stdout)
    for p in ctx["procs"].values():  # per-request log lines add up: keep the logs bounded
        try:
            if os.path.getsize(p.bench_log) > 64 << 20:
                os.truncate(p.bench_log, 0)
        except OSError:
            pass
    for name, p in ctx["procs"].items():
        if p.poll() is not None:
            raise Fatal(f"{name} died during the run (exit {p.returncode}):\n{tail(p.bench_log)}")
    return res


def per_req_us(res, who):
    p = res["procs"].get(who)
    if not p or not res["requests"]:
        return None
    sched, stat = p.get("sched_cpu_s"), p.get("cpu_s")
    # schedstat (live threads) is ns-precise; stat has clock ticks (10 ms) but also counts
    # threads that exited during the window. Use schedstat unless stat shows clearly more.
    if sched is not None and (stat is None or stat <= sched * 1.05 + 0.02):
        cpu = sched
    else:
        cpu = stat
    if cpu is None:
        return None
    return cpu / res["requests"] * 1e6


def peak_kb(res, who):
    p = res["procs"].get(who)
    if not p:
        return None
    vals = [v for v in (p.get("rss_kb_peak_hwm"), p.get("rss_kb_peak_sampled")) if v]
    return max(vals) if vals else None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------- report helpers


def f(x, nd=2, unit=""):
    if x is None:
        return "–"
    return f"{x:.{nd}f}{unit}"


def ms(us, nd=3):
    return None if us is None else us / 1000.0


def mib(kb):
    return None if kb is None else kb / 1024.0


# ---------------------------------------------------------------- main


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench/run", description="Relais benchmark harness: direct upstream vs gateway, same run.")
    ap.add_argument("--smoke", action="store_true", help="a few seconds of everything (CI); exits non-zero on any failed request")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds measured per run (default 5)")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds of warmup per run, not measured (default 0.5)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per point; medians are reported (default 3)")
    ap.add_argument("--concurrency", default="1,16,64,256", help="closed-loop concurrencies for instant replies")
    ap.add_argument("--paced-concurrency", default="1,16,64,256", help="concurrencies for paced streams")
    ap.add_argument("--tests", default="json,sse,paced,memory", help="subset of json,sse,paced,memory")
    ap.add_argument("--body-from", help="a Messages body (JSON file) sent through Relais instead of the "
                    "small one, e.g. ../shared/reference/claude-code-request.json; direct keeps its own")
    ap.add_argument("--pace-ms", type=float, default=10.0, help="paced stream: ms between events (default 10)")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per stream (default 20)")
    ap.add_argument("--memory-streams", default="1000,10000", help="open-stream counts for the memory test")
    ap.add_argument("--timeout-ms", type=int, default=30000, help="per-request timeout")
    ap.add_argument("--no-pin", action="store_true", help="do not pin upstream+load and the gateway to separate cores")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("CARGO_BUILD_JOBS", "1")), help="cargo -j (default 1, or $CARGO_BUILD_JOBS)")
    ap.add_argument("--no-build", action="store_true", help="use already built binaries")
    ap.add_argument("--relais-bin", help="use this relais binary instead of building target/release/relais")
    ap.add_argument("--no-relais", action="store_true", help="do not run Relais (direct upstream, and --gateway-url if given)")
    ap.add_argument("--relais-config-extra", metavar="FILE",
                    help="TOML snippet appended to the generated Relais config (e.g. bench/variants/metrics-off.toml)")
    ap.add_argument("--relais-variant-bin", action="append", default=[], metavar="NAME=BIN",
                    help="also run another Relais binary (e.g. an older commit's release build) with the "
                         "plain config, interleaved with `relais`, and report it relative to it (repeatable)")
    ap.add_argument("--relais-variant", action="append", default=[], metavar="NAME=FILE",
                    help="also run Relais with this snippet appended (instead of --relais-config-extra's), "
                         "interleaved with the plain one, and report it relative to it (repeatable)")
    ap.add_argument("--postgres", action="store_true",
                    help="start a throwaway Postgres on a free loopback port for the run (torn down at the end); "
                         "{postgres_url} in config snippets becomes its URL")
    ap.add_argument("--postgres-nice", type=int, default=10, metavar="N",
                    help="run that Postgres at this nice level (default 10). It shares the load generator's "
                         "core on a 2-core machine; niced, it uses that core's idle time instead of starving "
                         "the load generator in bursts (a database normally runs on another host). 0 = as is")
    ap.add_argument("--relais-env", action="append", default=[], metavar="K=V", help="extra environment for relais (e.g. RUST_LOG=info)")
    ap.add_argument("--gateway-url", help="another gateway to compare, e.g. http://127.0.0.1:4000/v1/messages")
    ap.add_argument("--gateway-format", choices=["anthropic", "openai"], default="anthropic", help="the other gateway's API format")
    ap.add_argument("--gateway-header", action="append", default=[], metavar="'K: V'", help="header for the other gateway (repeatable)")
    ap.add_argument("--gateway-model-prefix", default="bench-", help="model names at the other gateway: PREFIX{instant,paced,hold}")
    ap.add_argument("--gateway-pid", type=int, help="pid of the other gateway, for CPU and RSS")
    ap.add_argument("--gateway-name", default="other", help="label of the other gateway in the tables")
    ap.add_argument("--upstream", choices=["hyper", "nginx"], default="hyper",
                    help="the fake upstream: bench-upstream (hyper, default) or nginx + njs with the same "
                         "answers (bench/nginx_upstream.py; Debian's nginx and libnginx-mod-http-js). With "
                         "nginx the memory test, which reads the upstream's counters, is left out")
    ap.add_argument("--upstream-port", type=int, default=0, help="fixed port for the fake upstream (to point another gateway at it)")
    ap.add_argument("--perf", action="store_true", help="also profile relais with perf during one json and one sse run at c=64")
    ap.add_argument("--quiet-wait", type=float, default=0.0, metavar="S",
                    help="before each run, wait up to S seconds for other processes to use < 0.1 core (shared machines)")
    ap.add_argument("--strict", action="store_true", help="exit non-zero when a performance target is missed")
    ap.add_argument("--out", default=os.path.join(BENCH, "results"), help="results directory (default bench/results)")
    a = ap.parse_args(argv)
    if a.smoke:
        a.duration, a.warmup, a.repeats = 0.4, 0.15, 1
        a.concurrency, a.paced_concurrency = "1,16", "4"
        a.memory_streams = "50,200"
        a.timeout_ms = min(a.timeout_ms, 10000)
    if a.repeats < 1 or a.duration <= 0 or a.duration > 600 or a.repeats > 50:
        ap.error("--repeats must be 1..50 and --duration in (0, 600]")
    return a


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


class _Named:
    def __init__(self, name, variant=False):
        self.name, self.variant = name, variant


def rerender(path):
    """Renders the report again from a latest.json (for tweaking the report)."""
    with open(path) as fh:
        d = json.load(fh)
    names = ["direct"] + sorted({r["target"] for r in d["runs"]} - {"direct"})
    report, _ = render(d["meta"], [_Named(n, n in d["meta"].get("variants", [])) for n in names], d["runs"], d["memory"], d["relais_idle_kb"],
                       d["relais_idle_after_kb"], d["errors"], d["error_samples"], [])
    print(report)
    return 0


def main(argv):
    if argv[:1] == ["--rerender"] and len(argv) == 2:
        return rerender(argv[1])
    a = parse_args(argv)
    global BODY_FROM
    BODY_FROM = a.body_from
    os.makedirs(a.out, exist_ok=True)
    tests = set(t.strip() for t in a.tests.split(","))
    logdir = tempfile.mkdtemp(prefix="relais-bench-")

    # Many sockets: raise the fd soft limit to the hard limit (children inherit it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20))  # root with CAP_SYS_RESOURCE
    except (ValueError, OSError):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    log(f"RLIMIT_NOFILE {nofile}")

    cpus = sorted(os.sched_getaffinity(0))
    if a.no_pin or len(cpus) < 2:
        load_cpus = gw_cpus = None
    else:
        load_cpus, gw_cpus = set(cpus[: len(cpus) // 2]), set(cpus[len(cpus) // 2:])

    if not a.no_build:
        build(a)
    for b in (LOAD, UPSTREAM):
        if not os.path.exists(b):
            raise Fatal(f"{b} missing: run without --no-build")

    # --- upstream
    if a.upstream == "nginx":
        if "memory" in tests:
            log("--upstream nginx: the memory test reads bench-upstream's /stats; left out")
            tests.discard("memory")
        up_port = a.upstream_port or free_port()
        try:
            cmd = nginx_upstream.prepare(logdir, up_port, a.chunks, a.pace_ms, 1000, 180)
        except RuntimeError as e:
            raise Fatal(str(e))
        up = start("upstream", cmd, os.path.join(logdir, "upstream.log"), load_cpus)
    else:
        port_file = os.path.join(logdir, "upstream.port")
        up_port = a.upstream_port
        up = start("upstream", [UPSTREAM, "--listen", f"127.0.0.1:{up_port}", "--port-file", port_file,
                                "--chunks", str(a.chunks), "--pace-ms", str(a.pace_ms),
                                "--hold-ms", "1000", "--hold-chunks", "180"],
                   os.path.join(logdir, "upstream.log"), load_cpus)
        deadline = time.monotonic() + 10
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if up.poll() is not None or time.monotonic() > deadline:
                raise Fatal(f"upstream did not start:\n{tail(up.bench_log)}")
            time.sleep(0.02)
        up_port = int(open(port_file).read())
    procs = {"upstream": up}
    direct = Target("direct", f"http://127.0.0.1:{up_port}/v1/chat/completions", "openai", "up-")
    wait_ready(direct, up, 10)
    log(f"upstream ({a.upstream}) ready on 127.0.0.1:{up_port}")

    gateways = []
    relais_idle_kb = None
    relais_commit = None
    if not a.no_relais:
        binp = a.relais_bin or os.path.join(ROOT, "target", "release", "relais")
        if not os.path.exists(binp):
            raise Fatal(f"{binp} missing (build failed or --no-build without a build)")
        env = dict(os.environ)  # relais logs at its default level (RELAIS_LOG) unless --relais-env
        for kv in a.relais_env:
            k, v = kv.split("=", 1)
            env[k] = v
        snippets = [a.relais_config_extra] + [parse_variant(v)[1] for v in a.relais_variant]
        pg_url = None
        if a.postgres:
            pg_url = start_postgres(logdir, load_cpus, a.postgres_nice)  # off Relais's core
        elif any(f and snippet_wants_postgres(f) for f in snippets):
            raise Fatal(f"a config snippet contains {PG_PLACEHOLDER}: run with --postgres")
        base_extra = read_extra(a.relais_config_extra, pg_url)
        # The variants: the same config plus a snippet each, run interleaved with `relais`.
        for name, extra in [("relais", base_extra)] + [
                (n, read_extra(f, pg_url)) for n, f in (parse_variant(v) for v in a.relais_variant)]:
            rt, rp = start_relais(name, binp, up_port, extra, logdir, gw_cpus, env)
            procs[name] = rp
            gateways.append(rt)
            if name == "relais":
                relais_idle_kb = proc_kb(rp.pid, "VmRSS")
                log(f"relais ready at {rt.url}, idle RSS {relais_idle_kb} KiB")
        # Other binaries with the plain config: a before/after comparison in one run.
        for name, other in (parse_variant(v) for v in a.relais_variant_bin):
            if not os.path.exists(other):
                raise Fatal(f"--relais-variant-bin {name}: {other} missing")
            rt, rp = start_relais(name, other, up_port, base_extra, logdir, gw_cpus, env)
            procs[name] = rp
            gateways.append(rt)
        try:
            relais_commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                           capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:
            pass
    if a.gateway_url:
        gt = Target(a.gateway_name, a.gateway_url, a.gateway_format, a.gateway_model_prefix,
                    a.gateway_header, a.gateway_pid)
        wait_ready(gt, None, 30)
        gateways.append(gt)
        log(f"{a.gateway_name} answering at {a.gateway_url}")

    ctx = {"upstream": up, "procs": procs, "load_cpus": load_cpus, "timeout_ms": a.timeout_ms,
           "quiet_wait": a.quiet_wait}
    targets = [direct] + gateways
    runs = []  # (test, c, rep, target name, result)
    passed = failed = 0  # runs without / with failed requests, for the closing line
    total_errors = 0
    error_samples = []

    plan = []
    if "json" in tests:
        plan += [("json", "instant", False, c) for c in ints(a.concurrency)]
    if "sse" in tests:
        plan += [("sse", "instant", True, c) for c in ints(a.concurrency)]
    if "paced" in tests:
        plan += [("paced", "paced", True, c) for c in ints(a.paced_concurrency)]
    est = len(plan) * a.repeats * len(targets) * (a.duration + a.warmup + 0.3)
    log(f"{len(plan)} points x {a.repeats} repeats x {len(targets)} targets, ~{est:.0f}s of load")

    for test, mode, stream, c in plan:
        for rep in range(a.repeats):
            order = targets[rep % len(targets):] + targets[: rep % len(targets)]
            for t in order:
                res = run_load(ctx, t, mode, stream, c, a.duration, a.warmup)
                runs.append({"test": test, "c": c, "rep": rep, "target": t.name, "res": res})
                total_errors += res["errors"]
                passed, failed = (passed + 1, failed) if res["errors"] == 0 else (passed, failed + 1)
                error_samples += [f"{t.name} {test} c={c}: {e}" for e in res["error_samples"]]
                log(f"{test:5} c={c:<4} rep {rep + 1}/{a.repeats} {t.name:8} "
                    f"{res['rps']:9.0f} req/s  p50 {res['latency']['p50_us'] / 1000:8.3f} ms  "
                    f"p99 {res['latency']['p99_us'] / 1000:8.3f} ms  errors {res['errors']}")
                time.sleep(0.2)

    # --- memory: open streams held through each gateway
    mem = {}
    if "memory" in tests:
        counts = ints(a.memory_streams)
        cap = max(1, (nofile - 512) // 2)  # a gateway holds a client and an upstream socket per stream
        for g in [g for g in gateways if not g.variant]:
            mem[g.name] = []
            for n in counts:
                n_eff = min(n, cap)
                if n_eff < n:
                    log(f"memory test: {n} streams need ~{2 * n} fds per gateway; "
                        f"RLIMIT_NOFILE {nofile} allows {n_eff}")
                watch = [("upstream", up.pid)] + ([("gateway", g.pid)] if g.pid else [])
                cmd = load_cmd("hold", g, "hold", True, watch) + [
                    "--streams", str(n_eff), "--connect-parallel", "200",
                    "--ready-timeout-ms", "90000" if not a.smoke else "15000",
                    "--hold-ms", "1500" if not a.smoke else "200"]
                try:
                    r = subprocess.run(cmd, capture_output=True, timeout=180, preexec_fn=pin(load_cpus))
                except subprocess.TimeoutExpired:
                    raise Fatal("memory test did not finish within 180s")
                if r.returncode != 0:
                    raise Fatal(f"memory test failed: {r.stderr.decode(errors='replace')[-2000:]}")
                res = json.loads(r.stdout)
                # Does the gateway cancel upstream streams when its clients go away?
                left = None
                t_end = time.monotonic() + 10
                while time.monotonic() < t_end:
                    try:
                        left = json.loads(http("GET", f"http://127.0.0.1:{up_port}/stats")[1])["active_streams"]
                    except OSError:
                        left = None
                    if left == 0:
                        break
                    time.sleep(0.1)
                res["upstream_active_after_close"] = left
                res["requested"] = n
                mem[g.name].append(res)
                total_errors += res["errors"]
                ok = res["errors"] == 0 and res["ready"] == n_eff
                passed, failed = (passed + 1, failed) if ok else (passed, failed + 1)
                error_samples += [f"{g.name} hold {n_eff}: {e}" for e in res["error_samples"]]
                gkb = res["rss_kb_ready"].get("gateway")
                log(f"memory {g.name}: {res['ready']}/{n_eff} streams open, gateway RSS {gkb} KiB, "
                    f"upstream streams left after close: {left}")
                for p_name, p in procs.items():
                    if p.poll() is not None:
                        raise Fatal(f"{p_name} died during the memory test:\n{tail(p.bench_log)}")

    relais_idle_after_kb = None
    if "relais" in procs:
        time.sleep(1.0)
        relais_idle_after_kb = proc_kb(procs["relais"].pid, "VmRSS")

    # --- optional profile
    perf_files = []
    if a.perf and "relais" in procs:
        perf_files = profile(ctx, gateways[0], a, logdir)

    ledger = {}
    if not a.no_relais:
        ledger = ledger_check(binp, [g for g in gateways if getattr(g, "proc", None)], runs)

    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(), "kernel": platform.release(), "cpus": len(cpus),
        "cpu_model": cpu_model(), "pinning": None if not load_cpus else
        {"upstream+load": sorted(load_cpus), "gateway": sorted(gw_cpus)},
        "duration_s": a.duration, "warmup_s": a.warmup, "repeats": a.repeats,
        "pace_ms": a.pace_ms, "chunks": a.chunks, "relais_commit": relais_commit,
        "nofile": nofile, "smoke": a.smoke, "argv": argv,
        "variants": [g.name for g in gateways if g.variant],
        "ledger": ledger, "upstream": a.upstream, "body_from": a.body_from,
    }
    report, checks = render(meta, targets, runs, mem, relais_idle_kb, relais_idle_after_kb,
                            total_errors, error_samples, perf_files)
    with open(os.path.join(a.out, "latest.md"), "w") as fh:
        fh.write(report)
    with open(os.path.join(a.out, "latest.json"), "w") as fh:
        json.dump({"meta": meta, "runs": runs, "memory": mem, "relais_idle_kb": relais_idle_kb,
                   "relais_idle_after_kb": relais_idle_after_kb, "errors": total_errors,
                   "error_samples": error_samples, "targets": checks}, fh, indent=1)
    for p in CHILDREN:
        if getattr(p, "bench_log", None) and os.path.exists(p.bench_log):
            shutil.copy(p.bench_log, os.path.join(a.out, os.path.basename(p.bench_log)))
    shutil.rmtree(logdir, ignore_errors=True)
    print(report)
    print(f"bench: {passed} passed, {failed} failed")  # one per load run / memory test
    log(f"wrote {os.path.join(a.out, 'latest.md')} (total {time.monotonic() - T_START:.0f}s)")
    if total_errors:
        log(f"FAIL: {total_errors} request(s) failed")
        return 1
    if a.strict and any(c["met"] is False for c in checks):
        log("FAIL: targets missed (--strict)")
        return 3
    return 0


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def profile(ctx, g, a, logdir):
    perf = shutil.which("perf")
    if not perf:
        log("perf not found: skipping the profile (apt-get install linux-perf)")
        return []
    out = []
    for test, stream in (("json", False), ("sse", True)):
        data = os.path.join(logdir, f"perf-{test}.data")
        dur = max(2.0, a.duration)
        wait_quiet(ctx)  # before perf starts its clock
        pr = subprocess.Popen([perf, "record", "-F", "499", "--call-graph", "dwarf,16384", "-p", str(g.pid),
                               "-o", data, "--", "sleep", str(dur + a.warmup)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        res = run_load(ctx, g, "instant", stream, 64, dur, a.warmup, quiet=False)
        try:
            pr.wait(timeout=dur + 60)
        except subprocess.TimeoutExpired:
            pr.kill()
            pr.wait()
        cpu_req = per_req_us(res, "gateway")
        # Syscalls per request, from a second run under perf stat (tracepoints).
        sc_names = ["writev", "write", "sendto", "sendmsg", "recvfrom", "read", "epoll_wait", "futex"]
        sc = {}
        wait_quiet(ctx)
        sp = subprocess.Popen([perf, "stat", "-x", ",", "-e", ",".join(f"syscalls:sys_enter_{n}" for n in sc_names),
                               "-p", str(g.pid), "--", "sleep", str(dur + a.warmup)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        res2 = run_load(ctx, g, "instant", stream, 64, dur, a.warmup, quiet=False)
        try:
            _, err = sp.communicate(timeout=dur + 60)
            for line in err.splitlines():
                parts = line.split(",")
                if len(parts) > 2 and parts[2].startswith("syscalls:sys_enter_") and parts[0].strip().isdigit():
                    sc[parts[2].split("sys_enter_")[1]] = int(parts[0])
        except subprocess.TimeoutExpired:
            sp.kill()
        reqs = res2.get("requests_total") or 0
        txt = os.path.join(a.out, f"perf-{test}.txt")
        with open(txt, "w") as fh:
            fh.write(f"# perf profile of relais (pid {g.pid}), {test} at c=64 for {dur:.0f}s; "
                     "sampling cpu-clock at 499 Hz with DWARF call graphs\n")
            fh.write(f"# relais CPU per request in the profiled run: {f(cpu_req, 1)} µs\n")
            if sc and reqs:
                fh.write("\n## syscalls per request (perf stat, separate run of the same load; all requests "
                         "incl. warmup)\n\n" + "\n".join(f"{v / reqs:8.2f}  {k}" for k, v in sc.items() if v) + "\n")
            fh.write("\n## where the time goes (share of samples whose stack contains the pattern; "
                     "buckets overlap)\n\n" + buckets(perf, data, cpu_req) + "\n")
            views = (("self time, top functions", ["--no-children"], None),
                     ("inclusive time of relais' own functions (with everything they call)", ["--children"], "relais::"),
                     ("inclusive time, all functions", ["--children"], None))
            for title, mode, only in views:
                r = subprocess.run([perf, "report", "-i", data, "--stdio", "--no-inline", "--sort", "symbol",
                                    "-g", "none", "--percent-limit", "0.2" if only else "0.7"] + mode,
                                   capture_output=True, text=True, timeout=600)
                lines = clean_perf(r.stdout).splitlines()
                if only:
                    lines = [x for x in lines if only in x][:60]
                fh.write(f"\n## {title}\n\n" + "\n".join(lines[:80]) + "\n")
        out.append(txt)
        log(f"profile written to {txt}")
    return out


BUCKETS = [
    ("kernel writev (socket sends, incl. loopback delivery to the peer)", r"do_writev|__x64_sys_writev"),
    ("kernel write(2) (e.g. log lines)", r"ksys_write"),
    ("kernel recvfrom", r"__x64_sys_recvfrom"),
    ("kernel epoll_wait / scheduler", r"__x64_sys_epoll_wait|^__schedule|^schedule$"),
    ("logging (tracing_subscriber)", r"tracing_subscriber::"),
    ("URL parsing (url::ParseOptions::parse)", r"url::ParseOptions::parse"),
    ("serde_json", r"serde_json::"),
    ("request id (uuid)", r"uuid::"),
    ("relais::router", r"relais::router::"),
    ("relais::server::messages::whole_response", r"relais::server::messages::whole_response"),
    ("relais::server::streaming", r"relais::server::streaming::"),
    ("relais::provider::openai::State::on_event (chunk translation)", r"relais::provider::openai::State.*on_event"),
    ("relais::sse (decode/encode)", r"relais::sse::"),
    ("reqwest/hyper client (send_request, pool, connector)",
     r"hyper_util::client::legacy::client::Client.*send_request|reqwest::async_impl::client::Pending"),
    ("usage ledger: relais::ledger + relais::db", r"relais::ledger::|relais::db::"),
    ("SQLite (sqlite3 C library, rusqlite)", r"^sqlite3|rusqlite::"),
    ("Postgres client (tokio_postgres)", r"tokio_postgres::|postgres_protocol::"),
    ("metrics (relais::metrics, prometheus_client)", r"relais::metrics::|prometheus_client::"),
    ("allocator (mimalloc)", r"^(mi_|_mi_)"),
    ("memcpy/memmove", r"__memmove|__memcpy"),
]


def buckets(perf, data, cpu_req):
    """Share of samples whose call stack contains each pattern, and µs per request."""
    import re
    try:
        r = subprocess.run([perf, "script", "-i", data, "--no-inline", "-F", "ip,sym"],
                           capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "(perf script timed out)"
    samples, cur = [], []
    for line in r.stdout.splitlines():
        t = line.strip()
        if not t:
            if cur:
                samples.append(cur)
                cur = []
            continue
        parts = t.split(None, 1)
        cur.append(parts[1] if len(parts) > 1 else parts[0])
    if cur:
        samples.append(cur)
    if not samples:
        return "(no samples)"
    rows = []
    for name, pat in BUCKETS:
        rx = re.compile(pat)
        n = sum(1 for smp in samples if any(rx.search(fr) for fr in smp))
        us = f"{cpu_req * n / len(samples):7.1f} µs/req" if cpu_req else ""
        rows.append(f"{100 * n / len(samples):5.1f}%  {us}  {name}")
    return f"{len(samples)} samples\n" + "\n".join(rows)


def clean_perf(text):
    """perf report --stdio pads symbols to a huge width and appends IPC columns: trim."""
    out = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        line = line.rstrip()
        if line.endswith("-      -"):
            line = line[:-8].rstrip()
        line = " ".join(line.split())
        out.append(line[:220])
    return "\n".join(out)


def variant_point(reps, v):
    """Variant `v` against plain `relais`, within each repeat, medians over repeats."""
    out = {"rps_b": [], "rps_v": [], "ratio": [], "add50": [], "add99": [], "ttft50": [], "cpu": [], "err": 0}
    for rr in reps.values():
        b, x = rr.get("relais"), rr.get(v)
        if not b or not x:
            continue
        out["err"] += b["errors"] + x["errors"]
        out["rps_b"].append(b["rps"])
        out["rps_v"].append(x["rps"])
        out["ratio"].append(x["rps"] / b["rps"] if b["rps"] else None)
        if b["requests"] and x["requests"]:
            out["add50"].append(x["latency"]["p50_us"] - b["latency"]["p50_us"])
            out["add99"].append(x["latency"]["p99_us"] - b["latency"]["p99_us"])
            if b["ttft"]["n"] and x["ttft"]["n"]:
                out["ttft50"].append(x["ttft"]["p50_us"] - b["ttft"]["p50_us"])
        cb, cx = per_req_us(b, "gateway"), per_req_us(x, "gateway")
        out["cpu"].append(cx - cb if cb is not None and cx is not None else None)
    return {k: (v_ if k == "err" else med(v_)) for k, v_ in out.items()}


def render(meta, targets, runs, mem, idle_kb, idle_after_kb, total_errors, error_samples, perf_files):
    gws = [t.name for t in targets if t.name != "direct"]
    by = {}
    for r in runs:
        by.setdefault((r["test"], r["c"]), {}).setdefault(r["rep"], {})[r["target"]] = r["res"]

    L = []
    L.append(f"# Relais benchmark — {meta['date']}\n")
    L.append(f"Machine: {meta['cpus']} × {meta['cpu_model']}, Linux {meta['kernel']}. "
             f"Pinning: {meta['pinning'] or 'none'}. Relais commit: {meta['relais_commit'] or '–'}.  ")
    L.append(f"Each point: {meta['repeats']} × {meta['duration_s']} s measured (+{meta['warmup_s']} s warmup), "
             f"direct and gateway runs interleaved; every figure is the **median over repeats**, and every "
             f"ratio/difference is taken **within a repeat** (gateway vs direct in the same run) before the median.  ")
    up_name = ("nginx + njs (bench/nginx)" if meta.get("upstream") == "nginx"
               else "fake OpenAI server (bench/tools)")
    L.append(f"Upstream: {up_name}, {meta['chunks']}-chunk streams + usage chunk; "
             f"paced streams send an event every {meta['pace_ms']} ms. Load: closed loop, keep-alive HTTP/1.1. "
             f"'cores busy' = each CPU's busy share during the gateway run (/proc/stat), to see which side saturates.\n")

    checks = []
    noisy = []

    def point(test, c, g):
        reps = by.get((test, c), {})
        out = {"rps_d": [], "rps_g": [], "ratio": [], "lat_d": {}, "lat_g": {}, "add": {},
               "cpu_g": [], "cpu_u": [], "cpu_ratio": [], "rss": [], "err": 0, "ttft_d": {}, "ttft_g": {},
               "ttft_add": {}, "busy": [], "foreign": []}
        for k in ("p50_us", "p90_us", "p99_us"):
            for d in ("lat_d", "lat_g", "add", "ttft_d", "ttft_g", "ttft_add"):
                out[d][k] = []
        for rep, rr in reps.items():
            d, x = rr.get("direct"), rr.get(g)
            if not d or not x:
                continue
            out["rps_d"].append(d["rps"])
            out["rps_g"].append(x["rps"])
            out["ratio"].append(x["rps"] / d["rps"] if d["rps"] else None)
            out["err"] += x["errors"] + d["errors"]
            if not d["requests"] or not x["requests"]:
                continue  # nothing succeeded on one side: no latency to compare
            for k in ("p50_us", "p90_us", "p99_us"):
                out["lat_d"][k].append(d["latency"][k])
                out["lat_g"][k].append(x["latency"][k])
                out["add"][k].append(x["latency"][k] - d["latency"][k])
                out["ttft_d"][k].append(d["ttft"][k])
                out["ttft_g"][k].append(x["ttft"][k])
                if d["ttft"]["n"] and x["ttft"]["n"]:
                    out["ttft_add"][k].append(x["ttft"][k] - d["ttft"][k])
            cg, cu = per_req_us(x, "gateway"), per_req_us(x, "upstream")
            out["cpu_g"].append(cg)
            out["cpu_u"].append(cu)
            out["cpu_ratio"].append(cg / cu if cg is not None and cu else None)
            out["rss"].append(peak_kb(x, "gateway"))
            out["busy"].append([c["busy"] * 100 for c in real_cores(x)])
            out["foreign"] += [foreign_load(d), foreign_load(x)]
        m = {k: (med(v) if isinstance(v, list) else {kk: med(vv) for kk, vv in v.items()})
             for k, v in out.items() if k not in ("err", "busy", "foreign")}
        fl = [v for v in out["foreign"] if v is not None]
        m["foreign"] = max(fl) if fl else None
        ncpu = max((len(b) for b in out["busy"]), default=0)
        m["busy"] = [med([b[i] for b in out["busy"] if len(b) > i]) for i in range(ncpu)]
        m["err"] = out["err"]
        m["n"] = len(out["rps_d"])
        return m

    points = sorted(by.keys(), key=lambda k: (["json", "sse", "paced"].index(k[0]), k[1]))
    instant = [p for p in points if p[0] in ("json", "sse")]
    paced = [p for p in points if p[0] == "paced"]
    P = {}
    for (test, c) in points:
        for g in gws:
            P[(test, c, g)] = point(test, c, g)

    def busy(m):
        s_ = " / ".join(f(b, 0) for b in m["busy"]) or "–"
        if m.get("foreign") is not None and m["foreign"] > NOISY:
            noisy.append(m["foreign"])
            s_ += f" ⚠{m['foreign']:.1f}"
        return s_

    def lat3(d):
        return " / ".join(f(ms(d[k]), 3) for k in ("p50_us", "p90_us", "p99_us"))

    if instant and gws:
        L.append("## Instant upstream (json = non-streaming, sse = 20-chunk stream, latency = full response)\n")
        L.append("| test | c | gateway | direct req/s | gateway req/s | gw/direct | direct p50 / p90 / p99 ms | "
                 "gateway p50 / p90 / p99 ms | added p50 / p90 / p99 ms | gw CPU µs/req | upstream CPU µs/req | "
                 "gw CPU ÷ upstream | gw peak RSS MiB | cores busy % (gw run) | failed |")
        L.append("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        for (test, c) in instant:
            for g in gws:
                m = P[(test, c, g)]
                ratio = f(m["ratio"] * 100, 1, " %") if m["ratio"] is not None else "–"
                L.append(f"| {test} | {c} | {g} | {f(m['rps_d'], 0)} | {f(m['rps_g'], 0)} | {ratio} | "
                         f"{lat3(m['lat_d'])} | {lat3(m['lat_g'])} | {lat3(m['add'])} | {f(m['cpu_g'], 1)} | "
                         f"{f(m['cpu_u'], 1)} | {f(m['cpu_ratio'], 2, '×')} | {f(mib(m['rss']), 1)} | {busy(m)} | {m['err']} |")
        L.append("")
    elif instant:
        L.append("## Direct upstream only (no gateway)\n")
        L.append("| test | c | req/s | p50 / p90 / p99 ms | upstream CPU µs/req | failed |")
        L.append("|---|--:|--:|--:|--:|--:|")
        for (test, c) in points:
            rr = [v["direct"] for v in by[(test, c)].values() if "direct" in v]
            rps = med([x["rps"] for x in rr])
            lat = {k: med([x["latency"][k] for x in rr]) for k in ("p50_us", "p90_us", "p99_us")}
            cpu = med([per_req_us(x, "upstream") for x in rr])
            if test == "paced":
                ttft = {k: med([x["ttft"][k] for x in rr]) for k in ("p50_us", "p90_us", "p99_us")}
                L.append(f"| paced (TTFT {lat3(ttft)}) | {c} | {f(rps, 0)} | {lat3(lat)} | {f(cpu, 1)} | "
                         f"{sum(x['errors'] for x in rr)} |")
            else:
                L.append(f"| {test} | {c} | {f(rps, 0)} | {lat3(lat)} | {f(cpu, 1)} | {sum(x['errors'] for x in rr)} |")
        L.append("")

    if paced and gws:
        L.append(f"## Paced streams (an event every {meta['pace_ms']} ms): time to first token and full stream\n")
        L.append("| c | gateway | direct TTFT p50 / p99 ms | gateway TTFT p50 / p99 ms | **TTFT overhead** p50 / p99 ms | "
                 "direct full p50 / p99 ms | gateway full p50 / p99 ms | **full-stream overhead** p50 / p99 ms | "
                 "gw CPU µs/stream | gw peak RSS MiB | cores busy % (gw run) | failed |")
        L.append("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")

        def two(d):
            return f"{f(ms(d['p50_us']), 3)} / {f(ms(d['p99_us']), 3)}"

        for (_, c) in paced:
            for g in gws:
                m = P[("paced", c, g)]
                L.append(f"| {c} | {g} | {two(m['ttft_d'])} | {two(m['ttft_g'])} | {two(m['ttft_add'])} | "
                         f"{two(m['lat_d'])} | {two(m['lat_g'])} | {two(m['add'])} | {f(m['cpu_g'], 1)} | "
                         f"{f(mib(m['rss']), 1)} | {busy(m)} | {m['err']} |")
        L.append("")

    variants = [t.name for t in targets if getattr(t, "variant", False)]
    if variants and "relais" in gws:
        L.append("## Variants vs `relais` (same run: each ratio and difference is taken within a repeat, "
                 "then the median)\n")
        L.append("| test | c | variant | relais req/s | variant req/s | variant ÷ relais | "
                 "added p50 / p99 ms (variant − relais) | added TTFT p50 ms | added CPU µs/req | failed |")
        L.append("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|")
        for (test, c) in points:
            for v in variants:
                m = variant_point(by.get((test, c), {}), v)
                P[(test, c, "vs:" + v)] = m
                L.append(f"| {test} | {c} | {v} | {f(m['rps_b'], 0)} | {f(m['rps_v'], 0)} | "
                         f"{f(m['ratio'] and m['ratio'] * 100, 1, ' %')} | {f(ms(m['add50']), 4)} / "
                         f"{f(ms(m['add99']), 4)} | {f(ms(m['ttft50']), 4)} | {f(m['cpu'], 1)} | {m['err']} |")
        L.append("")
        for v in variants:
            j64, j1 = P.get(("json", 64, "vs:" + v)), P.get(("json", 1, "vs:" + v))
            checks.append({"target": f"{v}: c=64 json throughput vs relais", "limit": "≥ 95 %",
                           "value": j64 and j64["ratio"] and j64["ratio"] * 100, "fmt": "{:.1f} %"})
            checks.append({"target": f"{v}: c=1 json added p50 vs relais", "limit": "< 0.02 ms",
                           "value": j1 and ms(j1["add50"]), "fmt": "{:.4f} ms"})
            for ch in checks[-2:]:
                lim = 95 if "throughput" in ch["target"] else 0.02
                ch["met"] = None if ch["value"] is None else (
                    ch["value"] >= lim if "throughput" in ch["target"] else ch["value"] < lim)

    # memory
    if gws:
        L.append("## Memory (RSS)\n")
        L.append("| gateway | idle after start MiB | idle after load MiB | peak under c=64 MiB | " +
                 " | ".join(f"open streams → RSS MiB ({n})" for n in ["1st", "2nd"]) +
                 " | KiB per additional open stream | upstream KiB/stream (reference) | upstream streams left 10 s after clients closed |")
        L.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for g in gws:
        peak64 = [P[k]["rss"] for k in P if k[1] == 64 and k[2] == g and P[k]["rss"] is not None]
        peak64 = max(peak64) if peak64 else None
        ms_ = mem.get(g, [])
        cells, per, up_per, left = ["–", "–"], None, None, []
        for i, r in enumerate(ms_[:2]):
            gk = r["rss_kb_ready"].get("gateway")
            cells[i] = f"{r['ready']} → {f(mib(gk), 1)}" + (f" (asked {r['requested']})" if r["requested"] != r["streams"] else "")
            left.append(str(r.get("upstream_active_after_close")))
        if len(ms_) >= 2:
            a_, b_ = ms_[0], ms_[1]
            ga, gb = a_["rss_kb_ready"].get("gateway"), b_["rss_kb_ready"].get("gateway")
            ua, ub = a_["rss_kb_ready"].get("upstream"), b_["rss_kb_ready"].get("upstream")
            dn = b_["ready"] - a_["ready"]
            if ga is not None and gb is not None and dn > 0:
                per = (gb - ga) / dn
            if ua is not None and ub is not None and dn > 0:
                up_per = (ub - ua) / dn
        idle = idle_kb if g == "relais" else None
        idle_after = idle_after_kb if g == "relais" else None
        L.append(f"| {g} | {f(mib(idle), 1)} | {f(mib(idle_after), 1)} | {f(mib(peak64), 1)} | {cells[0]} | {cells[1]} | "
                 f"{f(per, 1)} | {f(up_per, 1)} | {', '.join(left) or '–'} |")
        if g == "relais":
            def add(name, val, limit, ok, fmt):
                checks.append({"target": name, "value": val, "limit": limit,
                               "met": None if val is None else ok(val), "fmt": fmt})
            j1 = P.get(("json", 1, g))
            j64 = P.get(("json", 64, g))
            s64 = P.get(("sse", 64, g))
            p16 = P.get(("paced", 16, g))
            add("added latency, c=1 json, p50", j1 and ms(j1["add"]["p50_us"]), "< 0.1 ms", lambda v: v < 0.1, "{:.3f} ms")
            add("added latency, c=1 json, p99", j1 and ms(j1["add"]["p99_us"]), "< 0.5 ms", lambda v: v < 0.5, "{:.3f} ms")
            add("throughput c=64 json vs direct", j64 and j64["ratio"] and j64["ratio"] * 100, "≥ 25 %", lambda v: v >= 25, "{:.1f} %")
            cr = [x["cpu_ratio"] for x in (j64, s64) if x and x["cpu_ratio"] is not None]
            add("CPU per request ÷ upstream's (c=64, json and sse, worst)", max(cr) if cr else None, "≤ 3×", lambda v: v <= 3, "{:.2f}×")
            add("paced c=16 TTFT overhead p50", p16 and ms(p16["ttft_add"]["p50_us"]), "< 0.5 ms", lambda v: v < 0.5, "{:.3f} ms")
            add("paced c=16 full-stream overhead p50", p16 and ms(p16["add"]["p50_us"]), "< 1 ms", lambda v: v < 1.0, "{:.3f} ms")
            add("RSS idle", mib(idle), "< 20 MiB", lambda v: v < 20, "{:.1f} MiB")
            add("peak RSS under c=64", mib(peak64), "< 50 MiB", lambda v: v < 50, "{:.1f} MiB")
            add("RSS per additional open stream", per, "< 10 KiB", lambda v: v < 10, "{:.1f} KiB")
    if noisy:
        L.insert(4, f"> ⚠ Other processes used up to {max(noisy):.1f} cores during {len(noisy)} of the points "
                    f"(marked ⚠N, in cores, in 'cores busy'): those figures are disturbed. Rerun on a quiet machine "
                    f"or with --quiet-wait 60.\n")
    if gws:
        L.append("")
        L.append("RSS per open stream = (RSS with the 2nd count − RSS with the 1st) ÷ (difference in open streams), "
                 "all streams having received their first token from a paced upstream that keeps them open.\n")
    checks.append({"target": "no request fails", "value": total_errors, "limit": "0",
                   "met": total_errors == 0, "fmt": "{} failed"})

    if any(c["target"] != "no request fails" for c in checks):
        L.append("## Targets (Relais)\n")
    else:
        L.append("## Checks\n")
    L.append("| target | measured | limit | met |")
    L.append("|---|--:|--:|:-:|")
    for c in checks:
        v = "–" if c["value"] is None else c["fmt"].format(c["value"])
        met = "–" if c["met"] is None else ("yes" if c["met"] else "**NO**")
        L.append(f"| {c['target']} | {v} | {c['limit']} | {met} |")
    L.append("")
    if error_samples:
        L.append("## Failed requests (samples)\n")
        for e in error_samples[:20]:
            L.append(f"- `{e[:300]}`")
        L.append("")
    if meta.get("ledger"):
        L.append("## Usage ledger (counted after the run: each Relais stopped, its queue flushed, rows counted "
                 "with `relais usage`)\n")
        L.append("| relais | requests answered (incl. warmup) | ledger rows | dropped / write errors (/metrics) | note |")
        L.append("|---|--:|--:|--:|---|")
        for name, li in meta["ledger"].items():
            m = li.get("metrics") or {}
            dr = next((v for k, v in m.items() if k.startswith("relais_ledger_dropped")), None)
            we = next((v for k, v in m.items() if k.startswith("relais_ledger_write_errors")), None)
            L.append(f"| {name} | {li['answered']} | {'–' if li['rows'] is None else li['rows']} | "
                     f"{'–' if dr is None else int(dr)} / {'–' if we is None else int(we)} | "
                     f"{(li.get('note') or '').splitlines()[-1][:120] if li.get('note') else ''} |")
        L.append("")
    if perf_files:
        L.append("Profiles: " + ", ".join(os.path.basename(p) for p in perf_files) + " (in the results directory).\n")
    for c in checks:
        c.pop("fmt", None)
    return "\n".join(L) + "\n", checks


if __name__ == "__main__":
    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    rc = 2
    try:
        rc = main(sys.argv[1:])
    except Fatal as e:
        log(f"FATAL: {e}")
        rc = 2
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    finally:
        stop_all()
    sys.exit(rc)
