#!/usr/bin/env python3
"""Writes fixtures/datasets/kjv-conversations.jsonl, the dataset `modelbench load --dataset`
ships with (issue 62): 32 ShareGPT-shaped conversations of 2-5 user turns whose messages ask
about passages of the project's corpus (fixtures/corpus/kjv-genesis-1-3.txt, public domain),
three of four after one of three shared system messages (a prefix cache has something to
reuse). Seeded: running it again writes the same bytes. No answers: `load` sends the
server's own answers as the history, so a file's answers would be read and left out.

    scripts/make-conversations.py [OUT]"""
import json, os, random, re, sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, 'fixtures/datasets/kjv-conversations.jsonl')
text = open(os.path.join(root, 'fixtures/corpus/kjv-genesis-1-3.txt')).read()
text = ' '.join(l for l in text.splitlines() if not re.fullmatch(r'Genesis \d+', l.strip()))
sentences = [s.strip() for s in re.split(r'(?<=[.?!])\s+', text) if s.strip()]
systems = [
    'You are a patient teacher of old English texts. Answer in plain modern English and keep '
    'each answer short.',
    'You are a literary scholar. When asked about a passage, name who acts in it, what happens, '
    'and one detail a first reader could miss.',
    'You explain texts to children aged ten. Use short sentences and everyday words.',
]
asks = [
    'Explain this passage in plain words:\n\n{p}',
    'What happens in this passage?\n\n{p}',
    'Summarise this in one sentence: {p}',
    'Rewrite this in modern English: {p}',
    'And this part? {p}',
    'Who speaks here, and to whom? {p}',
    'Why might the writer repeat words in this passage? {p}',
]
rng = random.Random(62)
with open(out, 'w') as f:
    for n in range(32):
        conv = []
        if rng.random() < 0.75:
            conv.append({'from': 'system', 'value': systems[rng.randrange(len(systems))]})
        at = rng.randrange(len(sentences))
        for _ in range(rng.randint(2, 5)):
            k = rng.randint(1, 4)
            p = ' '.join(sentences[(at + i) % len(sentences)] for i in range(k))
            at = (at + k) % len(sentences)
            conv.append({'from': 'human', 'value': asks[rng.randrange(len(asks))].format(p=p)})
        f.write(json.dumps({'id': f'kjv-{n:02d}', 'conversations': conv}) + '\n')
print(out)
