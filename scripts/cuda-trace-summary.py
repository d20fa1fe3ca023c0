#!/usr/bin/env python3
"""Where a decode step's time goes on the GPU, from two kernel traces of scripts/cuda-kernel-trace.c.

    cuda-trace-summary.py --engine candle --short A.tsv --short-tokens 32 --short-wall-s 0.21 \
        --long B.tsv --long-tokens 160 --long-wall-s 1.02 [--untraced-short-wall-s S --untraced-long-wall-s S] \
        --out summary.json

A and B are the same program, model, prompt and settings generating two numbers of new tokens
(one prompt pass, then greedy single-token steps). Everything the two runs share (loading,
warm-up, the prompt pass, CUDA graph capture, teardown) cancels in B - A, which is what the
extra decode steps cost: per token, the device's busy time (the union of kernel, copy and memset
intervals on the device's own clock), the kernel time, the number of kernels, and the wall time
the program measured for those steps (its own clock, --*-wall-s: decode seconds of each run).
The share of the wall time in which the device runs nothing is the host-bound (launch-bound)
share of decode: host work between launches, launch latency and synchronisation.
Standard library only (it runs on the GPU machine).
"""
import argparse
import json
import re
import sys
from collections import defaultdict


def read(path):
    acts, dropped = [], 0
    with open(path) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if p[0] == "K":
                acts.append(("K", int(p[1]), int(p[2]), p[5] if len(p) > 5 else "?"))
            elif p[0] == "M":
                acts.append(("M", int(p[1]), int(p[2]), "memcpy kind %s" % (p[5] if len(p) > 5 else "?")))
            elif p[0] == "S":
                acts.append(("S", int(p[1]), int(p[2]), "memset"))
            elif p[0] == "D":
                dropped = max(dropped, int(p[1]))
    return acts, dropped


def union_ns(acts):
    total, cur_s, cur_e = 0, None, None
    for _, s, e, _ in sorted(acts, key=lambda a: a[1]):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def short_name(n):
    """A readable kernel name: the function's identifier of an Itanium-mangled name."""
    if not n.startswith("_Z"):
        return n[:80]
    s = n[2:]
    if s.startswith("N"):  # nested: take the last plain identifier before E / template args
        s = s[1:]
        parts = []
        while s and s[0].isdigit():
            m = re.match(r"(\d+)", s)
            k = int(m.group(1))
            parts.append(s[len(m.group(1)):len(m.group(1)) + k])
            s = s[len(m.group(1)) + k:]
        return "::".join(parts)[:80] or n[:80]
    m = re.match(r"(\d+)", s)
    if m:
        k = int(m.group(1))
        return s[len(m.group(1)):len(m.group(1)) + k][:80]
    return n[:80]


def stats(acts):
    kern = [a for a in acts if a[0] == "K"]
    by = defaultdict(lambda: [0, 0])
    for _, s, e, n in acts:
        key = short_name(n) if _ == "K" else n
        by[key][0] += 1
        by[key][1] += e - s
    return {
        "busy_ns": union_ns(acts),
        "kernel_ns": sum(e - s for _, s, e, _ in kern),
        "kernels": len(kern),
        "copy_ns": sum(e - s for k, s, e, _ in acts if k != "K"),
        "copies": sum(1 for a in acts if a[0] != "K"),
        "by_name": by,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", required=True)
    ap.add_argument("--short", required=True)
    ap.add_argument("--long", required=True)
    ap.add_argument("--short-tokens", type=int, required=True)
    ap.add_argument("--long-tokens", type=int, required=True)
    ap.add_argument("--short-wall-s", type=float, required=True, help="decode seconds of the short run (its own clock)")
    ap.add_argument("--long-wall-s", type=float, required=True)
    ap.add_argument("--untraced-short-wall-s", type=float)
    ap.add_argument("--untraced-long-wall-s", type=float)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.long_tokens <= a.short_tokens:
        sys.exit("error: --long-tokens must exceed --short-tokens")
    A, da = read(a.short)
    B, db = read(a.long)
    if not A or not B:
        sys.exit("error: an empty trace (%s: %d, %s: %d activities): was CUDA_INJECTION64_PATH loaded?" % (a.short, len(A), a.long, len(B)))
    sa, sb = stats(A), stats(B)
    dn = a.long_tokens - a.short_tokens
    per = lambda k: (sb[k] - sa[k]) / dn
    wall_ns = (a.long_wall_s - a.short_wall_s) * 1e9 / dn
    busy = per("busy_ns")
    out = {
        "engine": a.engine,
        "method": "CUPTI activity records (scripts/cuda-kernel-trace.c, CUDA_INJECTION64_PATH) of two runs generating "
        f"{a.short_tokens} and {a.long_tokens} tokens; per decode token = (long - short) / {dn}. busy = union of the "
        "device's kernel/copy/memset intervals; wall = the program's own decode seconds (long - short) / extra tokens",
        "decode_tokens_differenced": dn,
        "wall_us_per_token": wall_ns / 1e3,
        "device_busy_us_per_token": busy / 1e3,
        "kernel_us_per_token": per("kernel_ns") / 1e3,
        "copy_us_per_token": per("copy_ns") / 1e3,
        "kernels_per_token": per("kernels"),
        "copies_per_token": per("copies"),
        "device_idle_us_per_token": (wall_ns - busy) / 1e3,
        "launch_bound_share": (wall_ns - busy) / wall_ns if wall_ns > 0 else None,
        "dropped_records": {"short": da, "long": db},
    }
    if a.untraced_short_wall_s is not None and a.untraced_long_wall_s is not None:
        u = (a.untraced_long_wall_s - a.untraced_short_wall_s) * 1e9 / dn
        out["untraced_wall_us_per_token"] = u / 1e3
        out["launch_bound_share_untraced_wall"] = (u - busy) / u if u > 0 else None
    names = set(sa["by_name"]) | set(sb["by_name"])
    rows = []
    for n in names:
        c = (sb["by_name"].get(n, [0, 0])[0] - sa["by_name"].get(n, [0, 0])[0]) / dn
        t = (sb["by_name"].get(n, [0, 0])[1] - sa["by_name"].get(n, [0, 0])[1]) / dn
        if c > 0 or t > 0:
            rows.append({"name": n, "per_token": c, "us_per_token": t / 1e3})
    rows.sort(key=lambda r: -r["us_per_token"])
    out["top_kernels"] = rows[:15]
    json.dump(out, open(a.out, "w"), indent=1)
    print(
        f"{a.engine}: per decode token: wall {out['wall_us_per_token']:.1f} us, device busy {out['device_busy_us_per_token']:.1f} us "
        f"({out['kernels_per_token']:.1f} kernels, {out['kernel_us_per_token']:.1f} us in kernels), idle {out['device_idle_us_per_token']:.1f} us: "
        f"launch-bound share {100 * out['launch_bound_share']:.1f}%"
    )
    for r in rows[:8]:
        print(f"  {r['us_per_token']:8.1f} us  {r['per_token']:6.1f}x  {r['name']}")


if __name__ == "__main__":
    main()
