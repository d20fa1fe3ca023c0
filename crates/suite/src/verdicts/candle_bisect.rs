//! `modelbench bisect GOOD BAD --candle-repo PATH --bench SCENARIO[/TARGET/MODEL]`: the first
//! Candle commit that slowed a model (issue 48).
//!
//! GOOD and BAD are revisions of a Candle git history (a checkout or a bare clone; it is only
//! read). The commits bisected are BAD's first-parent line back to GOOD ([`range`]). Each
//! commit judged is checked out once into `target/paired/candle/rev-<commit>/` (a `git clone
//! --shared` of the repository at that commit, kept for later bisections: [`checkout`],
//! [`rev_dir`]), and this repository's HEAD is built against it by `compare --paired
//! --new-candle`'s machinery (build.rs: a suite worktree per Candle source, cargo's
//! `[patch.crates-io]`, one shared target dir, so only what the Candle commit changes is
//! rebuilt; a kept build is reused). That build runs paired against GOOD's build on the
//! benchmark's scenario and model (bisect.rs's gate: looks of --pairs up to --max-pairs,
//! stopping at the first regression). BAD is judged on every metric and must regress on one;
//! every later commit is judged on the metrics BAD regressed on ([`judge`]): any of them a
//! regression is bad, all Unchanged or Improvement is good, and one still Undecided skips the
//! commit, as `git bisect skip` would; so does a commit the suite does not build against (its one-line build error) or
//! whose build cannot run the paired workers.
//!
//! The search ([`Search`]) is git bisect's: BAD first (it must be slower than GOOD, else
//! there is nothing to find), then the untested commit nearest the middle of what is left (a
//! skipped one's nearest neighbour next); it ends at the first bad commit or, when only
//! skipped commits stand between the last good one and the first bad one, names them all.
//! The first bad commit gets what a flagged `compare --paired` gets: both builds' per-op
//! tables and flame graphs, and the op that moved (made once, not at every bad step).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::judge::paired::PairedVerdict;
use crate::measure::candle_source::{self, CandleSpec};
use crate::verdicts::bisect::{
    max_pairs, paired_gate, paired_target, threshold, BisectArgs, Judged,
};
use crate::verdicts::build::{build_side_with, git_at, head_to_build, Side};
use crate::verdicts::candle_ops::{fixture_cache, model_ready, FIXTURE_CACHE};
use crate::verdicts::paired::{profile_regressions, MetricVerdict};
use crate::{Error, Result};

/// What a bisection of commits 0 (GOOD) ..= n-1 (BAD) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// BAD was not judged bad (its verdict): nothing to bisect.
    NotSlower(Judged),
    /// The first bad commit (its index).
    First(usize),
    /// Only skipped commits stand between the last good and the first bad one: the first bad
    /// commit is one of these (indices, the known bad one last).
    OneOf(Vec<usize>),
}

/// The state of a bisection over commits 0 (good) ..= n-1 (bad).
#[derive(Debug, Clone)]
pub struct Search {
    /// The last commit known good, and the first known bad.
    lo: usize,
    hi: usize,
    skipped: BTreeSet<usize>,
}

impl Search {
    /// Commit 0 known good, commit `n - 1` known bad (`n >= 2`).
    pub fn new(n: usize) -> Search {
        Search {
            lo: 0,
            hi: n.max(2) - 1,
            skipped: BTreeSet::new(),
        }
    }

    /// The commit to judge next: the untested one between the last good and the first bad
    /// nearest their middle (the earlier of two as near); None when none is left.
    pub fn next(&self) -> Option<usize> {
        let mid = (self.lo + self.hi) / 2;
        (self.lo + 1..self.hi)
            .filter(|i| !self.skipped.contains(i))
            .min_by_key(|&i| (i.abs_diff(mid), i))
    }

    pub fn record(&mut self, i: usize, j: &Judged) {
        match j {
            Judged::Good => self.lo = self.lo.max(i),
            Judged::Bad => self.hi = self.hi.min(i),
            Judged::Skip(_) => {
                self.skipped.insert(i);
            }
        }
    }

    /// What is known once [`Search::next`] has nothing left.
    pub fn result(&self) -> Found {
        let left: Vec<usize> = (self.lo + 1..=self.hi).collect();
        if left.len() == 1 {
            Found::First(self.hi)
        } else {
            Found::OneOf(left)
        }
    }
}

/// Bisects commits 0 (GOOD, known good) ..= n-1 (BAD): BAD is judged first and must be bad;
/// then [`Search`] asks `judge` for the commits it needs.
pub fn search(n: usize, judge: &mut dyn FnMut(usize) -> Result<Judged>) -> Result<Found> {
    ensure!(
        n >= 2,
        "a bisection needs GOOD and a later BAD ({n} commits)"
    );
    let bad = judge(n - 1)?;
    if bad != Judged::Bad {
        return Ok(Found::NotSlower(bad));
    }
    let mut s = Search::new(n);
    while let Some(i) = s.next() {
        let j = judge(i)?;
        s.record(i, &j);
    }
    Ok(s.result())
}

/// The Candle commits to bisect: GOOD, then BAD's first-parent line after it, BAD last.
#[derive(Debug, Clone)]
pub struct Range {
    /// The repository (canonical).
    pub repo: PathBuf,
    /// Full hashes, GOOD first, BAD last.
    pub commits: Vec<String>,
}

/// Resolves `--candle-repo`, GOOD and BAD: a git repository holding Candle (one of its crates
/// at the top at GOOD), two commits of it, GOOD on BAD's first-parent line before it. Each failure is one
/// line naming the argument and the fix.
pub fn range(repo: &Path, good: &str, bad: &str) -> Result<Range> {
    let shown = repo.display();
    ensure!(
        repo.is_dir(),
        "--candle-repo `{shown}`: no such folder (give a Candle git checkout or a bare clone of one)"
    );
    let abs = std::fs::canonicalize(repo).map_err(Error::io(repo))?;
    git_at(&abs, &["rev-parse", "--git-dir"]).map_err(|_| {
        fail!("--candle-repo `{shown}`: not a git repository (give a Candle git checkout or a bare clone of one, e.g. `git clone https://github.com/huggingface/candle`)")
    })?;
    let commit = |r: &str, what: &str| -> Result<String> {
        git_at(
            &abs,
            &["rev-parse", "--verify", "--quiet", &format!("{r}^{{commit}}")],
        )
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            fail!("{what} `{r}`: no such commit in the Candle repository `{shown}` (give a commit, tag or branch it has; `git -C {shown} log --oneline` lists them)")
        })
    };
    let (g, b) = (commit(good, "GOOD")?, commit(bad, "BAD")?);
    // As a Candle folder (build.rs): candle-core, candle-nn or candle-transformers at its top.
    let has = |c: &str| git_at(&abs, &["cat-file", "-e", &format!("{g}:{c}/Cargo.toml")]).is_ok();
    ensure!(
        candle_source::CRATES.iter().any(|c| has(c)),
        "--candle-repo `{shown}`: GOOD `{good}` has no candle-core/, candle-nn/ or candle-transformers/ crate: not a Candle repository (give a Candle git checkout or a bare clone of one)"
    );
    let line = git_at(
        &abs,
        &[
            "rev-list",
            "--first-parent",
            "--reverse",
            &b,
            &format!("^{g}"),
        ],
    )?;
    let after: Vec<String> = line.lines().map(|l| l.trim().to_string()).collect();
    let Some(first) = after.first() else {
        bail!(
            "BAD `{bad}` is not after GOOD `{good}` in `{shown}`: no commits in GOOD..BAD (give GOOD an ancestor of BAD)"
        );
    };
    let parent = git_at(&abs, &["rev-parse", &format!("{first}^")]).unwrap_or_default();
    ensure!(
        parent == g,
        "GOOD `{good}` is not on BAD `{bad}`'s first-parent line in `{shown}` (the bisection walks BAD's first parents back to GOOD); give as GOOD a commit of that line, e.g. `git -C {shown} merge-base {good} {bad}`"
    );
    let mut commits = vec![g];
    commits.extend(after);
    Ok(Range { repo: abs, commits })
}

/// Where a Candle commit is checked out: `<root>/candle/rev-<full hash>` (root: target/paired),
/// beside the suite worktrees that build.rs keys by Candle source (`v<version>`, `p<hash>`).
pub fn rev_dir(root: &Path, commit: &str) -> PathBuf {
    root.join("candle").join(format!("rev-{commit}"))
}

/// The checkout of `commit` of `repo` (a full hash), made once under [`rev_dir`] and kept: a
/// `git clone --shared --no-checkout` (git objects borrowed from `repo`, which is only read:
/// no worktree is registered in it) then `git checkout --detach`. A folder there at another
/// commit, or left half-made, is made again.
pub fn checkout(repo: &Path, commit: &str, root: &Path) -> Result<PathBuf> {
    let dir = rev_dir(root, commit);
    if dir.join(".git").exists()
        && git_at(&dir, &["rev-parse", "HEAD"]).ok().as_deref() == Some(commit)
    {
        return Ok(dir);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
    }
    let parent = dir.parent().expect("rev_dir has a parent");
    std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
    let (src, dst) = (repo.display().to_string(), dir.display().to_string());
    git_at(
        parent,
        &["clone", "--quiet", "--shared", "--no-checkout", &src, &dst],
    )?;
    git_at(&dir, &["checkout", "--quiet", "--detach", commit])?;
    Ok(dir)
}

/// The (scenario, metric) rows flagged a regression.
pub fn regressed(metrics: &[MetricVerdict]) -> Vec<(String, String)> {
    metrics
        .iter()
        .filter(|m| m.verdict == PairedVerdict::Regression)
        .map(|m| (m.scenario.clone(), m.metric.clone()))
        .collect()
}

/// A step judged by the `watched` rows only (those BAD regressed on: the bisection looks for
/// the commit that slowed them; a metric BAD did not regress on, say a noisy prefill of a
/// tiny model, cannot hold a step back). Undecided skips.
pub fn judge(metrics: &[MetricVerdict], watched: &[(String, String)]) -> Judged {
    let rows: Vec<&MetricVerdict> = metrics
        .iter()
        .filter(|m| {
            watched
                .iter()
                .any(|(s, k)| *s == m.scenario && *k == m.metric)
        })
        .collect();
    Judged::of_metrics(&rows, false)
}

/// One judged commit, as the summary prints it.
struct Step {
    commit: String,
    judged: Judged,
    metrics: Vec<MetricVerdict>,
    /// Its build and the paired comparison's folder (None: not built).
    built: Option<(PathBuf, PathBuf)>,
}

/// `bad`, `good` or `skip (why)`: a step's verdict in words.
pub fn judged_word(j: &Judged) -> String {
    match j {
        Judged::Good => "good".into(),
        Judged::Bad => "bad".into(),
        Judged::Skip(why) => format!("skip ({why})"),
    }
}

/// `bisect --candle-repo`: see the module docs.
pub fn bisect(a: &BisectArgs, repo: &Path) -> Result<ExitCode> {
    let (_, t) = threshold(a)?;
    ensure!(
        a.build.is_none(),
        "--build: a Candle bisection builds this repository's HEAD against each Candle commit itself; drop --build"
    );
    let mut o = paired_target(&a.bench, a.pairs, max_pairs(a.max_pairs, a.pairs))?;
    // The per-op profile once, of the first bad commit, not of every bad step.
    o.profile = false;
    let range = range(repo, &a.good, &a.bad)?;
    // Every worker, `ops` and `perf` run this bisection starts inherits this process's
    // environment: the fixture cache set here is theirs (candle_ops::fixture_cache). Set
    // before any thread of this process reads the environment.
    if std::env::var_os(FIXTURE_CACHE).is_none() {
        std::env::set_var(FIXTURE_CACHE, fixture_cache());
    }
    model_ready(&o.model)?;
    let suite = head_to_build("bisect --candle-repo")?;
    let short = |c: &str| c[..c.len().min(10)].to_string();
    let subject = |c: &str| {
        git_at(&range.repo, &["log", "-1", "--format=%s", c]).unwrap_or_else(|_| "?".into())
    };
    let n = range.commits.len();
    let (good, bad) = (&range.commits[0], &range.commits[n - 1]);
    println!(
        "bisecting {} Candle commit(s) after GOOD {} up to BAD {} in {} (first parents), this repository's HEAD {} built against each, paired on {} {}",
        n - 1,
        short(good),
        short(bad),
        range.repo.display(),
        &suite[..10],
        o.model,
        o.suite
    );
    let root = crate::util::fsio::target_dir().join("paired");
    let build = |commit: &str, side: &str| -> Result<PathBuf> {
        let dir = checkout(&range.repo, commit, &root)?;
        let dir = std::fs::canonicalize(&dir).map_err(Error::io(&dir))?;
        let src = candle_source::resolve(&CandleSpec::Path(dir))?;
        let s = Side::Commit {
            name: "HEAD".into(),
            commit: suite.clone(),
        };
        Ok(build_side_with(s, side, Some(&src))?.0)
    };
    let good_exe = build(good, &format!("GOOD Candle {}", short(good)))?;
    let mut steps: Vec<Step> = Vec::new();
    // The metrics BAD regressed on (it is judged first): what each later step is judged by.
    let mut watched: Option<Vec<(String, String)>> = None;
    let found = search(n, &mut |i| {
        let c = &range.commits[i];
        let side = format!("Candle {}", short(c));
        eprintln!("bisect: {side} {} ...", subject(c));
        let (judged, metrics, built) = match build(c, &side) {
            Err(e) => (Judged::Skip(e.to_string()), Vec::new(), None),
            // A build that cannot run the paired workers (a Candle commit that panics or
            // refuses the model) is not judged either: skipped, with the worker's line.
            Ok(exe) => match paired_gate(&good_exe, &exe, &side, &o, t) {
                // `--outputs`: the first Candle commit whose outputs changed (issue 59).
                Ok(p) if a.outputs => (Judged::of_outputs(&p), p.metrics, Some((exe, p.saved))),
                Ok(p) => {
                    let w = watched.get_or_insert_with(|| regressed(&p.metrics));
                    (judge(&p.metrics, w), p.metrics, Some((exe, p.saved)))
                }
                Err(e) => (
                    Judged::Skip(format!("the paired run failed: {e}")),
                    Vec::new(),
                    None,
                ),
            },
        };
        println!("bisect: {side}: {}", judged_word(&judged));
        steps.push(Step {
            commit: c.clone(),
            judged: judged.clone(),
            metrics,
            built,
        });
        Ok(judged)
    })?;
    let summary = {
        let mut s = format!(
            "steps, in the order judged (B/A against GOOD {}: median of per-pair ratios [interval], verdict):\n",
            short(good)
        );
        for st in &steps {
            let rows: Vec<String> = st.metrics.iter().map(MetricVerdict::describe).collect();
            s.push_str(&format!(
                "  {} {}: {}{}\n",
                short(&st.commit),
                subject(&st.commit),
                judged_word(&st.judged),
                if rows.is_empty() {
                    String::new()
                } else {
                    format!(": {}", rows.join("; "))
                }
            ));
        }
        s
    };
    match found {
        Found::NotSlower(j) => {
            print!("{summary}");
            match j {
                Judged::Skip(why) => bail!(
                    "BAD Candle {} was not judged ({why}): nothing to bisect (BAD must build and be slower than GOOD)",
                    short(bad)
                ),
                _ => bail!(
                    "BAD Candle {} is not slower than GOOD {} beyond {:.1}% on `{}` (95% confidence): nothing to bisect",
                    short(bad),
                    short(good),
                    t * 100.0,
                    a.bench
                ),
            }
        }
        Found::First(i) => {
            let c = &range.commits[i];
            println!("first bad Candle commit: {c} {}", subject(c));
            print!("{summary}");
            // Which op moved there: its per-op tables and flame graphs against GOOD's.
            if let Some(st) = steps.iter().find(|st| &st.commit == c) {
                if let Some((exe, saved)) = &st.built {
                    profile_regressions((&good_exe, exe), &o, &st.metrics, saved, t)?;
                    println!("saved {}", saved.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Found::OneOf(v) => {
            print!("{summary}");
            let list: Vec<String> = v
                .iter()
                .map(|&i| {
                    format!(
                        "{} {}",
                        short(&range.commits[i]),
                        subject(&range.commits[i])
                    )
                })
                .collect();
            bail!(
                "only skipped Candle commits are left between the last good and the first bad one: the first bad commit is one of {} ({})",
                v.len(),
                list.join("; ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs [`search`] over `n` commits with the verdicts `v(i)`; returns what it found and
    /// the commits it judged, in order.
    fn run(n: usize, v: impl Fn(usize) -> Judged) -> (Found, Vec<usize>) {
        let mut asked = Vec::new();
        let found = search(n, &mut |i| {
            asked.push(i);
            Ok(v(i))
        })
        .unwrap();
        (found, asked)
    }

    fn regressed_at(k: usize) -> impl Fn(usize) -> Judged {
        move |i| if i >= k { Judged::Bad } else { Judged::Good }
    }

    #[test]
    fn a_regression_is_found_at_its_commit_in_log2_steps() {
        for n in [2, 3, 5, 10, 20, 33] {
            for k in 1..n {
                let (found, asked) = run(n, regressed_at(k));
                assert_eq!(found, Found::First(k), "n {n}, regression at {k}");
                assert_eq!(asked[0], n - 1, "BAD is judged first");
                let most = 1 + (n as f64).log2().ceil() as usize;
                assert!(asked.len() <= most, "n {n} k {k}: {asked:?}");
                assert!(!asked.contains(&0), "GOOD is known good: {asked:?}");
            }
        }
        // The middle first: commit 4 of 0..=9.
        assert_eq!(run(10, regressed_at(7)).1[..2], [9, 4]);
    }

    #[test]
    fn an_all_good_range_reports_nothing_to_bisect() {
        let (found, asked) = run(8, |_| Judged::Good);
        assert_eq!(found, Found::NotSlower(Judged::Good));
        assert_eq!(asked, vec![7], "only BAD is measured");
        // BAD undecided or not building: nothing either, and why.
        let why = Judged::Skip("undecided: short decode 1.015x [0.990, 1.040] Undecided".into());
        let (found, _) = run(8, |_| why.clone());
        assert_eq!(found, Found::NotSlower(why));
    }

    #[test]
    fn a_commit_that_does_not_build_is_skipped_and_a_neighbour_judged() {
        let build_error = Judged::Skip(
            "Candle 1a2b3c4d5e: the suite does not build against Candle ...: first missing item `x`"
                .into(),
        );
        // Commit 4 (the first midpoint) does not build; regression at 6.
        let (found, asked) = run(10, |i| {
            if i == 4 {
                build_error.clone()
            } else {
                regressed_at(6)(i)
            }
        });
        assert_eq!(found, Found::First(6));
        assert_eq!(asked[..3], [9, 4, 3], "after a skip, its nearest neighbour");
        // The commit just before the first bad one does not build: the first bad commit is
        // one of the two, as git bisect says.
        let (found, _) = run(10, |i| {
            if i == 5 {
                build_error.clone()
            } else {
                regressed_at(6)(i)
            }
        });
        assert_eq!(found, Found::OneOf(vec![5, 6]));
        // Every commit between GOOD and BAD skipped (undecided): any of them or BAD.
        let (found, asked) = run(4, |i| {
            if i == 3 {
                Judged::Bad
            } else {
                Judged::Skip("undecided".into())
            }
        });
        assert_eq!(found, Found::OneOf(vec![1, 2, 3]));
        assert_eq!(asked, vec![3, 1, 2]);
    }

    #[test]
    fn the_search_stops_on_a_judge_error_and_needs_two_commits() {
        let e = search(5, &mut |_| Err(fail!("worker died"))).unwrap_err();
        assert_eq!(e.to_string(), "worker died");
        let e = search(1, &mut |_| Ok(Judged::Bad)).unwrap_err();
        assert!(e.to_string().starts_with("a bisection needs GOOD"), "{e}");
    }

    #[test]
    fn a_paired_outcome_judges_regression_bad_open_metrics_skip() {
        use crate::measure::paired::PairedRatio;
        use crate::verdicts::paired::PairedOutcome;
        let row = |m: &str, r: f64, ci: (f64, f64), v: &'static str| MetricVerdict {
            scenario: "short".into(),
            metric: m.into(),
            ratio: PairedRatio {
                ratio: r,
                pairs: 60,
                ci: Some(ci),
                confidence: 0.95,
            },
            verdict: v.parse().unwrap(),
        };
        let out = |metrics: Vec<MetricVerdict>| PairedOutcome {
            regressions: metrics
                .iter()
                .filter(|m| m.verdict == PairedVerdict::Regression)
                .count(),
            table: String::new(),
            rows: Vec::new(),
            metrics,
            saved: PathBuf::new(),
            outputs: Vec::new(),
        };
        let bad = out(vec![
            row("prefill", 0.846, (0.833, 0.863), "Improvement"),
            row("decode", 1.119, (1.103, 1.136), "Regression"),
        ]);
        assert_eq!(Judged::of(&bad, false), Judged::Bad);
        let good = out(vec![
            row("prefill", 0.846, (0.833, 0.863), "Improvement"),
            row("decode", 1.001, (0.995, 1.006), "Unchanged"),
        ]);
        assert_eq!(Judged::of(&good, false), Judged::Good);
        let open = out(vec![
            row("prefill", 1.0, (0.99, 1.01), "Unchanged"),
            row("decode", 1.015, (0.99, 1.04), "Undecided"),
        ]);
        assert_eq!(
            Judged::of(&open, false),
            Judged::Skip("undecided: short decode 1.015x [0.990, 1.040] Undecided".into())
        );
        // A commit bisection counts Undecided at the cap as good.
        assert_eq!(Judged::of(&open, true), Judged::Good);
        // Later steps are judged on what BAD regressed on: a noisy prefill that BAD did not
        // regress on holds no step back; an open decode does.
        let watched = regressed(&bad.metrics);
        assert_eq!(watched, [("short".to_string(), "decode".to_string())]);
        let step = |prefill: &'static str, decode: &'static str| {
            vec![
                row("prefill", 1.001, (0.958, 1.050), prefill),
                row("decode", 1.001, (0.995, 1.006), decode),
            ]
        };
        assert_eq!(
            judge(&step("Undecided", "Unchanged"), &watched),
            Judged::Good
        );
        assert_eq!(
            judge(&step("Regression", "Unchanged"), &watched),
            Judged::Good
        );
        assert_eq!(
            judge(&step("Unchanged", "Regression"), &watched),
            Judged::Bad
        );
        assert_eq!(
            judge(&step("Unchanged", "Undecided"), &watched),
            Judged::Skip("undecided: short decode 1.001x [0.995, 1.006] Undecided".into())
        );
        assert_eq!(
            [Judged::Good, Judged::Bad, Judged::Skip("x".into())].map(|j| j.exit_code()),
            [0, 1, 125]
        );
    }

    /// `git -C dir -c user.name=t -c user.email=t@t ARGS` must succeed; its output.
    fn g_in(dir: &Path, args: &[&str]) -> String {
        let mut all = vec!["-c", "user.name=t", "-c", "user.email=t@t"];
        all.extend_from_slice(args);
        git_at(dir, &all).unwrap()
    }

    /// A scratch git repository with `n` commits of a minimal Candle layout; their hashes.
    fn candle_repo(dir: &Path, n: usize) -> Vec<String> {
        let g = |args: &[&str]| g_in(dir, args);
        std::fs::create_dir_all(dir.join("candle-core/src")).unwrap();
        g(&["init", "-q", "-b", "main"]);
        let mut out = Vec::new();
        for i in 0..n {
            std::fs::write(
                dir.join("candle-core/Cargo.toml"),
                "[package]\nname = \"candle-core\"\nversion = \"0.11.0\"\n",
            )
            .unwrap();
            std::fs::write(dir.join("candle-core/src/lib.rs"), format!("// {i}\n")).unwrap();
            g(&["add", "."]);
            g(&["commit", "-q", "-m", &format!("change {i}")]);
            out.push(g(&["rev-parse", "HEAD"]));
        }
        out
    }

    #[test]
    fn the_range_is_bads_first_parent_line_back_to_good_and_bad_input_is_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("candle");
        let c = candle_repo(&repo, 4);
        let r = range(&repo, &c[0][..8], "HEAD").unwrap();
        assert_eq!(r.commits, c);
        let r = range(&repo, "HEAD~2", "HEAD~1").unwrap();
        assert_eq!(r.commits, c[1..3]);
        let one_line = |e: Error, needle: &str| {
            let e = e.to_string();
            assert!(e.contains(needle), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        };
        one_line(
            range(&tmp.path().join("nope"), "a", "b").unwrap_err(),
            "--candle-repo `",
        );
        let plain = tmp.path().join("plain");
        std::fs::create_dir_all(&plain).unwrap();
        one_line(range(&plain, "a", "b").unwrap_err(), "not a git repository");
        for (good, bad, needle) in [
            (
                "v9.9.9",
                "HEAD",
                "GOOD `v9.9.9`: no such commit in the Candle repository",
            ),
            (
                "HEAD~1",
                "no-such-branch",
                "BAD `no-such-branch`: no such commit",
            ),
            ("HEAD", "HEAD~2", "no commits in GOOD..BAD"),
            ("HEAD", "HEAD", "is not after GOOD"),
        ] {
            one_line(range(&repo, good, bad).unwrap_err(), needle);
        }
        // A repository without candle-core.
        let other = tmp.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        candle_repo(&other, 2);
        g_in(&other, &["rm", "-q", "-r", "candle-core"]);
        g_in(&other, &["commit", "-q", "-m", "x"]);
        one_line(
            range(&other, "HEAD", "HEAD").unwrap_err(),
            "not a Candle repository",
        );
    }

    #[test]
    fn a_candle_commit_is_checked_out_once_under_its_full_hash_and_the_repo_is_only_read() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("candle");
        let c = candle_repo(&repo, 3);
        let root = tmp.path().join("target/paired");
        assert_eq!(
            rev_dir(&root, &c[1]),
            root.join("candle").join(format!("rev-{}", c[1]))
        );
        let d1 = checkout(&repo, &c[1], &root).unwrap();
        assert_eq!(d1, rev_dir(&root, &c[1]));
        assert_eq!(
            std::fs::read_to_string(d1.join("candle-core/src/lib.rs")).unwrap(),
            "// 1\n"
        );
        // Kept: a second call finds it (a file left there survives).
        std::fs::write(d1.join("kept"), "x").unwrap();
        assert_eq!(checkout(&repo, &c[1], &root).unwrap(), d1);
        assert!(d1.join("kept").exists());
        // Another commit, another folder; the repository gained no worktree.
        let d2 = checkout(&repo, &c[2], &root).unwrap();
        assert_ne!(d1, d2);
        assert_eq!(git_at(&d2, &["rev-parse", "HEAD"]).unwrap(), c[2]);
        assert_eq!(
            git_at(&repo, &["worktree", "list"])
                .unwrap()
                .lines()
                .count(),
            1
        );
        // A half-made folder (no git checkout in it) is made again.
        let d0 = rev_dir(&root, &c[0]);
        std::fs::create_dir_all(&d0).unwrap();
        std::fs::write(d0.join("junk"), "x").unwrap();
        assert_eq!(checkout(&repo, &c[0], &root).unwrap(), d0);
        assert!(!d0.join("junk").exists());
        // Its Candle label names the commit, as a checkout's does.
        let src =
            candle_source::resolve(&CandleSpec::Path(std::fs::canonicalize(&d2).unwrap())).unwrap();
        assert!(
            src.label.contains(&format!("(git {}", &c[2][..12])),
            "{}",
            src.label
        );
    }
}
