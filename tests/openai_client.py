"""The official OpenAI Python client against `modelbench serve` (tests/openai_client.rs runs
this with the client scripts/install-openai-client.sh installs).

Usage: python3 tests/openai_client.py BASE_URL MODEL PREFILLS
PREFILLS: how many times the server runs the prompt of an n=3 request: 1 where the model
copies a sequence after its prefill (the project's batched implementations), 3 where each choice
prefills by itself (models that run one sequence per forward).
Prints one `ok: ...` line per check; the first failed check raises (exit 1 with its message).
"""

import sys
import urllib.request

import openai

base, model, prefills = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)
PROMPT = "a b c d e f g h i j k l"
checks = 0


def ok(what):
    global checks
    checks += 1
    print("ok:", what, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def metric(name):
    text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
    for line in text.splitlines():
        if line.startswith("modelbench_" + name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no modelbench_{name} in /metrics")


# models.list
ids = [m.id for m in client.models.list().data]
check(ids == [model], f"models.list: {ids}")
ok("models.list names the served model")

# n = 3 at temperature 0.8: distinct seeded choices from one prefill.
before = metric("prompt_tokens_total")
r = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, n=3,
                              temperature=0.8, seed=1234, extra_body={"ignore_eos": True})
check([c.index for c in r.choices] == [0, 1, 2], f"n=3 indexes: {r.choices}")
texts = [c.text for c in r.choices]
check(len(set(texts)) == 3, f"n=3 at temperature 0.8 gave repeated texts: {texts}")
check(all(c.finish_reason == "length" for c in r.choices), f"{r.choices}")
check(r.usage.completion_tokens == 36, f"3 x 12 completion tokens: {r.usage}")
prefilled = metric("prompt_tokens_total") - before
check(prefilled == prefills * r.usage.prompt_tokens,
      f"{prefills} prefill(s): the server ran {prefilled} prompt tokens for a {r.usage.prompt_tokens}-token prompt")
ok(f"n=3: 3 distinct choices, {r.usage.prompt_tokens} prompt tokens prefilled {prefills} time(s)")

# seed: the same seed gives the same texts, another seed other texts.
again = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, n=3,
                                  temperature=0.8, seed=1234, extra_body={"ignore_eos": True})
check([c.text for c in again.choices] == texts, "the same seed gave other texts")
other = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, n=3,
                                  temperature=0.8, seed=99, extra_body={"ignore_eos": True})
check([c.text for c in other.choices] != texts, "another seed gave the same texts")
ok("seed: same seed same texts, another seed other texts")

# n = 2 in chat, streamed with usage: every choice streams and finishes; usage once at the end.
stream = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": PROMPT}], max_tokens=5, n=2,
    temperature=0.8, seed=5, stream=True, stream_options={"include_usage": True},
    extra_body={"ignore_eos": True})
chunks = list(stream)
check(chunks[-1].choices == [] and chunks[-1].usage is not None, f"last chunk: {chunks[-1]}")
check(all(c.usage is None for c in chunks[:-1]), "usage only in the final chunk")
check(chunks[-1].usage.completion_tokens == 10, f"2 x 5 tokens: {chunks[-1].usage}")
check(chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 10, f"{chunks[-1].usage}")
finish = {}
streamed = {0: "", 1: ""}
for c in chunks[:-1]:
    for ch in c.choices:
        streamed[ch.index] += ch.delta.content or ""
        if ch.finish_reason:
            finish[ch.index] = ch.finish_reason
check(finish == {0: "length", 1: "length"}, f"finish reasons {finish}")
check(streamed[0] != streamed[1], f"two choices, one text: {streamed}")
ok("chat n=2 streamed: both choices finish, usage in the final chunk only")

# Greedy chat with logprobs: the chosen token is the most likely one; the tokens spell the text.
r = client.chat.completions.create(
    model=model, messages=[{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": PROMPT}],
    max_tokens=6, temperature=0, logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
content = r.choices[0].logprobs.content
check(len(content) == r.usage.completion_tokens == 6, f"{len(content)} logprob entries")
check("".join(t.token for t in content) == r.choices[0].message.content,
      "the tokens do not spell the text")
for t in content:
    check(len(t.top_logprobs) == 3, f"top_logprobs: {t.top_logprobs}")
    check(t.logprob <= 0 and t.logprob == t.top_logprobs[0].logprob,
          f"greedy: the chosen token is the most likely: {t}")
    check(list(t.bytes) == list(t.token.encode()), f"bytes: {t}")
    check(all(a.logprob >= b.logprob for a, b in zip(t.top_logprobs, t.top_logprobs[1:])),
          "top_logprobs in order")
ok("chat logprobs/top_logprobs: greedy picks the top entry, tokens spell the text")

# Completions logprobs (the legacy shape), streamed too.
r = client.completions.create(model=model, prompt=PROMPT, max_tokens=5, temperature=0,
                              logprobs=2, extra_body={"ignore_eos": True})
lp = r.choices[0].logprobs
check(len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5, f"{lp}")
check("".join(lp.tokens) == r.choices[0].text, "completion tokens do not spell the text")
check(all(len(d) >= 1 and max(d.values()) == x for d, x in zip(lp.top_logprobs, lp.token_logprobs)),
      f"greedy: the chosen token is the most likely: {lp}")
offsets = [0]
for t in lp.tokens[:-1]:
    offsets.append(offsets[-1] + len(t))
check(lp.text_offset == offsets, f"text_offset {lp.text_offset} vs {offsets}")
pieces = list(client.completions.create(model=model, prompt=PROMPT, max_tokens=5, temperature=0,
                                        logprobs=2, stream=True, extra_body={"ignore_eos": True}))
streamed_tokens = [t for c in pieces for ch in c.choices if ch.logprobs for t in ch.logprobs.tokens]
check(streamed_tokens == lp.tokens, f"streamed logprob tokens {streamed_tokens} vs {lp.tokens}")
ok("completions logprobs: tokens, token_logprobs, top_logprobs, text_offset; streamed alike")

# stop: a stop string spanning two tokens ends the text right before it, finish_reason "stop";
# without it the same request runs to max_tokens, finish_reason "length".
full = client.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0,
                                 logprobs=0, extra_body={"ignore_eos": True})
check(full.choices[0].finish_reason == "length", f"{full.choices[0]}")
toks = full.choices[0].logprobs.tokens
text = full.choices[0].text
cut = len(toks[0]) + len(toks[1])
stop = text[cut - 1:cut + 1]  # the last character of token 2 and the first of token 3
check(len(stop) == 2, f"tokens {toks}")
r = client.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0, stop=[stop],
                              extra_body={"ignore_eos": True})
check(r.choices[0].text == text[:text.find(stop)], f"stop {stop!r}: {r.choices[0].text!r} of {text!r}")
check(r.choices[0].finish_reason == "stop", f"{r.choices[0]}")
s = list(client.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0,
                                   stop=[stop], stream=True, extra_body={"ignore_eos": True}))
check("".join(ch.text for c in s for ch in c.choices) == r.choices[0].text, "streamed stop text")
check([ch.finish_reason for c in s for ch in c.choices if ch.finish_reason] == ["stop"], "stream finish")
ok(f"stop {stop!r} across a token boundary: text before it, finish_reason stop (streamed alike)")

# Typed errors.
for kwargs, param in [({"n": 0}, "n"), ({"n": 17}, "n")]:
    try:
        client.completions.create(model=model, prompt="a", max_tokens=1, **kwargs)
        raise AssertionError(f"{kwargs} accepted")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and e.body["param"] == param, f"{kwargs}: {e.body}")
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "a"}],
                                   max_tokens=1, top_logprobs=2)
    raise AssertionError("top_logprobs without logprobs accepted")
except openai.BadRequestError as e:
    check(e.body["param"] == "top_logprobs", f"{e.body}")
try:
    client.completions.create(model="gpt-4", prompt="a", max_tokens=1)
    raise AssertionError("an unknown model accepted")
except openai.NotFoundError as e:
    check(e.status_code == 404, f"{e}")
ok("typed errors: n out of range, top_logprobs without logprobs (400), unknown model (404)")

print(f"{checks} checks passed with openai {openai.__version__}")
