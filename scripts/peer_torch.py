#!/usr/bin/env python3
"""The PyTorch peer of `modelbench peers` (issues 15 and 30): Hugging Face transformers'
generate() on the same safetensors weights, prompt token ids, lengths, dtype and thread count as
modelbench's candle run, timed the way modelbench's engine times itself. Run it with the venv of
scripts/setup-torch.sh.

It is a long-lived worker, so that its trials can alternate with candle's in the same minutes
(A B, B A, ...) without paying a process start and a model load per repetition: it loads the
model once, then runs one generation per request line on stdin.

    peer_torch.py --serve SPEC.json

SPEC.json: model_dir, threads, dtype (f32|f16|bf16), device (cpu|cuda), attn_implementation
(eager, sdpa, ...; null: transformers' default).
torch.set_num_threads and torch.set_num_interop_threads are both set to `threads` before
anything runs.

stdout, one JSON object per line, nothing else (everything else the libraries print goes to
stderr):
- first, once loaded: versions, dtype, device, the thread counts torch reports
  (get_num_threads, get_num_interop_threads), the attention implementation the model was built
  with, the model class and the load time (from_pretrained + to(device), seconds);
- then, for each request line {"ids": [...], "new_tokens": G, "sampling": {temperature, top_k,
  top_p, repetition_penalty} (temperature 0: greedy), "seed": S}, one reply:
  {"prompt_tokens", "token_times_s", "generated_ids", "cache"}.
An empty line or end of input ends the worker (exit 0).

Timing, per request: the clock starts just before generate() (the ids already a tensor on the
device, no tokenizer involved); a streamer takes a timestamp each time generate() hands it a new
token, after the token is on the host (`.cpu()`, which synchronises CUDA). TTFT is the first
token's time (prefill + the first pick), E2E the last's, as in modelbench's engine. The length
is fixed: min_new_tokens = max_new_tokens, so EOS never ends a run. The KV cache is on
(use_cache=True; the reply names the cache class generate() used).

Errors: one line on stderr, exit 1 (2: bad spec or request).
"""
import json
import os
import platform
import sys
import time


def fail(msg, code=1):
    print(f"error: peer_torch.py: {msg}", file=sys.stderr)
    sys.exit(code)


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "--serve":
        fail("usage: peer_torch.py --serve SPEC.json", 2)
    try:
        spec = json.load(open(sys.argv[2]))
        model_dir = spec["model_dir"]
        threads = int(spec["threads"])
        dtype_name = spec["dtype"]
        device = spec["device"]
        attn = spec.get("attn_implementation")
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"bad spec {sys.argv[2]}: {e!r}", 2)
    if threads < 1:
        fail("the spec needs threads >= 1", 2)

    # The protocol owns stdout; whatever the libraries print goes to stderr.
    proto = sys.stdout
    sys.stdout = sys.stderr

    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(threads)

    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    dtypes = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
    if dtype_name not in dtypes:
        fail(f"dtype {dtype_name!r}: expected one of f32, f16, bf16", 2)
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"device {device}: torch sees no CUDA device", 2)

    t0 = time.perf_counter()
    kw = {"dtype": dtypes[dtype_name]}
    if attn:
        kw["attn_implementation"] = attn
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kw)
    model.to(device)
    model.eval()
    load_s = time.perf_counter() - t0

    def send(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    send({
        "engine": "torch",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python": platform.python_version(),
        "torch_cuda_build": torch.version.cuda,
        "device": device,
        "dtype": dtype_name,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "model_dir": os.path.abspath(model_dir),
        "model_class": type(model).__name__,
        "attn_requested": attn,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "load_s": load_s,
        "pid": os.getpid(),
    })

    class Clock(BaseStreamer):
        """Timestamps every token generate() streams (the first put() is the prompt)."""

        def __init__(self, start):
            self.start = start
            self.prompt_seen = False
            self.times = []
            self.ids = []

        def put(self, value):
            host = value.cpu()  # on the host: synchronises the device
            now = time.perf_counter()
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            for t in host.reshape(-1).tolist():
                self.times.append(now - self.start)
                self.ids.append(int(t))

        def end(self):
            pass

    for line in sys.stdin:
        if not line.strip():
            break
        try:
            req = json.loads(line)
            ids = [int(i) for i in req["ids"]]
            new_tokens = int(req["new_tokens"])
            sampling = req.get("sampling") or {}
            seed = int(req.get("seed", 0))
        except (ValueError, KeyError, TypeError) as e:
            fail(f"bad request {line.strip()[:80]!r}: {e!r}", 2)
        if new_tokens < 1 or not ids:
            fail("a request needs ids and new_tokens >= 1", 2)
        greedy = float(sampling.get("temperature") or 0.0) <= 0.0
        kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=True,
                      return_dict_in_generate=True)
        if greedy:
            kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        else:
            kwargs.update(
                do_sample=True,
                temperature=float(sampling["temperature"]),
                top_k=sampling.get("top_k") or 0,
                top_p=sampling.get("top_p") or 1.0,
            )
        if sampling.get("repetition_penalty"):
            kwargs["repetition_penalty"] = float(sampling["repetition_penalty"])
        torch.manual_seed(seed)
        with torch.inference_mode():
            inp = torch.tensor([ids], dtype=torch.long, device=device)
            mask = torch.ones_like(inp)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            clock = Clock(start)
            out = model.generate(input_ids=inp, attention_mask=mask, streamer=clock, **kwargs)
        if len(clock.times) != new_tokens:
            fail(f"generate() produced {len(clock.times)} tokens, expected {new_tokens}")
        cache = getattr(out, "past_key_values", None)
        send({
            "prompt_tokens": len(ids),
            "token_times_s": clock.times,
            "generated_ids": clock.ids,
            "cache": type(cache).__name__ if cache is not None else None,
        })


if __name__ == "__main__":
    main()
