#!/usr/bin/env python3
"""Where Relais's instructions go per request, by component: the self cost of every source
file in a callgrind profile (from `bench/cg.py`), grouped by the crate or Relais module the
file belongs to (first matching rule below), divided by the requests the profile covers.

  bench/cg.py --relais-bin target/release/relais --requests 500 defaults=/dev/null
  bench/stages.py --requests 500 bench/results/cg-*/callgrind.out.defaults.1 \\
      bench/results/cg-*/callgrind.out.defaults.2

A release build inlines across crates (fat LTO); the debug line tables still name the file
each instruction was written in, so inlined serde code counts as serde's. The groups say
whose code runs; `callgrind_annotate` on the same files gives the functions.
"""
import argparse
import re
import sys

# (group, regex on the source file the instructions came from), first match wins. The file,
# not the function: with fat LTO whole futures are inlined into tokio's worker loop, but the
# line table still names the file each inlined instruction was written in.
RULES = [
    ("allocator (mimalloc, malloc)", r"mimalloc|malloc\.c|/malloc/|alloc/src/alloc\.rs"),
    ("memcpy / memmove / memset / memcmp", r"/(memmove|memcpy|memset|memcmp|memchr|strlen)[-\w]*\.S"),
    ("SQLite (the ledger's writes)", r"(libsqlite3-sys|sqlite3\.c|/rusqlite-)"),
    ("Postgres client", r"/(tokio-postgres|postgres-protocol|postgres-types)-"),
    ("SHA-256 (receipts', sessions' digests)", r"/sha2-"),
    ("Relais: ledger, receipts, sessions", r"/src/(db|ledger|receipt|receipts)/|/src/server/sticky|"
     r"/src/router/session|/src/router/executor/(receipt|books)"),
    ("JSON (serde_json, serde)", r"/(serde_json|serde|serde_core|serde_derive)-"),
    ("HTTP client (reqwest, hyper-util's pool)", r"/(reqwest|hyper-util)-"),
    ("HTTP server and protocol (hyper, http, httparse, axum, tower)",
     r"/(hyper|http|httparse|http-body|http-body-util|h2|axum|axum-core|tower|tower-http|tower-layer|"
     r"tower-service|matchit)-\d"),
    ("async runtime (tokio, futures, mio)", r"/(tokio|futures-util|futures-core|futures-channel|"
     r"futures-task|mio|parking_lot|parking_lot_core|crossbeam-\w+|pin-project-lite)-\d"),
    ("logging and metrics (tracing, nu-ansi-term, Relais's)", r"/(tracing|tracing-subscriber|"
     r"tracing-core|nu-ansi-term|metrics|prometheus)[-\w]*-\d|/src/(observe|metrics)|/src/server/(log|access)"),
    ("Relais: doors and pipeline (src/server)", r"/src/server/"),
    ("Relais: routing and executor (src/router)", r"/src/router/"),
    ("Relais: providers, translation, wire types", r"/src/(provider|translate|anthropic|openai|responses|sse)"),
    ("Relais: other", r"/work/[^ ]*/src/|^src/"),
    ("other crates", r"\.cargo/registry/"),
    ("Rust std, core, alloc (fmt, collections, strings)", r"/library/(std|core|alloc)/"),
    ("libc, kernel entry, the rest", r"."),
]
COMPILED = [(g, re.compile(r)) for g, r in RULES]


def self_costs(path):
    """Self Ir by source file, read straight from a callgrind output file (callgrind_annotate
    mixes in inclusive costs for the thread-start frames). A cost line right after `calls=`
    is the call's inclusive cost, not the caller's own, and is skipped."""
    costs = {}
    names = {}  # compressed names "(id) name", in case the file was written compressed

    def name_of(v):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?$", v)
        if not m:
            return v
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), v)

    fl = cur = "?"
    after_call = False
    with open(path, errors="replace") as fh:
        for line in fh:
            if line[:1].isdigit() or line[:1] in "+-*":
                if after_call:
                    after_call = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    costs[cur] = costs.get(cur, 0) + int(parts[1])
                continue
            after_call = False
            if line.startswith("fl="):
                fl = cur = name_of(line[3:].strip())
            elif line.startswith(("fi=", "fe=")):
                cur = name_of(line[3:].strip())
            elif line.startswith("fn="):
                cur = fl
            elif line.startswith("calls="):
                after_call = True
    return costs


def group_of(path):
    for g, rx in COMPILED:
        if rx.search(path):
            return g
    return RULES[-1][0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, required=True, help="requests the profiles cover")
    ap.add_argument("--top", type=int, default=0, help="also list the N costliest source files")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    groups, funcs = {}, {}
    for f in a.files:
        for name, ir in self_costs(f).items():
            g = group_of(name)
            groups[g] = groups.get(g, 0) + ir
            funcs[name] = funcs.get(name, 0) + ir
    total = sum(groups.values())
    if not total:
        print("no costs found", file=sys.stderr)
        return 2
    print(f"| component | instructions / request | share |\n|---|--:|--:|")
    for g, ir in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {g} | {ir / a.requests:,.0f} | {100 * ir / total:.1f} % |")
    print(f"| **total** | **{total / a.requests:,.0f}** | 100 % |")
    if a.top:
        print(f"\n| source file | group | instructions / request |\n|---|---|--:|")
        for name, ir in sorted(funcs.items(), key=lambda kv: -kv[1])[: a.top]:
            short = name if len(name) < 110 else name[:107] + "..."
            print(f"| `{short}` | {group_of(name)} | {ir / a.requests:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
