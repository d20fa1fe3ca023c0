//! `modelbench db push RUN...` and `db info`: the results history database.

use std::path::Path;

use crate::output::db::{Db, DbTarget};
use crate::output::report::{read_run, reports_root};

/// The database `--db` (or MODELBENCH_DB, or the default) names; an error when it is `off`.
pub fn open(flag: Option<&str>) -> crate::Result<Db> {
    let target = DbTarget::resolve(flag, &reports_root())?;
    Db::open(&target)?.ok_or_else(|| {
        fail!(
            "the results database is `off` (--db / MODELBENCH_DB); this command needs one: pass --db PATH or --db postgres://..."
        )
    })
}

/// `modelbench db ...`.
#[derive(clap::Subcommand)]
pub enum DbCmd {
    /// Upload run folders (target-reports/<run>/results.jsonl): every folder is read first,
    /// then all go in one transaction; records already there are skipped.
    Push {
        #[arg(required = true)]
        runs: Vec<std::path::PathBuf>,
        #[arg(long)]
        db: Option<String>,
    },
    /// Schema version, rows and runs (per machine) the database holds.
    Info {
        #[arg(long)]
        db: Option<String>,
    },
}

pub fn db(cmd: DbCmd) -> crate::Result<()> {
    match cmd {
        DbCmd::Push { runs, db } => push(&runs, db.as_deref()),
        DbCmd::Info { db } => info(db.as_deref()),
    }
}

/// The run name of a folder (its last component).
pub fn run_name(dir: &Path) -> String {
    dir.canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn push(runs: &[std::path::PathBuf], flag: Option<&str>) -> crate::Result<()> {
    // Every folder is read before the database is touched: a bad one writes nothing.
    let mut all = Vec::new();
    for dir in runs {
        all.push((run_name(dir), read_run(dir)?));
    }
    let mut db = open(flag)?;
    let added = db.push_runs(&all)?;
    let states: Vec<(String, String, &str)> = runs
        .iter()
        .zip(&all)
        .filter_map(|(dir, (name, recs))| {
            let hw = recs.first()?.hardware.fingerprint();
            Some((
                name.clone(),
                hw,
                crate::output::runs::run_state(dir).as_str(),
            ))
        })
        .collect();
    db.set_states(&states)?;
    let total: usize = all.iter().map(|(_, r)| r.len()).sum();
    println!(
        "{}: {added} record(s) added from {} run(s) ({} already there); {} rows in all",
        db.target().describe(),
        all.len(),
        total as u64 - added,
        db.count()?
    );
    Ok(())
}

fn info(flag: Option<&str>) -> crate::Result<()> {
    let mut db = open(flag)?;
    println!(
        "{}: schema version {}, {} record(s)",
        db.target().describe(),
        db.version()?,
        db.count()?
    );
    println!("| run | hardware | commit | started | records | state |\n|---|---|---|---|---:|---|");
    for r in db.runs(None)? {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            cell(&r.run),
            cell(&r.hardware_fp),
            short(&r.git_commit),
            r.started,
            r.records,
            r.state
        );
    }
    Ok(())
}

/// The first 10 characters of a commit hash.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(10)]
}

/// A markdown table cell: `|` escaped (hardware fingerprints hold one).
pub fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}
