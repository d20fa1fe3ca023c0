#!/usr/bin/env python3
"""The power curve of `compare --paired` (issue 64): TRIES tries of each injected decode
slowdown (and A/A, "0%"), interleaved so that the machine's drift falls on all alike, each a
whole `modelbench compare EXE EXE --paired --inject decode:X%` at the defaults (extra flags
after `--`). Prints a Markdown table (flagged tries, decode verdicts, interval widths, time)
and keeps every try's paired.json path and figures in OUT.jsonl.

    scripts/paired-power.py EXE OUT.jsonl TRIES 0 1 2 3 5 [-- --whole-trials]
    scripts/paired-power.py --table OUT.jsonl

The second form prints the table of every try OUT.jsonl holds (a series stopped early, or
resumed by running the first form again with the same OUT.jsonl: tries are appended).

EXE is a release `modelbench` (both sides run it; the injection is B's only). Nothing else
should run on the cores: that is what the table is about. About 5 minutes a try."""
import json, re, subprocess, sys, time, statistics as st

def main():
    args = sys.argv[1:]
    if args[:1] == ['--table'] and len(args) == 2:
        rows = [json.loads(l) for l in open(args[1]) if l.strip()]
        pcts = sorted({r['pct'] for r in rows})
        return table(rows, [('%g' % p) for p in pcts])
    extra = []
    if '--' in args:
        k = args.index('--'); extra = args[k + 1:]; args = args[:k]
    if len(args) < 4:
        sys.exit(__doc__)
    exe, out, tries, pcts = args[0], args[1], int(args[2]), args[3:]
    rows = []
    with open(out, 'a') as f:
        for t in range(tries):
            for p in pcts:
                cmd = [exe, 'compare', exe, exe, '--paired'] + extra
                if float(p) > 0:
                    cmd += ['--inject', f'decode:{p}%']
                t0 = time.time()
                r = subprocess.run(cmd, capture_output=True, text=True)
                secs = time.time() - t0
                m = re.search(r'^saved (.*)$', r.stdout, re.M)
                if r.returncode not in (0, 1) or not m:
                    sys.exit(f'try {t} at {p}%: exit {r.returncode}\n{r.stdout[-2000:]}{r.stderr[-2000:]}')
                d = json.load(open(m.group(1) + '/paired.json'))
                dec = {x['scenario']: x for x in d['rows'] if x['metric'] == 'decode'}
                pre = {x['scenario']: x for x in d['rows'] if x['metric'] == 'prefill'}
                row = {'pct': float(p), 'try': t, 'exit': r.returncode, 'seconds': round(secs),
                       'pairs': d['pairs'], 'stopped': d['stopped'], 'pairing': d.get('pairing'),
                       'threshold': d['threshold'], 'huge_page_restarts': d.get('huge_page_restarts'),
                       'paired_json': m.group(1) + '/paired.json',
                       'decode': {s: [x['ratio'], x['ci'], x['verdict']] for s, x in dec.items()},
                       'prefill': {s: [x['ratio'], x['ci'], x['verdict']] for s, x in pre.items()}}
                f.write(json.dumps(row) + '\n'); f.flush(); rows.append(row)
                print(f"{p}% try {t}: exit {r.returncode}, {secs:.0f} s, " + ', '.join(
                    f"{s} decode {v[0]:.3f}x [{v[1][0]:.3f}, {v[1][1]:.3f}] {v[2]}" for s, v in row['decode'].items()),
                    file=sys.stderr, flush=True)
    table(rows, pcts)

def table(rows, pcts):
    print('| injected decode slowdown | tries | flagged (exit 1) | decode verdicts (both scenarios) | median decode interval half-width | prefill decided | median time a try (range) |')
    print('|---|---:|---:|---|---:|---:|---:|')
    for p in pcts:
        rr = [r for r in rows if r['pct'] == float(p)]
        v = {}
        hw = []
        for r in rr:
            for s, x in r['decode'].items():
                v[x[2]] = v.get(x[2], 0) + 1
                hw.append((x[1][1] - x[1][0]) / 2 * 100)
        pd = sum(1 for r in rr for x in r['prefill'].values() if x[2] != 'Undecided')
        pn = sum(len(r['prefill']) for r in rr)
        print(f"| {'A/A' if float(p) == 0 else p + '%'} | {len(rr)} | {sum(r['exit'] == 1 for r in rr)} | "
              + ', '.join(f'{k} {n}' for k, n in sorted(v.items())) +
              f" | ±{st.median(hw):.2f}% | {pd} of {pn} | {st.median(r['seconds'] for r in rr):.0f} s"
              f" ({min(r['seconds'] for r in rr)}-{max(r['seconds'] for r in rr)}) |")

main()
