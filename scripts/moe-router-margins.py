#!/usr/bin/env python3
"""Router margins of a mixture-of-experts GGUF fixture: how far top-k routing is from a tie.

Runs the model (a `llama` file with experts, Mixtral-style, or a `qwen3moe` file) in float64
NumPy on the token ids of a KLD reference (scripts/llama-cpp-kld-reference.sh's JSON: the
chunks llama.cpp scores, BOS put first where the file asks for it) and reports, per block,
the gap between the k-th and the (k+1)-th router logit of every position: where that gap is
of the order of the numeric differences between two implementations (about 1e-3 here), the
two may pick different experts and a KL-divergence gate compares noise. The model is written
from the reference definitions (HF transformers' MixtralForCausalLM / Qwen3MoeForCausalLM) on
the file's tensors, dequantized by gguf-py.

usage: moe-router-margins.py FILE.gguf REFERENCE.kld.json [--gguf-py DIR]
"""
import argparse
import json
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("reference")
    ap.add_argument("--gguf-py", help="llama.cpp's gguf-py folder (if `gguf` is not installed)")
    a = ap.parse_args()
    if a.gguf_py:
        sys.path.insert(0, a.gguf_py)
    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(a.gguf)

    def md(key, default=None):
        f = r.fields.get(key)
        if f is None:
            return default
        v = f.parts[f.data[0]]
        return v.tobytes().decode() if f.types[0].name == "STRING" else v[0].item()

    arch = md("general.architecture")
    T = {}
    for t in r.tensors:
        x = dequantize(t.data, t.tensor_type).astype(np.float64)
        T[t.name] = x.reshape([int(d) for d in reversed(t.shape)])
    n_layer = md(f"{arch}.block_count")
    n_head = md(f"{arch}.attention.head_count")
    n_kv = md(f"{arch}.attention.head_count_kv")
    n_embd = md(f"{arch}.embedding_length")
    hd = md(f"{arch}.attention.key_length", n_embd // n_head)
    eps = md(f"{arch}.attention.layer_norm_rms_epsilon")
    base = md(f"{arch}.rope.freq_base", 10000.0)
    k_used = md(f"{arch}.expert_used_count")
    neox = arch == "qwen3moe"

    ref = json.load(open(a.reference))
    n_ctx = ref["n_ctx"]
    ids = ref["token_ids"]

    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    inv = base ** (-np.arange(0, hd, 2) / hd)

    def rope(x):  # x: (heads, L, hd)
        L = x.shape[1]
        ang = np.arange(L)[:, None] * inv[None, :]
        c, s = np.cos(ang), np.sin(ang)
        if neox:
            a1, a2 = x[..., : hd // 2], x[..., hd // 2 :]
            return np.concatenate([a1 * c - a2 * s, a1 * s + a2 * c], -1)
        a1, a2 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a1 * c - a2 * s
        out[..., 1::2] = a1 * s + a2 * c
        return out

    gaps = [[] for _ in range(n_layer)]
    stds = [[] for _ in range(n_layer)]
    out_w = T.get("output.weight", T["token_embd.weight"])
    n_vocab = ref["n_vocab"]
    half = n_ctx // 2
    klds, same = [], 0
    for c in range(ref["n_chunks"]):
        toks = list(ids[c * n_ctx : (c + 1) * n_ctx])
        if ref["add_bos"]:
            toks[0] = ref["bos_id"]
        L = len(toks)
        x = T["token_embd.weight"][toks]
        mask = np.triu(np.full((L, L), -np.inf), 1)
        for l in range(n_layer):
            p = f"blk.{l}."
            h = rms(x, T[p + "attn_norm.weight"])
            q = (h @ T[p + "attn_q.weight"].T).reshape(L, n_head, hd).transpose(1, 0, 2)
            k = (h @ T[p + "attn_k.weight"].T).reshape(L, n_kv, hd).transpose(1, 0, 2)
            v = (h @ T[p + "attn_v.weight"].T).reshape(L, n_kv, hd).transpose(1, 0, 2)
            if neox:
                q = rms(q, T[p + "attn_q_norm.weight"])
                k = rms(k, T[p + "attn_k_norm.weight"])
            q, k = rope(q), rope(k)
            g = n_head // n_kv
            k, v = np.repeat(k, g, 0), np.repeat(v, g, 0)
            s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = (s @ v).transpose(1, 0, 2).reshape(L, n_head * hd)
            x = x + o @ T[p + "attn_output.weight"].T
            h = rms(x, T[p + "ffn_norm.weight"])
            logits = h @ T[p + "ffn_gate_inp.weight"].T  # (L, E)
            srt = -np.sort(-logits, -1)
            gaps[l].extend((srt[:, k_used - 1] - srt[:, k_used]).tolist())
            stds[l].append(logits.std())
            w = np.exp(logits - logits.max(-1, keepdims=True))
            w /= w.sum(-1, keepdims=True)
            top = np.argsort(-logits, -1)[:, :k_used]
            out = np.zeros_like(x)
            for e in range(logits.shape[1]):
                rows, slot = np.nonzero(top == e)
                if len(rows) == 0:
                    continue
                hw = h[rows]
                gte = hw @ T[p + "ffn_gate_exps.weight"][e].T
                up = hw @ T[p + "ffn_up_exps.weight"][e].T
                y = (gte / (1 + np.exp(-gte)) * up) @ T[p + "ffn_down_exps.weight"][e].T
                wt = w[rows, e] / w[rows][np.arange(len(rows))[:, None], top[rows]].sum(-1)
                out[rows] += y * wt[:, None]
            x = x + out
        # The scored positions against llama.cpp's reference (its top-10 logprobs, f32 KV):
        # the same KL divergence over the top tokens plus the rest as the suite's gate.
        lg = rms(x, T["output_norm.weight"]) @ out_w[:n_vocab].T
        lg = lg - lg.max(-1, keepdims=True)
        lp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
        for j in range(half, n_ctx - 1):
            i = c * (n_ctx - half - 1) + (j - half)
            rids = ref["reference"]["top_ids"][i]
            rlp = np.array(ref["reference"]["top_logprobs"][i])
            q = lp[j, rids]
            pr = max(1 - np.exp(rlp).sum(), 1e-30)
            qr = max(1 - np.exp(q).sum(), 1e-30)
            klds.append(float((np.exp(rlp) * (rlp - q)).sum() + pr * (np.log(pr) - np.log(qr))))
            same += int(np.argmax(lp[j]) == rids[0])
    print(f"{a.gguf}: {arch}, top-{k_used} of {T['blk.0.ffn_gate_inp.weight'].shape[0]} experts, "
          f"{len(gaps[0])} positions per block")
    k = np.sort(np.array(klds))
    print(f"float64 reference definition vs llama.cpp (f32 KV), {len(k)} scored positions: mean KLD "
          f"{k.mean():.3e}, p99 {k[round(0.99 * (len(k) - 1))]:.3e}, max {k.max():.3e}, "
          f"same top-1 {100 * same / len(k):.2f}%")
    print("block  logit std   gap k/k+1: min      p0.1%     p1%       median    < 1e-3  < 1e-2")
    for l, g in enumerate(gaps):
        g = np.array(g)
        std = float(np.mean(stds[l]))
        print(f"{l:5d}  {std:9.3f}   {g.min():9.2e} {np.quantile(g, 0.001):9.2e} {np.quantile(g, 0.01):9.2e} "
              f"{np.median(g):9.2e} {int((g < 1e-3).sum()):6d}  {int((g < 1e-2).sum()):6d}")


if __name__ == "__main__":
    main()
