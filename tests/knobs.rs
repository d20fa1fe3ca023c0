//! The knob table (crates/suite/src/config/knobs.rs) against everything that reads it: validation, the
//! four plan constructors, docs/knobs.md's table and `modelbench --help`.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use modelbench::config::knobs::{self, Knob, Scope, KNOBS};
use modelbench::config::plans::{Common, DepthPlan, MoePlan, Plan, PsannPlan};

const BEGIN: &str = "<!-- knobs:begin -->";
const END: &str = "<!-- knobs:end -->";

fn pair(name: &str, value: &str) -> Vec<(String, String)> {
    vec![(name.to_string(), value.to_string())]
}

/// An error as the user sees it: one line that starts with the knob's name.
fn assert_one_line_naming(e: &str, name: &str, what: &str) {
    assert!(
        !e.contains('\n') && e.starts_with(name),
        "{what}: expected one line starting with {name}, got:\n{e}"
    );
}

#[test]
fn every_knob_has_a_passing_and_a_failing_example() {
    assert!(KNOBS.len() >= 20, "only {} knobs: table lost?", KNOBS.len());
    let mut names = BTreeSet::new();
    for k in KNOBS {
        assert!(names.insert(k.name), "{} is declared twice", k.name);
        assert!(k.name.starts_with("MODELBENCH_"), "{}", k.name);
        let (good, bad) = k.examples;
        if let Err(e) = knobs::validate(pair(k.name, good)) {
            panic!("{}={good:?} (the valid example) fails: {e}", k.name);
        }
        let e = knobs::validate(pair(k.name, bad))
            .err()
            .unwrap_or_else(|| panic!("{}={bad:?} (the invalid example) passes", k.name))
            .to_string();
        assert_one_line_naming(&e, k.name, &format!("validate {}={bad:?}", k.name));
        // Blank means unset.
        knobs::validate(pair(k.name, " ")).unwrap();
    }
}

#[test]
fn an_unknown_knob_fails_validation() {
    let e = knobs::validate(pair("MODELBENCH_FOO", "1"))
        .unwrap_err()
        .to_string();
    assert_one_line_naming(&e, "MODELBENCH_FOO", "validate MODELBENCH_FOO");
    assert!(e.contains("not a known knob"), "{e}");
    assert!(
        e.contains("MODELBENCH_MODELS"),
        "the message lists the known ones: {e}"
    );
    // A typo of a real knob is unknown too; other variables are none of our business.
    assert!(knobs::validate(pair("MODELBENCH_MODEL", "fixture:llama")).is_err());
    knobs::validate(pair("HF_HUB_OFFLINE", "whatever")).unwrap();
    // Valid knobs before the unknown one do not hide it.
    let mut vars = pair("MODELBENCH_SEED", "1");
    vars.extend(pair("MODELBENCH_FOO", "1"));
    assert!(knobs::validate(vars).is_err());
}

// ---------------------------------------------------------------------------------------
// The plans.

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A plan constructor, by name, and the scopes of the knobs it reads.
struct PlanKind {
    name: &'static str,
    build: fn(Lookup) -> Result<(), String>,
    reads: &'static [Scope],
}

const PLANS: &[PlanKind] = &[
    PlanKind {
        name: "Plan (generation)",
        build: |l| Plan::from_lookup(l).map(|_| ()).map_err(|e| e.to_string()),
        reads: &[Scope::All, Scope::GENERATION],
    },
    PlanKind {
        name: "MoePlan",
        build: |l| {
            MoePlan::from_lookup(l)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
        reads: &[Scope::All, Scope::MOE],
    },
    PlanKind {
        name: "PsannPlan",
        build: |l| {
            PsannPlan::from_lookup(l)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
        reads: &[Scope::All, Scope::PSANN],
    },
    PlanKind {
        name: "DepthPlan",
        build: |l| {
            DepthPlan::from_lookup(l)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
        reads: &[Scope::All, Scope::DEPTH],
    },
    PlanKind {
        name: "ArchPlan",
        build: |l| {
            modelbench::config::sweep::ArchPlan::from_lookup(l)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
        reads: &[Scope::All, Scope::ARCH],
    },
    PlanKind {
        name: "Common (checkpoint)",
        build: |l| {
            Common::from_lookup(l)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
        reads: &[Scope::All],
    },
];

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn reads(p: &PlanKind, k: &Knob) -> bool {
    p.reads.contains(&k.scope)
}

#[test]
fn every_plan_accepts_valid_and_rejects_invalid_values_of_the_knobs_it_reads() {
    for p in PLANS {
        for k in KNOBS {
            let (good, bad) = k.examples;
            let m = map(&[(k.name, good)]);
            if let Err(e) = (p.build)(&|n| m.get(n).cloned()) {
                panic!(
                    "{}: {}={good:?} (the valid example) fails: {e}",
                    p.name, k.name
                );
            }
            let m = map(&[(k.name, bad)]);
            let r = (p.build)(&|n| m.get(n).cloned());
            if reads(p, k) {
                let e = r.err().unwrap_or_else(|| {
                    panic!(
                        "{}: {}={bad:?} (the invalid example) is accepted, but the knob's scope ({}) says this plan reads it",
                        p.name,
                        k.name,
                        k.scope.name()
                    )
                });
                assert_one_line_naming(&e, k.name, &format!("{} with {}={bad:?}", p.name, k.name));
            } else if let Err(e) = r {
                panic!(
                    "{}: {}={bad:?} fails ({e}), but the knob's scope ({}) says this plan does not read it: fix the scope in crates/suite/src/config/knobs.rs",
                    p.name,
                    k.name,
                    k.scope.name()
                );
            }
        }
    }
}

/// Every plan, with nothing set, reads only declared knobs (`knobs::get` panics on any
/// other name), builds its defaults, and reads exactly the knobs of its scopes.
#[test]
fn plans_read_only_declared_knobs_and_all_of_their_scopes() {
    for p in PLANS {
        let seen = Mutex::new(BTreeSet::new());
        let lookup = |n: &str| {
            seen.lock().unwrap().insert(n.to_string());
            None
        };
        if let Err(e) = (p.build)(&lookup) {
            panic!("{} fails with no knob set: {e}", p.name);
        }
        let seen = seen.into_inner().unwrap();
        for n in &seen {
            assert!(
                knobs::knob(n).is_some(),
                "{} read {n}, which is not in KNOBS",
                p.name
            );
        }
        let expected: BTreeSet<String> = KNOBS
            .iter()
            .filter(|k| reads(p, k))
            .map(|k| k.name.to_string())
            .collect();
        let unscoped: Vec<_> = seen.difference(&expected).collect();
        let unread: Vec<_> = expected.difference(&seen).collect();
        assert!(
            unscoped.is_empty() && unread.is_empty(),
            "{}: reads {unscoped:?}, whose scope it does not cover, and does not read {unread:?}, \
             whose scope it covers: fix the scopes in crates/suite/src/config/knobs.rs",
            p.name
        );
    }
}

#[test]
fn get_panics_on_an_undeclared_name() {
    let r = std::panic::catch_unwind(|| knobs::get(&|_| Some("1".into()), "MODELBENCH_FOO"));
    let msg = r.expect_err("knobs::get accepted an undeclared name");
    let msg = msg
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| msg.downcast_ref::<&str>().unwrap_or(&"").to_string());
    assert!(
        msg.contains("MODELBENCH_FOO") && msg.contains("not declared"),
        "{msg}"
    );
    // Declared: blank counts as unset.
    assert_eq!(knobs::get(&|_| Some("  ".into()), "MODELBENCH_SEED"), None);
    assert_eq!(
        knobs::get(&|_| Some("7".into()), "MODELBENCH_SEED").as_deref(),
        Some("7")
    );
}

// ---------------------------------------------------------------------------------------
// docs/knobs.md and --help.

/// The page that holds the generated knob table (README links it).
fn readme_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/knobs.md")
}

/// (text before the table, the table, text from the end marker on).
fn split_readme(readme: &str) -> (String, String, String) {
    let b = readme
        .find(BEGIN)
        .unwrap_or_else(|| panic!("docs/knobs.md has no {BEGIN} marker"));
    let e = readme
        .find(END)
        .unwrap_or_else(|| panic!("docs/knobs.md has no {END} marker"));
    assert!(b < e, "docs/knobs.md: {END} comes before {BEGIN}");
    assert_eq!(
        readme.matches(BEGIN).count(),
        1,
        "docs/knobs.md: two {BEGIN}"
    );
    let inner = &readme[b + BEGIN.len()..e];
    (
        readme[..b + BEGIN.len()].to_string(),
        inner.to_string(),
        readme[e..].to_string(),
    )
}

#[test]
fn docs_knob_table_is_the_generated_one() {
    let readme = std::fs::read_to_string(readme_path()).unwrap();
    let (_, inner, _) = split_readme(&readme);
    let table = knobs::readme_table();
    assert!(
        inner == format!("\n{table}"),
        "docs/knobs.md's knob table differs from crates/suite/src/config/knobs.rs. Paste this between {BEGIN} and {END} \
         (or run `cargo test --test knobs -- --ignored write_readme_table`):\n\n{table}"
    );
}

/// Rewrites docs/knobs.md's table from the knob table: `cargo test --test knobs -- --ignored
/// write_readme_table`.
#[test]
#[ignore = "writes docs/knobs.md"]
fn write_readme_table() {
    let readme = std::fs::read_to_string(readme_path()).unwrap();
    let (head, _, tail) = split_readme(&readme);
    let new = format!("{head}\n{}{tail}", knobs::readme_table());
    std::fs::write(readme_path(), new).unwrap();
}

#[test]
fn help_lists_every_knob() {
    let out = common::bin().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let missing: Vec<_> = KNOBS
        .iter()
        .map(|k| k.name)
        .filter(|n| !text.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "`modelbench --help` does not list {missing:?}:\n{text}"
    );
}

/// `modelbench <cmd> --help`.
fn help_of(cmd: &str) -> String {
    let out = common::bin().args([cmd, "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{cmd} --help: {text}");
    text
}

/// The flags of a command's `--help` and the default clap shows for each (None: none shown):
/// each option's block runs from its `  -x`/`      --flag` line to the next one.
fn flag_defaults(help: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if line.starts_with("  ") && t.starts_with('-') {
            let flag = t
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .unwrap_or(t)
                .to_string();
            out.push((flag, None));
        } else if let (Some(last), Some(i)) = (out.last_mut(), line.find("[default: ")) {
            let rest = &line[i + "[default: ".len()..];
            last.1 = Some(rest[..rest.rfind(']').unwrap()].to_string());
        }
    }
    out
}

/// The commands `modelbench --help` lists (the indented first words above "Details of a
/// command").
fn commands() -> Vec<String> {
    let out = common::bin().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .take_while(|l| !l.starts_with("Details of a command"))
        .filter(|l| l.starts_with("  ") && !l.trim_start().starts_with('-'))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// A CLI flag that sets what a knob sets has the knob's default, as clap shows it: the flags
/// of the table below, and --seed, --device, --suite, --paired-suite and --attention wherever
/// a command has them.
#[test]
fn cli_defaults_are_the_knob_defaults() {
    let named = [
        ("depth", "--depths", "MODELBENCH_DEPTHS"),
        ("depth", "--prompt", "MODELBENCH_DEPTH_PROMPT"),
        ("depth", "--gen", "MODELBENCH_DEPTH_GEN"),
        ("moe", "--num-experts", "MODELBENCH_MOE_EXPERTS"),
        ("moe", "--top-k", "MODELBENCH_MOE_TOPK"),
        ("moe", "--tokens", "MODELBENCH_MOE_TOKENS"),
        ("moe", "--hidden", "MODELBENCH_MOE_HIDDEN"),
        ("moe", "--intermediate", "MODELBENCH_MOE_INTERMEDIATE"),
        ("train-sweep", "--precision", "MODELBENCH_TRAIN_STEP_DTYPES"),
        ("train-sweep", "--seq", "MODELBENCH_TRAIN_STEP_SEQS"),
        ("train-sweep", "--batch", "MODELBENCH_TRAIN_STEP_BATCHES"),
    ];
    let everywhere = [
        ("--seed", "MODELBENCH_SEED"),
        ("--device", "MODELBENCH_DEVICE"),
        ("--suite", "MODELBENCH_TIER"),
        ("--paired-suite", "MODELBENCH_TIER"),
        ("--attention", "MODELBENCH_ATTENTION"),
    ];
    let cmds = commands();
    assert!(cmds.len() >= 20, "commands of --help: {cmds:?}");
    let mut wrong = Vec::new();
    let mut checked = 0;
    for cmd in &cmds {
        let flags = flag_defaults(&help_of(cmd));
        let shown = |flag: &str| {
            flags
                .iter()
                .find(|(f, _)| f == flag)
                .map(|(_, d)| d.clone())
        };
        for (c, flag, knob) in named.iter().filter(|(c, _, _)| c == cmd) {
            let want = knobs::default_of(knob);
            match shown(flag) {
                Some(Some(d)) if d == want => checked += 1,
                got => wrong.push(format!("{c} {flag}: {got:?}, {knob} says {want:?}")),
            }
        }
        for (flag, knob) in everywhere {
            let want = knobs::default_of(knob);
            match shown(flag) {
                // No flag, or one without a default (e.g. an optional filter): nothing to match.
                None | Some(None) => {}
                Some(Some(d)) if d == want => checked += 1,
                Some(Some(d)) => wrong.push(format!("{cmd} {flag}: {d:?}, {knob} says {want:?}")),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "flag defaults that differ from their knob's:\n{}",
        wrong.join("\n")
    );
    // The table's eleven, and --seed/--device/--suite on many commands.
    assert!(checked >= named.len() + 15, "only {checked} flags checked");
}

/// Every default the table states as a value passes the knob's own parser (the plans and
/// the CLI flags read those defaults from the table, so they must parse).
#[test]
fn every_value_default_passes_its_parser() {
    for k in KNOBS {
        if let knobs::DefaultValue::Value(v) = k.default {
            if !v.is_empty() {
                if let Err(e) = (k.check)(v) {
                    panic!("{}'s default {v:?} fails its parser: {e}", k.name);
                }
            }
        }
    }
}

/// The four path knobs are parsed through the table into `util::settings` (the layers below
/// `config` read them there): unset, the typed defaults; set, the parsed values; bad, one line
/// naming the knob.
#[test]
fn path_knobs_go_through_the_table() {
    use modelbench::util::settings::Settings;
    let d = Settings::default();
    assert_eq!(knobs::settings(&|_| None).unwrap(), d);
    for (name, path) in [
        ("MODELBENCH_REPORTS", &d.reports_root),
        ("MODELBENCH_FIXTURE_CACHE", &d.fixture_cache),
    ] {
        let text = knobs::knob(name).unwrap().default.text();
        assert!(
            path.ends_with(text.trim_start_matches("target/").trim_end_matches('/')),
            "{name}: the table says {text:?}, the typed default is {}",
            path.display()
        );
    }
    let m = map(&[
        ("MODELBENCH_REPORTS", "/tmp/modelbench-r"),
        ("MODELBENCH_FIXTURE_CACHE", "/tmp/modelbench-f"),
        ("MODELBENCH_DB", "off"),
        ("MODELBENCH_OFFLINE", "yes"),
    ]);
    let s = knobs::settings(&|n| m.get(n).cloned()).unwrap();
    assert_eq!(
        s,
        Settings {
            reports_root: "/tmp/modelbench-r".into(),
            fixture_cache: "/tmp/modelbench-f".into(),
            db: Some("off".into()),
            offline: true,
        }
    );
    for name in ["MODELBENCH_OFFLINE", "MODELBENCH_DB", "MODELBENCH_REPORTS"] {
        let bad = knobs::knob(name).unwrap().examples.1;
        let m = map(&[(name, bad)]);
        let e = knobs::settings(&|n| m.get(n).cloned())
            .unwrap_err()
            .to_string();
        assert_one_line_naming(&e, name, &format!("settings with {name}={bad:?}"));
    }
}

/// No source file (src/, crates/) outside the suite's config/ reads a MODELBENCH_ variable from the environment: every
/// knob goes through the table.
#[test]
fn no_knob_is_read_around_the_table() {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = root.join("crates/suite/src/config");
    let mut files = Vec::new();
    // Sources only: a build script's variables (crates/measure/build.rs reads the one
    // `compare --paired` gives a side build) are cargo's, at build time, not knobs.
    walk(&root.join("src"), &mut files);
    for krate in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        walk(&krate.path().join("src"), &mut files);
    }
    // The scan must reach every crate's sources (a moved tree would pass it vacuously).
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(root.join("crates/models/src")))
            && files.iter().any(|f| f.starts_with(&config)),
        "the scan found no crate sources under crates/: the walk is broken"
    );
    let mut found = Vec::new();
    for f in files {
        if f.starts_with(&config) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.contains("env::var") && (line.contains("MODELBENCH_") || line.contains("(ENV)"))
            {
                found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "knobs read straight from the environment (declare them in crates/suite/src/config/knobs.rs and read them through it):\n{}",
        found.join("\n")
    );
}
