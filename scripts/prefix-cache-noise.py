#!/usr/bin/env python3
"""How far prefix caching moves the model's next-token distribution, beside a legitimate
perturbation of the same server (docs/serving.md, issue 62 item 3).

Two `modelbench serve` instances of one model are needed, both with the prefix cache on:
  A: the default prefill chunk (256);  B: another prefill chunk (e.g. --prefill-chunk 32).
For each of N two-turn chat conversations (a shared system prefix, a user prompt, the greedy
answer of A, a second user prompt), the second turn's next-token distribution (top-20
log-probabilities, max_tokens 1, greedy) is asked of
  A with its cache (the first turn's keys and values reused),
  A with "cache_prompt": false (the whole prompt run again, in A's chunks),
  B with "cache_prompt": false (the whole prompt in other chunks: the legitimate variant).
Printed per conversation and in all: the cached tokens A reported, whether the top token is
the same, and the largest |log-probability difference| over the tokens both top-20 lists hold:
cache vs no cache, and chunk 256 vs chunk B (both without cache). Loopback only; stdlib only.

Usage: prefix-cache-noise.py --url-a URL --url-b URL --model NAME [--n 8] [--prefix-words 120]
"""
import argparse
import json
import sys
import urllib.request


def post(url, body):
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url-a", required=True)
    ap.add_argument("--url-b", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--prefix-words", type=int, default=120)
    ap.add_argument("--corpus", default="fixtures/corpus/kjv-genesis-1-3.txt")
    a = ap.parse_args()
    try:
        words = open(a.corpus).read().split()
    except OSError as e:
        sys.exit(f"prefix-cache-noise.py: --corpus {a.corpus}: {e}")
    text = lambda at, n: " ".join(words[(at + k) % len(words)] for k in range(n))
    system = text(0, a.prefix_words)
    rows = []
    for i in range(a.n):
        u1, u2 = text(1000 + 97 * i, 40), text(5000 + 89 * i, 40)
        base = {"model": a.model, "temperature": 0}
        first = post(a.url_a, {**base, "max_tokens": 24, "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": u1}]})
        answer = first["choices"][0]["message"]["content"]
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": u1},
                {"role": "assistant", "content": answer}, {"role": "user", "content": u2}]
        ask = {**base, "max_tokens": 1, "logprobs": True, "top_logprobs": 20, "messages": msgs}

        def dist(url, cache):
            v = post(url, {**ask, "cache_prompt": cache})
            top = v["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            cached = v["usage"].get("prompt_tokens_details", {}).get("cached_tokens")
            return {t["token"]: t["logprob"] for t in top}, cached, v["usage"]["prompt_tokens"]

        with_cache, cached, prompt = dist(a.url_a, True)
        without, _, _ = dist(a.url_a, False)
        other_chunks, _, _ = dist(a.url_b, False)

        def compare(x, y):
            shared = set(x) & set(y)
            top_same = max(x, key=x.get) == max(y, key=y.get)
            return top_same, max((abs(x[t] - y[t]) for t in shared), default=float("nan"))

        rows.append((i, prompt, cached, *compare(with_cache, without), *compare(without, other_chunks)))
    print("| conversation | turn-2 prompt tokens | cached | cache vs none: top-1 same | max abs dlogprob | chunks 256 vs B: top-1 same | max abs dlogprob |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.2e} | {r[5]} | {r[6]:.2e} |")
    print(f"\nall: cache vs none max {max(r[4] for r in rows):.2e}, top-1 same {sum(r[3] for r in rows)}/{len(rows)}; "
          f"chunks max {max(r[6] for r in rows):.2e}, top-1 same {sum(r[5] for r in rows)}/{len(rows)}")


if __name__ == "__main__":
    main()
