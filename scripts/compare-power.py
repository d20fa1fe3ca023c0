#!/usr/bin/env python3
"""The power of the unpaired gate as tests/compare.rs uses it (issue 61 item 6): TRIES tries,
each `modelbench run --model fixture:llama --scenario short` (default trials and warm-up) for
a base, an unchanged rerun and one run per injected slowdown (MODELBENCH_INJECT_SLOWDOWN=
all:X%, a busy-wait inside the timed region), then `modelbench compare BASE NEW` at its
defaults for each: how often each size is flagged (exit 1) and the rerun is not. Every try
has a reports folder of its own (no measured noise profile there: the machine's committed
one, or the default ±20%, as in the test). Runs from the repository root (where the
committed profiles are). Prints a Markdown table; every try is appended to OUT.jsonl.

    scripts/compare-power.py EXE OUT.jsonl TRIES 50 100 200 300 [--load]
    scripts/compare-power.py --table OUT.jsonl

--load: CI's load beside it, as in `cargo test`: another model's runs back to back
(fixture:qwen3, short) for the whole series, on the same two cores. (`modelbench sensitivity`
measures the gate's power in one process; this drives the CLI exactly as tests/compare.rs's
end-to-end test does: default `run`, default `compare` with the machine's noise profile.)
Stopping it (Ctrl-C or SIGTERM) stops the --load loop too."""
import json, os, re, signal, subprocess, sys, tempfile, time, statistics as st

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(exe, reports, label, inject=None):
    env = dict(os.environ, MODELBENCH_REPORTS=reports, MODELBENCH_DB='off', HF_HUB_OFFLINE='1')
    env.pop('MODELBENCH_INJECT_SLOWDOWN', None)
    if inject:
        env['MODELBENCH_INJECT_SLOWDOWN'] = inject
    r = subprocess.run([exe, 'run', '--model', 'fixture:llama', '--scenario', 'short', '--label', label],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f'run {label}: exit {r.returncode}\n{r.stderr[-2000:]}')
    return next(os.path.join(reports, d) for d in os.listdir(reports) if d.endswith('-' + label))


def compare(exe, reports, base, new):
    env = dict(os.environ, MODELBENCH_REPORTS=reports, MODELBENCH_DB='off', HF_HUB_OFFLINE='1')
    r = subprocess.run([exe, 'compare', base, new], cwd=ROOT, env=env, capture_output=True, text=True)
    # The benchmark's row: | Kind | Benchmark | ... | new/base | 95% CI | noise | verdict | outputs |
    rows = [l for l in r.stdout.splitlines() if l.startswith('| generation | short/')]
    cells = [c.strip() for c in rows[0].strip('|').split('|')] if rows else None
    m = re.match(r'\[(\d+\.\d+), (\d+\.\d+)\]', cells[9]) if cells else None
    verdict = cells[11] if cells else None
    return {'exit': r.returncode, 'verdict': verdict,
            'ratio': float(cells[8]) if cells else None,
            'ci': [float(m.group(1)), float(m.group(2))] if m else None,
            'row': rows[0] if rows else r.stdout[-400:]}


def main():
    args = sys.argv[1:]
    if args[:1] == ['--table'] and len(args) == 2:
        rows = [json.loads(l) for l in open(args[1]) if l.strip()]
        return table(rows)
    load = '--load' in args
    args = [a for a in args if a != '--load']
    if len(args) < 4:
        sys.exit(__doc__)
    exe, out, tries, pcts = os.path.abspath(args[0]), args[1], int(args[2]), args[3:]
    bg = None
    if load:
        bg = subprocess.Popen(['sh', '-c', f'd=$(mktemp -d); while :; do MODELBENCH_REPORTS=$d MODELBENCH_DB=off '
                               f'"{exe}" run --model fixture:qwen3 --scenario short --label bg >/dev/null 2>&1; '
                               f'rm -rf "$d"/*; done'], start_new_session=True)
    rows = []
    # A SIGTERM (pkill) ends the series through `finally`, which stops the --load loop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with open(out, 'a') as f:
            for t in range(tries):
                reports = tempfile.mkdtemp(prefix='compare-power-')
                t0 = time.time()
                base = run(exe, reports, 'base')
                again = run(exe, reports, 'again')
                slow = {p: run(exe, reports, f'slow{p}', f'all:{p}%') for p in pcts}
                row = {'try': t, 'load': load, 'aa': compare(exe, reports, base, again),
                       'sizes': {p: compare(exe, reports, base, s) for p, s in slow.items()},
                       'seconds': round(time.time() - t0)}
                f.write(json.dumps(row) + '\n'); f.flush(); rows.append(row)
                print(f"try {t}: A/A exit {row['aa']['exit']} {row['aa']['verdict']}; " + ', '.join(
                    f"{p}%: exit {x['exit']} {x['ratio']}x {x['verdict']}" for p, x in row['sizes'].items()),
                    file=sys.stderr, flush=True)
    finally:
        if bg:
            os.killpg(bg.pid, 15)
    table(rows)


def table(rows):
    print('| injected slowdown (all:X%) | tries | flagged (exit 1) | verdicts | ratios (min-max) |')
    print('|---|---:|---:|---|---:|')
    pcts = sorted({p for r in rows for p in r['sizes']}, key=float)
    for name, get in [('unchanged rerun', lambda r: r['aa'])] + [(f'{p}%', (lambda p: lambda r: r['sizes'].get(p))(p)) for p in pcts]:
        xs = [get(r) for r in rows if get(r)]
        v = {}
        for x in xs:
            v[x['verdict']] = v.get(x['verdict'], 0) + 1
        rr = [x['ratio'] for x in xs if x['ratio']]
        tail = f' | {min(rr):.2f}x-{max(rr):.2f}x |' if rr else ' | - |'
        print(f"| {name} | {len(xs)} | {sum(x['exit'] == 1 for x in xs)} | "
              + ', '.join(f'{k} {n}' for k, n in sorted(v.items(), key=lambda kv: str(kv[0]))) + tail)


main()
