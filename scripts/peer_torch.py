#!/usr/bin/env python3
"""The PyTorch peer of `modelbench peers` (issue 15): Hugging Face transformers' generate() on
the same safetensors weights, prompts, lengths and thread count as modelbench's candle run,
timed the way modelbench's engine times itself. Run it with the venv of scripts/setup-torch.sh.

Input (one JSON file, --spec): model_dir, prompts (lists of token ids: the first `warmup` are
untimed warm-ups, the rest are the trials), new_tokens, threads, dtype (f32|f16|bf16),
device (cpu|cuda), sampling {temperature, top_k, top_p, repetition_penalty} (temperature 0 =
greedy), seed.

Timing, per generation: the clock starts just before generate() (prompt already a tensor on
the device, no tokenizer involved); a streamer takes a timestamp each time generate() hands it
a new token, after the token is on the host (`.cpu()`, which synchronises CUDA). TTFT is the
first token's time (prefill + the first pick), E2E the last's, as in modelbench's engine. The
length is fixed: min_new_tokens = max_new_tokens, so EOS never ends a run.

Output: one JSON object on stdout (versions, dtype, threads as torch reports them, each
trial's token timestamps and generated ids). Errors: one line on stderr, exit 1 (2: bad spec).
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
    if len(sys.argv) != 3 or sys.argv[1] != "--spec":
        fail("usage: peer_torch.py --spec SPEC.json", 2)
    try:
        spec = json.load(open(sys.argv[2]))
        model_dir = spec["model_dir"]
        prompts = spec["prompts"]
        warmup = int(spec["warmup"])
        new_tokens = int(spec["new_tokens"])
        threads = int(spec["threads"])
        dtype_name = spec["dtype"]
        device = spec["device"]
        sampling = spec["sampling"]
        seed = int(spec["seed"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"bad spec {sys.argv[2]}: {e!r}", 2)
    if new_tokens < 1 or warmup < 0 or len(prompts) <= warmup or threads < 1:
        fail("the spec needs new_tokens >= 1, threads >= 1 and more prompts than warm-ups", 2)

    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    dtypes = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
    if dtype_name not in dtypes:
        fail(f"dtype {dtype_name!r}: expected one of f32, f16, bf16", 2)
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"device {device}: torch sees no CUDA device", 2)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtypes[dtype_name])
    model.to(device)
    model.eval()
    load_s = time.perf_counter() - t0

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

    greedy = float(sampling.get("temperature") or 0.0) <= 0.0
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=True)
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

    runs = []
    with torch.inference_mode():
        for i, ids in enumerate(prompts):
            inp = torch.tensor([ids], dtype=torch.long, device=device)
            mask = torch.ones_like(inp)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            clock = Clock(start)
            model.generate(input_ids=inp, attention_mask=mask, streamer=clock, **kwargs)
            if len(clock.times) != new_tokens:
                fail(f"generate() produced {len(clock.times)} tokens, expected {new_tokens}")
            if i >= warmup:
                runs.append({"prompt_tokens": len(ids), "token_times_s": clock.times, "generated_ids": clock.ids})

    out = {
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
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "load_s": load_s,
        "new_tokens": new_tokens,
        "greedy": greedy,
        "sampling": sampling,
        "seed": seed,
        "warmup": warmup,
        "warmup_convention": f"{warmup} untimed generate() calls of the same shape (other prompts) before the trials",
        "trials": runs,
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
