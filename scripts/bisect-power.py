#!/usr/bin/env python3
"""The power of `bisect --paired` (issue 64 item 4): TRIES tries of each injected decode
slowdown (and A/A, "0%"), interleaved so that the machine's drift falls on all alike. Each try
is a whole `modelbench bisect GOOD BAD --paired` in a scratch git repository of COMMITS commits
(default 5) whose build step makes each commit's `modelbench` the release EXE with the commit's
`inject` file as MODELBENCH_INJECT_SLOWDOWN (as tests/bisect.rs does: no compile, a real
slowdown inside the timed region). With X% the first slowed commit moves from try to try
(commit 1, 2, ..., COMMITS-1, again); bisect must name it. With A/A no commit is slowed and
bisect must say "nothing to bisect". Prints a Markdown table (right answers, wrong answers,
commits measured, time) and keeps every try in OUT.jsonl (appended: a stopped series resumes).

    scripts/bisect-power.py EXE OUT.jsonl TRIES 0 2 [-- --bench medium --commits 5 ...]
    scripts/bisect-power.py --table OUT.jsonl

Flags after `--` go to bisect (default `--bench medium`: the scenario whose +2% decode rows
compare --paired flagged in 10 of 10 tries); `--commits N` is this script's. EXE is a release
`modelbench`. Nothing else should run on the cores: that is what the table is about."""
import json, os, re, subprocess, sys, tempfile, time, statistics as st


def git(repo, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME='p', GIT_AUTHOR_EMAIL='p@example.com',
               GIT_COMMITTER_NAME='p', GIT_COMMITTER_EMAIL='p@example.com')
    r = subprocess.run(['git', *args], cwd=repo, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f'git {args}: {r.stderr}')
    return r.stdout.strip()


BUILD = ('mkdir -p target/release && printf \'#!/bin/sh\\nMODELBENCH_INJECT_SLOWDOWN=%s exec "$MB" "$@"\\n\' '
         '"$(cat inject)" > target/release/modelbench && chmod +x target/release/modelbench')


def one_try(exe, pct, first_bad, commits, extra):
    tmp = tempfile.mkdtemp(prefix='bisect-power-')
    repo = os.path.join(tmp, 'repo')
    os.makedirs(repo)
    git(repo, 'init', '-q', '-b', 'main')
    with open(os.path.join(repo, '.gitignore'), 'w') as f:
        f.write('target/\n')
    shas, subjects = [], []
    for i in range(commits):
        v = f'decode:{pct:g}%' if pct > 0 and i >= first_bad else 'off'
        with open(os.path.join(repo, 'inject'), 'w') as f:
            f.write(v + '\n')
        with open(os.path.join(repo, 'notes'), 'w') as f:
            f.write(f'change {i}\n')
        git(repo, 'add', '.')
        subjects.append(f'commit {i}: {v}')
        git(repo, 'commit', '-q', '-m', subjects[-1])
        shas.append(git(repo, 'rev-parse', 'HEAD'))
    reports = os.path.join(tmp, 'reports')
    env = dict(os.environ, MB=exe, MODELBENCH_REPORTS=reports, HF_HUB_OFFLINE='1')
    for k in ('CARGO_TARGET_DIR', 'MODELBENCH_INJECT_SLOWDOWN', 'MODELBENCH_INJECT_NUMERIC', 'MODELBENCH_DB'):
        env.pop(k, None)
    cmd = [exe, 'bisect', shas[0], shas[-1], '--paired', '--build', BUILD] + extra
    t0 = time.time()
    r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    secs = time.time() - t0
    m = re.search(r'^first bad commit: (\w+) ', r.stdout, re.M)
    named = m.group(1) if m else None
    nothing = 'nothing to bisect' in (r.stdout + r.stderr)
    if pct > 0:
        right = named == shas[first_bad]
    else:
        right = r.returncode != 0 and nothing
    work = [d for d in os.listdir(reports) if d.startswith('bisect-')] if os.path.isdir(reports) else []
    measured = 0
    steps = []
    if work:
        w = os.path.join(reports, work[0])
        for c in sorted(os.listdir(w)):
            if os.path.exists(os.path.join(w, c, 'modelbench')):
                measured += 1
            md = os.path.join(w, c, 'paired.md')
            if os.path.exists(md):
                dec = [l for l in open(md) if re.match(r'^\| \w+ \| decode \|', l)]
                idx = next((i for i, s in enumerate(shas) if s.startswith(c)), None)
                steps.append([idx, dec[0].strip() if dec else None])
    if not right and named is None and not nothing:
        sys.stderr.write(f'{pct}% try: exit {r.returncode}\n{r.stdout[-3000:]}{r.stderr[-3000:]}\n')
    bad_line = [l for l in r.stdout.splitlines() if re.match(r'^\| \w+ \| decode \|', l)]
    return {'pct': pct, 'first_bad': first_bad if pct > 0 else None, 'commits': commits,
            'exit': r.returncode, 'seconds': round(secs), 'right': right,
            'named': None if named is None else next((i for i, s in enumerate(shas) if s == named), named),
            'nothing_to_bisect': nothing, 'measured_commits': measured,
            'gate_decode_row': bad_line[0] if bad_line else None, 'steps': steps,
            'stderr_tail': r.stderr[-600:], 'folder': tmp}


def main():
    args = sys.argv[1:]
    if args[:1] == ['--table'] and len(args) == 2:
        rows = [json.loads(l) for l in open(args[1]) if l.strip()]
        return table(rows, sorted({r['pct'] for r in rows}))
    extra = []
    if '--' in args:
        k = args.index('--'); extra = args[k + 1:]; args = args[:k]
    commits = 5
    if '--commits' in extra:
        k = extra.index('--commits'); commits = int(extra[k + 1]); del extra[k:k + 2]
    if '--bench' not in extra:
        extra += ['--bench', 'medium']
    if len(args) < 4 or commits < 3:
        sys.exit(__doc__)
    exe, out, tries, pcts = os.path.abspath(args[0]), args[1], int(args[2]), [float(p) for p in args[3:]]
    rows = []
    with open(out, 'a') as f:
        for t in range(tries):
            for p in pcts:
                first_bad = 1 + t % (commits - 1)
                row = one_try(exe, p, first_bad, commits, extra)
                row['try'] = t
                row['flags'] = extra
                f.write(json.dumps(row) + '\n'); f.flush(); rows.append(row)
                print(f"{p:g}% try {t}: {'right' if row['right'] else 'WRONG'}, named {row['named']} "
                      f"(first bad {row['first_bad']}), exit {row['exit']}, {row['seconds']} s, "
                      f"{row['measured_commits']} commits measured", file=sys.stderr, flush=True)
    table(rows, pcts)


def table(rows, pcts):
    print('| injected decode slowdown | tries | right answer | wrong answers (what was named) | commits measured a try | median time a try (range) |')
    print('|---|---:|---:|---|---:|---:|')
    for p in pcts:
        rr = [r for r in rows if r['pct'] == p]
        if not rr:
            continue
        wrong = [r for r in rr if not r['right']]
        what = ', '.join(
            ('nothing to bisect' if r['nothing_to_bisect'] else f"commit {r['named']}")
            + (f" (first bad {r['first_bad']})" if r['first_bad'] is not None else '') for r in wrong) or '-'
        secs = [r['seconds'] for r in rr]
        ms = [r['measured_commits'] for r in rr]
        print(f"| {'A/A' if p == 0 else f'{p:g}%'} | {len(rr)} | {len(rr) - len(wrong)} | {what} | "
              f"{min(ms)}-{max(ms)} | {st.median(secs):.0f} s ({min(secs)}-{max(secs)}) |")


main()
