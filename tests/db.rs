//! The results history database seen from outside: runs of two machines pushed into SQLite
//! and into a REAL PostgreSQL server (the Debian `postgresql` package: a temporary data
//! directory, loopback only, stopped at the end); the same queries give the same answers on
//! both; a push that fails mid-way, or is killed with SIGKILL inside its transaction, leaves
//! the database unchanged and intact; a second push adds nothing;
//! the CLI's `db push`, `history`, `compare COMMIT COMMIT` and `export --format bencher`.
//!
//! Without the package's initdb/pg_ctl the PostgreSQL test skips through tests/common's rule:
//! it fails instead with MODELBENCH_REQUIRE_POSTGRES set (CI sets it after installing the
//! package) or under CI=true.

mod common;
use common::modelbench;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use modelbench::output::db::{Db, DbTarget, HistoryRow, RunRow};
use modelbench::output::record::{Kind, Precision, Record};
use modelbench::output::report::{read_run, write_artifacts};

const COMMIT_A: &str = "aaaa000000000000000000000000000000000001";
const COMMIT_B: &str = "bbbb000000000000000000000000000000000002";

/// A generation record of `model` on machine `cpu`, at `commit`, with these samples.
fn record(cpu: &str, commit: &str, ts: &str, model: &str, samples: &[f64]) -> Record {
    let mut r = Record::from_samples(Kind::Generation, "medium", samples.to_vec(), 64);
    r.id = format!("medium/cpu-f32/{model}");
    r.model.label = model.into();
    r.dtype = Precision::Float(candle_core::DType::F32);
    r.device = "cpu".into();
    r.prompt_tokens = Some(64);
    r.new_tokens = Some(64);
    r.sampling_desc = "greedy".into();
    r.shape = serde_json::json!({"prompt": 64, "gen": 64, "batch": 1});
    r.hardware.cpu = cpu.into();
    r.hardware.cores = 8;
    r.hardware.gpu = None;
    r.build.git_commit = commit.into();
    r.build.git_dirty = "false".into();
    r.timestamp = ts.into();
    r
}

/// Four runs: machines "laptop" and "desktop", commits A then B; the desktop is 2x faster,
/// commit B is 1.5x slower than A. Each run also holds a second benchmark (model `m2`).
fn runs() -> Vec<(String, Vec<Record>)> {
    let s = |base: f64| -> Vec<f64> { (0..8).map(|i| base * (1.0 + 0.002 * i as f64)).collect() };
    let mut out = Vec::new();
    for (i, (cpu, speed)) in [("laptop", 1.0), ("desktop", 0.5)].iter().enumerate() {
        for (j, (commit, slow)) in [(COMMIT_A, 1.0), (COMMIT_B, 1.5)].iter().enumerate() {
            let ts = format!("2026-11-2{}T10:0{}:00Z", j + 1, i);
            let run = format!("2026112{}_10000{}-{cpu}", j + 1, i);
            out.push((
                run,
                vec![
                    record(cpu, commit, &ts, "m", &s(speed * slow)),
                    record(cpu, commit, &ts, "m2", &s(speed * 2.0)),
                ],
            ));
        }
    }
    out
}

/// Every query of the database, as one comparable value.
#[derive(Debug, PartialEq)]
struct Answers {
    count: i64,
    version: i64,
    runs: Vec<RunRow>,
    runs_at_b: Vec<RunRow>,
    history: Vec<HistoryRow>,
    group_history: Vec<HistoryRow>,
    first_run: Vec<Record>,
    trends: Vec<(String, String)>,
}

fn answers(db: &mut Db) -> Answers {
    let runs = db.runs(None).unwrap();
    let first_run = db.run_records(&runs[0].run, &runs[0].hardware_fp).unwrap();
    Answers {
        count: db.count().unwrap(),
        version: db.version().unwrap(),
        runs_at_b: db.runs(Some("bbbb")).unwrap(),
        history: db.history("medium/cpu-f32/m", "m").unwrap(),
        group_history: db.history("medium", "m2").unwrap(),
        trends: db.trend_series(2).unwrap(),
        runs,
        first_run,
    }
}

/// Pushes the four runs and checks the answers against the inputs; then a push that fails
/// at its 3rd row changes nothing, and pushing everything again adds nothing.
fn exercise(target: &DbTarget) -> Answers {
    let mut db = Db::open(target).unwrap().expect("a database");
    let runs = runs();
    // A push that fails mid-way (an error injected before the 3rd insert) leaves nothing.
    let e = db
        .push_runs_with(&runs, &mut |n| {
            if n == 2 {
                Err("injected failure".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("injected failure"), "{e}");
    assert_eq!(db.count().unwrap(), 0, "a failed push left rows behind");

    assert_eq!(db.push_runs(&runs[..1]).unwrap(), 2);
    // The whole set: the first run is already there.
    assert_eq!(db.push_runs(&runs).unwrap(), 6);
    assert_eq!(db.push_runs(&runs).unwrap(), 0, "a second push added rows");
    // Run states (issue 61 item 8): none kept reads `unmarked`; a state is set, and set again.
    let hw0 = runs[0].1[0].hardware.fingerprint();
    assert!(db.runs(None).unwrap().iter().all(|r| r.state == "unmarked"));
    db.set_states(&[(runs[0].0.clone(), hw0.clone(), "running")])
        .unwrap();
    db.mark_interrupted(std::slice::from_ref(&runs[0].0))
        .unwrap();
    let state_of = |db: &mut Db, run: &str| {
        db.runs(None)
            .unwrap()
            .into_iter()
            .find(|r| r.run == run)
            .unwrap()
            .state
    };
    assert_eq!(state_of(&mut db, &runs[0].0), "interrupted");
    assert_eq!(state_of(&mut db, &runs[1].0), "unmarked");
    db.set_states(&[(runs[0].0.clone(), hw0, "complete")])
        .unwrap();
    db.mark_interrupted(std::slice::from_ref(&runs[0].0))
        .unwrap();
    assert_eq!(
        state_of(&mut db, &runs[0].0),
        "complete",
        "only a running run is marked interrupted"
    );
    let a = answers(&mut db);

    // Checked against the inputs, not against the code under test.
    assert_eq!(a.count, 8);
    assert_eq!(a.version, modelbench::output::db::latest_version());
    assert_eq!(a.runs.len(), 4);
    let fps: std::collections::BTreeSet<&str> =
        a.runs.iter().map(|r| r.hardware_fp.as_str()).collect();
    assert_eq!(fps.len(), 2, "two machines: {fps:?}");
    assert_eq!(a.runs_at_b.len(), 2);
    assert!(a.runs_at_b.iter().all(|r| r.git_commit == COMMIT_B));
    assert_eq!(a.history.len(), 4);
    let ts: Vec<&str> = a.history.iter().map(|h| h.timestamp.as_str()).collect();
    let mut sorted = ts.clone();
    sorted.sort();
    assert_eq!(ts, sorted, "history is in time order");
    for h in &a.history {
        let (_, recs) = runs.iter().find(|(n, _)| *n == h.run).unwrap();
        let r = recs.iter().find(|r| r.model.label == "m").unwrap();
        assert_eq!(h.tok_s, r.tok_s);
        assert_eq!(h.median_s, Some(r.stats.median));
        assert_eq!(h.n_samples, 8);
        assert_eq!(h.ttft_p99_ms, None, "not measured is NULL");
        assert_eq!(h.git_commit, r.build.git_commit);
    }
    assert_eq!(a.group_history.len(), 4);
    let (name, recs) = &runs[0];
    assert_eq!(&a.runs[0].run, name);
    // record_json round-trips (serde_json's float parsing may differ in the last bit).
    assert_eq!(a.first_run.len(), recs.len());
    for (got, want) in a.first_run.iter().zip(recs) {
        assert_eq!(got.key(), want.key());
        assert_eq!(got.hardware, want.hardware);
        assert_eq!(got.build, want.build);
        for (x, y) in got.samples_s.iter().zip(&want.samples_s) {
            assert!((x - y).abs() <= 1e-12 * y.abs(), "{x} vs {y}");
        }
    }
    assert_eq!(a.trends.len(), 2);
    a
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Writes the four runs as run folders under `root`; returns their paths.
/// `modelbench db push` (`args`) of the 4 runs' 8 records, then again: the second adds none.
fn push_twice(reports: &Path, args: &[&str]) {
    let o = modelbench(reports, args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("8 record(s) added from 4 run(s)"),
        "{}",
        text(&o)
    );
    let o = modelbench(reports, args);
    assert!(text(&o).contains("0 record(s) added"), "{}", text(&o));
}

fn run_folders(root: &Path) -> Vec<PathBuf> {
    runs()
        .into_iter()
        .map(|(name, recs)| {
            let d = root.join(name);
            std::fs::create_dir_all(&d).unwrap();
            write_artifacts(&d, &recs).unwrap();
            d
        })
        .collect()
}

#[test]
fn sqlite_history_holds_two_machines_runs() {
    let tmp = tempfile::tempdir().unwrap();
    exercise(&DbTarget::Sqlite(tmp.path().join("h.db")));
}

#[test]
fn cli_db_push_history_compare_and_bencher_export() {
    let tmp = tempfile::tempdir().unwrap();
    let reports = tmp.path().join("reports");
    let dirs = run_folders(&reports);
    let db = format!("sqlite:{}", tmp.path().join("cli.db").display());
    let d: Vec<&str> = dirs.iter().map(|p| p.to_str().unwrap()).collect();

    // A corrupt folder among the ones pushed: exit 2, one line naming it, nothing written.
    let bad = reports.join("corrupt");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("results.jsonl"), "{not json\n").unwrap();
    let o = modelbench(
        &reports,
        &["db", "push", d[0], bad.to_str().unwrap(), "--db", &db],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("corrupt"), "{}", text(&o));
    let o = modelbench(&reports, &["db", "info", "--db", &db]);
    assert!(text(&o).contains(", 0 record(s)"), "{}", text(&o));

    let mut args = vec!["db", "push"];
    args.extend(&d);
    args.extend(["--db", &db]);
    push_twice(&reports, &args);

    // history: 4 rows (2 machines x 2 commits) in time order, and a PNG.
    let png = tmp.path().join("trend.png");
    let o = modelbench(
        &reports,
        &[
            "history",
            "--bench",
            "medium",
            "--model",
            "m",
            "--db",
            &db,
            "--png",
            png.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("| 2026-")).collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert!(
        rows[0].contains("aaaa000000") && rows[3].contains("bbbb000000"),
        "{out}"
    );
    assert!(out.contains("laptop") && out.contains("desktop"), "{out}");
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    let o = modelbench(
        &reports,
        &["history", "--bench", "nope", "--model", "m", "--db", &db],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // compare by commit: found in the database, on the same hardware; B is 1.5x slower.
    let o = modelbench(&reports, &["compare", "aaaa0000", "bbbb0000", "--db", &db]);
    assert_eq!(o.status.code(), Some(1), "a regression: {}", text(&o));
    assert!(text(&o).contains("1 regression(s)"), "{}", text(&o));
    // A run folder of the desktop against commit B: B's desktop run is picked.
    let o = modelbench(&reports, &["compare", d[2], "bbbb0000", "--db", &db]);
    assert!(text(&o).contains("-desktop on "), "{}", text(&o));
    // A run that did not end is no commit's measurement: with B's desktop run marked
    // interrupted, `compare d[2] bbbb0000` takes B's laptop run; with both, one line, exit 2.
    {
        let target = DbTarget::parse(&db).unwrap();
        let mut h = Db::open(&target).unwrap().unwrap();
        let hw = |i: usize| read_run(&dirs[i]).unwrap()[0].hardware.fingerprint();
        let name = |i: usize| dirs[i].file_name().unwrap().to_string_lossy().into_owned();
        h.set_states(&[(name(3), hw(3), "interrupted")]).unwrap();
        let o = modelbench(
            &reports,
            &["compare", d[2], "bbbb0000", "--db", &db, "--force"],
        );
        assert!(o.status.code() != Some(2), "{}", text(&o));
        assert!(
            text(&o).contains("run 20261122_100000-laptop on "),
            "{}",
            text(&o)
        );
        h.set_states(&[(name(1), hw(1), "interrupted")]).unwrap();
        let o = modelbench(&reports, &["compare", d[2], "bbbb0000", "--db", &db]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("did not end"), "{}", text(&o));
        h.set_states(&[(name(1), hw(1), "complete"), (name(3), hw(3), "complete")])
            .unwrap();
    }
    // An unknown ref: one line, exit 2.
    let o = modelbench(&reports, &["compare", "cccc0000", "bbbb0000", "--db", &db]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no run of that commit"), "{}", text(&o));
    // Cross-hardware: a laptop folder against a desktop folder needs --force.
    let o = modelbench(&reports, &["compare", d[0], d[3]]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("different hardware"), "{}", text(&o));
    let o = modelbench(&reports, &["compare", d[0], d[3], "--force"]);
    assert!(o.status.code() != Some(2), "{}", text(&o));

    // Bencher Metric Format: measured measures only, values from the records.
    let o = modelbench(&reports, &["export", "--format", "bencher", d[0]]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let recs = read_run(&dirs[0]).unwrap();
    let m = &v["medium/cpu-f32/m"];
    let tps = &m["tokens-per-second"];
    assert_eq!(tps["value"].as_f64(), recs[0].tok_s);
    assert!(tps["lower_value"].as_f64().unwrap() <= tps["value"].as_f64().unwrap());
    assert!(tps["upper_value"].as_f64().unwrap() >= tps["value"].as_f64().unwrap());
    assert!(
        m.get("ttft-p99-ms").is_none(),
        "not measured: left out: {m}"
    );
    assert!(m.get("energy-per-token-j").is_none(), "{m}");
}

#[test]
fn a_run_folder_also_goes_into_the_database_once() {
    use modelbench::output::report::RunDir;
    let tmp = tempfile::tempdir().unwrap();
    let mut run = RunDir::new(tmp.path(), Some("t"));
    let (_, recs) = runs().remove(0);
    for r in recs.clone() {
        run.push(r).unwrap();
    }
    run.put_file("extra.txt", b"x".to_vec()).unwrap();
    // The default database sits beside the run folders.
    let target = DbTarget::Sqlite(tmp.path().join("modelbench.db"));
    let mut db = Db::open(&target).unwrap().unwrap();
    assert_eq!(db.count().unwrap(), 2);
    // `db push` of the same folder adds nothing.
    let pushed = (run.name(), read_run(&run.path).unwrap());
    assert_eq!(db.push_runs(&[pushed]).unwrap(), 0);
}

// ---------------------------------------------------------------------------------------
// PostgreSQL.

/// A PostgreSQL server of its own: a temporary data directory, listening on 127.0.0.1 on a
/// free port (and a socket in the directory), stopped when dropped (also on panic).
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// `runuser -u postgres --` when the tests run as root (initdb refuses root).
    as_user: Option<String>,
    port: u16,
}

impl Postgres {
    fn find_bin() -> Option<PathBuf> {
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
            .collect();
        bins.sort_by_key(|b| {
            b.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        bins.pop()
    }

    /// None (with the reason printed) when the binaries are absent and not required.
    fn start() -> Option<Postgres> {
        let Some(bin) = Self::find_bin() else {
            common::skip_unless_required(
                "MODELBENCH_REQUIRE_POSTGRES",
                "PostgreSQL",
                "no initdb/pg_ctl under /usr/lib/postgresql/*/bin (apt-get install postgresql)",
            );
            return None;
        };
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let dir = tempfile::tempdir().unwrap();
        let as_user = root.then(|| "postgres".to_string());
        if let Some(u) = &as_user {
            let st = Command::new("chown")
                .args([&format!("{u}:"), dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(st.success(), "chown of the data directory to {u}");
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Postgres {
            dir,
            bin,
            as_user,
            port,
        };
        let data = pg.dir.path().join("data");
        pg.cmd(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "bench",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
            ],
        );
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} -c fsync=off",
            pg.dir.path().display()
        );
        pg.cmd(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                pg.dir.path().join("log").to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        Some(pg)
    }

    fn cmd(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut c = match &self.as_user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let o = c.args(args).current_dir(self.dir.path()).output().unwrap();
        assert!(
            o.status.success(),
            "{tool} {args:?}: {}\nlog: {}",
            text(&o),
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
        o
    }

    /// A fresh database on the server.
    fn database(&self, name: &str) -> String {
        let admin = format!("postgres://bench@127.0.0.1:{}/postgres", self.port);
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        format!("postgres://bench@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let exe = self.bin.join("pg_ctl");
        let mut c = match &self.as_user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let _ = c
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

#[test]
fn postgres_gives_the_same_answers_as_sqlite() {
    let Some(pg) = Postgres::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let lite = exercise(&DbTarget::Sqlite(tmp.path().join("h.db")));
    let url = pg.database("history");
    let post = exercise(&DbTarget::Postgres(url.clone()));
    assert_eq!(lite, post, "SQLite and PostgreSQL disagree");

    // The CLI against the server: `db push` of two machines' run folders (idempotent), then
    // `compare` by commit through the database.
    let reports = tmp.path().join("reports");
    let dirs = run_folders(&reports);
    let url2 = pg.database("cli");
    let mut args = vec!["db".to_string(), "push".to_string()];
    args.extend(dirs.iter().map(|d| d.display().to_string()));
    args.extend(["--db".to_string(), url2.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    push_twice(&reports, &args);
    let o = modelbench(
        &reports,
        &["compare", "aaaa0000", "bbbb0000", "--db", &url2],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // MODELBENCH_DB=postgres://...: a run's records go to the server as it writes them.
    let o = common::bin()
        .args(["db", "info"])
        .env("MODELBENCH_DB", &url2)
        .output()
        .unwrap();
    assert!(
        text(&o).contains("schema version 3, 8 record(s)"),
        "{}",
        text(&o)
    );
}

/// `modelbench db push` killed with SIGKILL inside its transaction leaves the SQLite
/// database consistent: the hot journal is rolled back on the next open, no row of the killed
/// push remains (one transaction for the whole push), the file passes SQLite's own
/// integrity check, and a later push adds exactly the whole set once.
#[test]
fn a_killed_push_leaves_the_database_consistent() {
    use std::time::Instant;
    let tmp = tempfile::tempdir().unwrap();
    let reports = tmp.path().join("reports");
    // 12 runs x 300 records: a push long enough (seconds) to be killed while it inserts.
    let (runs, per_run) = (12, 300);
    let dirs: Vec<String> = (0..runs)
        .map(|i| {
            let recs: Vec<Record> = (0..per_run)
                .map(|k| {
                    let s: Vec<f64> = (0..8).map(|j| 1.0 + 0.01 * (k + j) as f64).collect();
                    record(
                        "laptop",
                        COMMIT_A,
                        "2026-11-21T10:00:00Z",
                        &format!("m{k}"),
                        &s,
                    )
                })
                .collect();
            let d = reports.join(format!("20261121_1000{i:02}-laptop"));
            std::fs::create_dir_all(&d).unwrap();
            write_artifacts(&d, &recs).unwrap();
            d.to_str().unwrap().to_string()
        })
        .collect();
    let total = (runs * per_run) as i64;
    let path = tmp.path().join("killed.db");
    let journal = tmp.path().join("killed.db-journal");
    let db = format!("sqlite:{}", path.display());
    let push = || {
        let mut c = common::bin();
        c.args(["db", "push"])
            .args(&dirs)
            .args(["--db", &db])
            .env("MODELBENCH_REPORTS", &reports)
            .env_remove("MODELBENCH_DB")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c
    };
    let count = || {
        let mut d = Db::open(&DbTarget::Sqlite(path.clone())).unwrap().unwrap();
        d.count().unwrap()
    };
    let integrity = || {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .unwrap()
    };

    // How long a whole push takes here (it also creates the schema).
    let t = Instant::now();
    assert!(push().status().unwrap().success());
    let full = t.elapsed();
    assert_eq!(count(), total);

    // Kill fresh pushes at points spread over that time until one dies inside its insert
    // transaction (its rollback journal is still on disk after the kill).
    let mut mid_txn = 0;
    for k in 1..=20u32 {
        std::fs::remove_file(&path).unwrap();
        let _ = std::fs::remove_file(&journal);
        // The schema first, so that the kill meets the push's own transaction.
        assert_eq!(count(), 0);
        let mut child = push().spawn().unwrap();
        std::thread::sleep(full.mul_f64(0.3 + 0.6 * f64::from(k % 10) / 10.0));
        if child.try_wait().unwrap().is_some() {
            continue; // finished before the kill: nothing to learn from this point
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let hot = std::fs::metadata(&journal)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        let n = count(); // opening rolls a hot journal back
        assert_eq!(integrity(), "ok", "after a kill at point {k}");
        if hot {
            mid_txn += 1;
            assert_eq!(n, 0, "a push killed inside its transaction left {n} rows");
        } else {
            assert!(n == 0 || n == total, "{n} of {total} rows: a half push");
        }
        if mid_txn >= 2 {
            break;
        }
    }
    eprintln!("a whole push: {full:?}; kills inside its transaction: {mid_txn}");
    assert!(
        mid_txn >= 1,
        "no kill landed inside the transaction (a whole push took {full:?})"
    );
    // The next push completes it exactly once.
    assert!(push().status().unwrap().success());
    assert_eq!(count(), total);
    assert!(push().status().unwrap().success());
    assert_eq!(count(), total, "a second push added rows");
}
