//! The results history database: every record a run writes also goes into a database, so
//! questions across runs, commits and machines ("what changed, where, since when") have an
//! answer. SQLite (bundled) at `target-reports/modelbench.db` by default; PostgreSQL for a
//! fleet of machines sharing one history (`MODELBENCH_DB=postgres://...` or `--db`).
//!
//! One table, `records`: one row per record, with the columns queries filter and sort on
//! (run, commit, hardware, device, dtype, model, benchmark id, shape, join key), every metric
//! as its own nullable column (NULL = not measured, never 0), the raw samples as JSON and the
//! whole record as JSON (what `compare` reads back). `schema_version` holds the migrations
//! applied; [`MIGRATIONS`] are applied in order, each in its own transaction.
//!
//! Both backends run the same SQL: queries are written once with `?` placeholders against
//! [`Tx`]; the only dialect differences (the auto-increment column, `$n` placeholders, the
//! lock taken while migrating) live in [`Dialect`].
//!
//! Writes are transactional: [`Db::push_runs`] inserts every record of every run it is given
//! in one transaction, so a failure or a kill mid-way leaves the database as it was; rows are
//! unique on (run, hardware fingerprint, position in the run), so pushing a run again adds
//! nothing.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::output::record::Record;

mod schema;
pub use schema::{latest_version, row_values, Dialect, Migration, Ty, Val, COLUMNS, MIGRATIONS};

/// The environment knob naming the database (see [`DbTarget::parse`]).
pub const ENV: &str = "MODELBENCH_DB";

/// The database's file name beside the run folders.
pub const DEFAULT_FILE: &str = "modelbench.db";

/// Where the history goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// No database.
    Off,
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` connection URL.
    Postgres(String),
}

impl DbTarget {
    pub const ALLOWED: &'static str =
        "`off`, `sqlite:PATH`, a file path, or `postgres://USER@HOST:PORT/DB`";

    /// `off`, `sqlite:PATH`, `postgres://...` / `postgresql://...`, or a path (SQLite).
    pub fn parse(s: &str) -> std::result::Result<DbTarget, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("empty".into());
        }
        if t.eq_ignore_ascii_case("off") {
            return Ok(DbTarget::Off);
        }
        if t.starts_with("postgres://") || t.starts_with("postgresql://") {
            t.parse::<postgres::Config>()
                .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
            return Ok(DbTarget::Postgres(t.to_string()));
        }
        if t.contains("://") {
            return Err("unknown database scheme (only postgres:// and sqlite:)".into());
        }
        let path = t.strip_prefix("sqlite:").unwrap_or(t);
        if path.is_empty() {
            return Err("`sqlite:` needs a file path".into());
        }
        let path = PathBuf::from(path);
        if path.is_dir() {
            return Err(format!("{} is a directory, not a file", path.display()));
        }
        Ok(DbTarget::Sqlite(path))
    }

    /// `flag` (e.g. `--db`) if given, else [`ENV`] (as the knob table installed it in
    /// `util::settings`), else SQLite at `<reports_root>/modelbench.db`.
    pub fn resolve(flag: Option<&str>, reports_root: &Path) -> Result<DbTarget> {
        let (name, value) = match flag {
            Some(v) => ("--db".to_string(), Some(v.to_string())),
            None => (ENV.to_string(), crate::util::settings::current().db),
        };
        match value {
            None => Ok(DbTarget::Sqlite(reports_root.join(DEFAULT_FILE))),
            Some(v) => {
                DbTarget::parse(&v).map_err(|reason| Error::knob(name, v, reason, Self::ALLOWED))
            }
        }
    }

    /// For messages: the path, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            DbTarget::Off => "off".into(),
            DbTarget::Sqlite(p) => format!("sqlite:{}", p.display()),
            DbTarget::Postgres(u) => redact(u),
        }
    }
}

/// A URL with the password (`user:PASSWORD@`) replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    match rest.split_once('@') {
        Some((cred, host)) => match cred.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.into(),
        },
        None => url.into(),
    }
}

enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Client>),
}

/// An open database at the latest schema version.
pub struct Db {
    conn: Conn,
    target: DbTarget,
}

/// A transaction on either backend; every query of this module goes through it.
pub enum Tx<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(postgres::Transaction<'a>),
}

fn db_err(target: &DbTarget, e: impl std::fmt::Display) -> Error {
    Error::Db(format!(
        "{}: {}",
        target.describe(),
        crate::error::one_line(&e.to_string())
    ))
}

impl Tx<'_> {
    pub fn dialect(&self) -> Dialect {
        match self {
            Tx::Sqlite(_) => Dialect::Sqlite,
            Tx::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs one statement; returns the rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[Val]) -> std::result::Result<u64, String> {
        let sql = self.dialect().placeholders(sql);
        match self {
            Tx::Sqlite(t) => t
                .execute(&sql, rusqlite::params_from_iter(params.iter()))
                .map(|n| n as u64)
                .map_err(|e| e.to_string()),
            Tx::Postgres(t) => {
                let boxed = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref()).collect();
                t.execute(sql.as_str(), &refs).map_err(pg_msg)
            }
        }
    }

    /// Runs one query; every row as values (NULL as [`Val::Null`]).
    pub fn query(
        &mut self,
        sql: &str,
        params: &[Val],
    ) -> std::result::Result<Vec<Vec<Val>>, String> {
        let sql = self.dialect().placeholders(sql);
        match self {
            Tx::Sqlite(t) => {
                let mut st = t.prepare(&sql).map_err(|e| e.to_string())?;
                let n = st.column_count();
                let rows = st
                    .query_map(rusqlite::params_from_iter(params.iter()), |row| {
                        (0..n)
                            .map(|i| {
                                use rusqlite::types::ValueRef;
                                Ok(match row.get_ref(i)? {
                                    ValueRef::Null => Val::Null,
                                    ValueRef::Integer(v) => Val::Int(Some(v)),
                                    ValueRef::Real(v) => Val::Real(Some(v)),
                                    ValueRef::Text(b) | ValueRef::Blob(b) => {
                                        Val::Text(Some(String::from_utf8_lossy(b).into_owned()))
                                    }
                                })
                            })
                            .collect::<rusqlite::Result<Vec<Val>>>()
                    })
                    .map_err(|e| e.to_string())?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(|e| e.to_string())
            }
            Tx::Postgres(t) => {
                use postgres::types::Type;
                let boxed = pg_params(params);
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    boxed.iter().map(|b| b.as_ref()).collect();
                let rows = t.query(sql.as_str(), &refs).map_err(pg_msg)?;
                rows.iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| {
                                let ty = row.columns()[i].type_().clone();
                                let v = if ty == Type::INT8 {
                                    row.try_get::<_, Option<i64>>(i).map(|v| v.map(Val::from_i))
                                } else if ty == Type::INT4 {
                                    row.try_get::<_, Option<i32>>(i)
                                        .map(|v| v.map(|x| Val::from_i(x as i64)))
                                } else if ty == Type::FLOAT8 {
                                    row.try_get::<_, Option<f64>>(i)
                                        .map(|v| v.map(|x| Val::Real(Some(x))))
                                } else {
                                    row.try_get::<_, Option<String>>(i)
                                        .map(|v| v.map(|x| Val::Text(Some(x))))
                                };
                                v.map(|v| v.unwrap_or(Val::Null)).map_err(pg_msg)
                            })
                            .collect::<std::result::Result<Vec<Val>, String>>()
                    })
                    .collect()
            }
        }
    }

    /// Statements without parameters (DDL).
    fn batch(&mut self, sql: &str) -> std::result::Result<(), String> {
        match self {
            Tx::Sqlite(t) => t.execute_batch(sql).map_err(|e| e.to_string()),
            Tx::Postgres(t) => t.batch_execute(sql).map_err(pg_msg),
        }
    }

    fn commit(self) -> std::result::Result<(), String> {
        match self {
            Tx::Sqlite(t) => t.commit().map_err(|e| e.to_string()),
            Tx::Postgres(t) => t.commit().map_err(pg_msg),
        }
    }
}

impl Val {
    fn from_i(i: i64) -> Val {
        Val::Int(Some(i))
    }
}

/// PostgreSQL errors: the server's message (with its detail), on one line.
fn pg_msg(e: postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{}: {}", d.severity(), d.message()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    }
}

fn pg_params(params: &[Val]) -> Vec<Box<dyn postgres::types::ToSql + Sync>> {
    params
        .iter()
        .map(|v| -> Box<dyn postgres::types::ToSql + Sync> {
            match v {
                Val::Int(i) => Box::new(*i),
                Val::Real(f) => Box::new(*f),
                Val::Text(s) => Box::new(s.clone()),
                Val::Null => Box::new(None::<String>),
            }
        })
        .collect()
}

/// One run as the database holds it (a run folder from one machine).
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub run: String,
    pub hardware_fp: String,
    pub git_commit: String,
    /// The first record's timestamp.
    pub started: String,
    pub records: i64,
    /// `complete`, `running`, `interrupted`, or `unmarked` (no state kept: older than states).
    pub state: String,
}

/// One row of `modelbench history`.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub timestamp: String,
    pub run: String,
    pub git_commit: String,
    pub git_dirty: String,
    pub hardware_fp: String,
    pub bench_id: String,
    pub shape: String,
    pub n_samples: i64,
    pub median_s: Option<f64>,
    pub tok_s: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub j_per_token: Option<f64>,
}

fn text(v: &Val) -> String {
    v.as_str().unwrap_or_default().to_string()
}

impl Db {
    /// Opens (creating when needed) the database and brings its schema to the latest version.
    /// None for [`DbTarget::Off`].
    pub fn open(target: &DbTarget) -> Result<Option<Db>> {
        let conn = match target {
            DbTarget::Off => return Ok(None),
            DbTarget::Sqlite(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
                }
                let c = rusqlite::Connection::open(p).map_err(|e| db_err(target, e))?;
                // Benches and the CLI may write at the same time: wait for the lock.
                c.busy_timeout(std::time::Duration::from_secs(30))
                    .map_err(|e| db_err(target, e))?;
                Conn::Sqlite(c)
            }
            DbTarget::Postgres(url) => {
                let c = postgres::Client::connect(url, postgres::NoTls)
                    .map_err(|e| db_err(target, pg_msg(e)))?;
                Conn::Postgres(Box::new(c))
            }
        };
        let mut db = Db {
            conn,
            target: target.clone(),
        };
        db.migrate()?;
        Ok(Some(db))
    }

    pub fn target(&self) -> &DbTarget {
        &self.target
    }

    /// Runs `f` in one transaction: committed when it returns Ok, rolled back otherwise.
    pub fn with_tx<T>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<T, String>,
    ) -> Result<T> {
        let target = self.target.clone();
        let mut tx = match &mut self.conn {
            Conn::Sqlite(c) => Tx::Sqlite(
                c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(|e| db_err(&target, e))?,
            ),
            Conn::Postgres(c) => Tx::Postgres(c.transaction().map_err(|e| db_err(&target, e))?),
        };
        let out = f(&mut tx).map_err(|e| db_err(&target, e))?;
        tx.commit().map_err(|e| db_err(&target, e))?;
        Ok(out)
    }

    /// The schema version the database is at (0: empty).
    pub fn version(&mut self) -> Result<i64> {
        self.with_tx(|tx| {
            let rows = tx.query("SELECT MAX(version) FROM schema_version", &[])?;
            Ok(rows
                .first()
                .and_then(|r| r.first())
                .and_then(Val::as_i64)
                .unwrap_or(0))
        })
    }

    fn migrate(&mut self) -> Result<()> {
        self.with_tx(|tx| {
            tx.batch("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL, applied TEXT NOT NULL, description TEXT NOT NULL)")?;
            if let Some(lock) = tx.dialect().migration_lock() {
                tx.batch(lock)?;
            }
            let rows = tx.query("SELECT MAX(version) FROM schema_version", &[])?;
            let have = rows
                .first()
                .and_then(|r| r.first())
                .and_then(Val::as_i64)
                .unwrap_or(0);
            if have > latest_version() {
                return Err(format!(
                    "schema version {have} is newer than this modelbench knows ({}); use a newer modelbench",
                    latest_version()
                ));
            }
            for (i, (desc, m)) in MIGRATIONS.iter().enumerate().skip(have as usize) {
                for stmt in m(tx.dialect()) {
                    tx.batch(&stmt)
                        .map_err(|e| format!("migration {} ({desc}): {e}", i + 1))?;
                }
                tx.execute(
                    "INSERT INTO schema_version (version, applied, description) VALUES (?, ?, ?)",
                    &[
                        Val::int(i as i64 + 1),
                        Val::text(&crate::util::time::now_rfc3339()),
                        Val::text(desc),
                    ],
                )?;
            }
            Ok(())
        })
    }

    /// Inserts the records of each (run name, records) in ONE transaction; returns the rows
    /// added (records already there are skipped). `before_each(n)` is called before the
    /// `n`-th insert (0-based, across runs); an error from it aborts the push and rolls every
    /// row of it back.
    pub fn push_runs_with(
        &mut self,
        runs: &[(String, Vec<Record>)],
        before_each: &mut dyn FnMut(usize) -> std::result::Result<(), String>,
    ) -> Result<u64> {
        let cols: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
        let sql = format!(
            "INSERT INTO records ({}) VALUES ({}) ON CONFLICT (run, hardware_fp, seq) DO NOTHING",
            cols.join(", "),
            vec!["?"; cols.len()].join(", ")
        );
        self.with_tx(|tx| {
            let mut added = 0;
            let mut n = 0;
            for (run, records) in runs {
                for (seq, r) in records.iter().enumerate() {
                    before_each(n)?;
                    n += 1;
                    added += tx.execute(&sql, &row_values(run, seq, r))?;
                }
            }
            Ok(added)
        })
    }

    /// [`Db::push_runs_with`] without a hook.
    pub fn push_runs(&mut self, runs: &[(String, Vec<Record>)]) -> Result<u64> {
        self.push_runs_with(runs, &mut |_| Ok(()))
    }

    /// Rows in `records`.
    pub fn count(&mut self) -> Result<i64> {
        self.with_tx(|tx| {
            let rows = tx.query("SELECT COUNT(*) FROM records", &[])?;
            Ok(rows
                .first()
                .and_then(|r| r.first())
                .and_then(Val::as_i64)
                .unwrap_or(0))
        })
    }

    /// Every run (one per run name and machine), oldest first; with `commit_prefix`, only
    /// runs of commits starting with it.
    pub fn runs(&mut self, commit_prefix: Option<&str>) -> Result<Vec<RunRow>> {
        let (filter, params) = match commit_prefix {
            Some(p) => (
                "WHERE r.git_commit LIKE ?",
                vec![Val::Text(Some(format!("{}%", like_escape(p))))],
            ),
            None => ("", vec![]),
        };
        let sql = format!(
            "SELECT r.run, r.hardware_fp, MIN(r.git_commit), MIN(r.timestamp), COUNT(*), MIN(s.state) \
             FROM records r LEFT JOIN run_states s ON s.run = r.run AND s.hardware_fp = r.hardware_fp \
             {filter} GROUP BY r.run, r.hardware_fp ORDER BY MIN(r.timestamp), r.run, r.hardware_fp"
        );
        self.with_tx(|tx| {
            Ok(tx
                .query(&sql, &params)?
                .iter()
                .map(|r| RunRow {
                    run: text(&r[0]),
                    hardware_fp: text(&r[1]),
                    git_commit: text(&r[2]),
                    started: text(&r[3]),
                    records: r[4].as_i64().unwrap_or(0),
                    state: r[5]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .unwrap_or("unmarked")
                        .to_string(),
                })
                .collect())
        })
    }

    /// Sets the state of runs (run name, hardware fingerprint, state), in one transaction.
    pub fn set_states(&mut self, states: &[(String, String, &str)]) -> Result<()> {
        let now = crate::util::time::now_rfc3339();
        self.with_tx(|tx| {
            for (run, hw, state) in states {
                tx.execute(
                    "INSERT INTO run_states (run, hardware_fp, state, updated) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (run, hardware_fp) DO UPDATE SET state = excluded.state, updated = excluded.updated",
                    &[Val::text(run), Val::text(hw), Val::text(state), Val::text(&now)],
                )?;
            }
            Ok(())
        })
    }

    /// Marks `running` runs of these names `interrupted` (their owners are gone).
    pub fn mark_interrupted(&mut self, runs: &[String]) -> Result<()> {
        let now = crate::util::time::now_rfc3339();
        self.with_tx(|tx| {
            for run in runs {
                tx.execute(
                    "UPDATE run_states SET state = 'interrupted', updated = ? WHERE run = ? AND state = 'running'",
                    &[Val::text(&now), Val::text(run)],
                )?;
            }
            Ok(())
        })
    }

    /// The records of one run on one machine, in the order the run wrote them.
    pub fn run_records(&mut self, run: &str, hardware_fp: &str) -> Result<Vec<Record>> {
        self.with_tx(|tx| {
            tx.query(
                "SELECT record_json FROM records WHERE run = ? AND hardware_fp = ? ORDER BY seq",
                &[Val::text(run), Val::text(hardware_fp)],
            )?
            .iter()
            .map(|r| {
                serde_json::from_str::<Record>(r[0].as_str().unwrap_or_default())
                    .map_err(|e| format!("run {run}: a stored record does not parse: {e}"))
            })
            .collect()
        })
    }

    /// One benchmark of one model across commits and machines, oldest first. `bench` matches
    /// the benchmark id (`medium/cpu-f32/fixture:llama`) or its group (`medium`).
    pub fn history(&mut self, bench: &str, model: &str) -> Result<Vec<HistoryRow>> {
        self.with_tx(|tx| {
            Ok(tx
                .query(
                    "SELECT timestamp, run, git_commit, git_dirty, hardware_fp, bench_id, shape, \
                     n_samples, median_s, tok_s, ttft_p99_ms, j_per_token FROM records \
                     WHERE (bench_id = ? OR scenario = ?) AND model = ? \
                     ORDER BY timestamp, run, hardware_fp, seq",
                    &[Val::text(bench), Val::text(bench), Val::text(model)],
                )?
                .iter()
                .map(|r| HistoryRow {
                    timestamp: text(&r[0]),
                    run: text(&r[1]),
                    git_commit: text(&r[2]),
                    git_dirty: text(&r[3]),
                    hardware_fp: text(&r[4]),
                    bench_id: text(&r[5]),
                    shape: text(&r[6]),
                    n_samples: r[7].as_i64().unwrap_or(0),
                    median_s: r[8].as_f64(),
                    tok_s: r[9].as_f64(),
                    ttft_p99_ms: r[10].as_f64(),
                    j_per_token: r[11].as_f64(),
                })
                .collect())
        })
    }

    /// (benchmark id, model) pairs with at least `min_points` rows holding tok/s, most rows
    /// first: the trends worth a chart.
    pub fn trend_series(&mut self, min_points: i64) -> Result<Vec<(String, String)>> {
        self.with_tx(|tx| {
            Ok(tx
                .query(
                    "SELECT bench_id, model, COUNT(*) FROM records WHERE tok_s IS NOT NULL \
                     GROUP BY bench_id, model HAVING COUNT(*) >= ? \
                     ORDER BY COUNT(*) DESC, bench_id, model",
                    &[Val::int(min_points)],
                )?
                .iter()
                .map(|r| (text(&r[0]), text(&r[1])))
                .collect())
        })
    }
}

/// tok/s trend lines of history rows: one series per hardware fingerprint, x = the row's
/// position in time order (1-based, shared by every line). Rows without tok/s are left out.
pub fn trend_lines(rows: &[HistoryRow]) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let Some(v) = r.tok_s else { continue };
        let p = ((i + 1) as f64, v);
        match series.iter_mut().find(|(h, _)| h == &r.hardware_fp) {
            Some((_, pts)) => pts.push(p),
            None => series.push((r.hardware_fp.clone(), vec![p])),
        }
    }
    series
}

/// A file-name-safe form of `s`, no longer than a file name may be.
pub fn slug(s: &str) -> String {
    crate::util::fsio::bounded_name(
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect(),
    )
}

/// The trend charts of target-reports/index.html: for up to `max` (benchmark, model) pairs
/// with at least two tok/s points in the database beside the run folders, a PNG under
/// `<root>/trends/`; returns (title, file name relative to root). Only the default SQLite
/// database (or MODELBENCH_DB) that already exists is read; none: no charts.
pub fn index_trends(root: &Path, max: usize) -> Result<Vec<(String, String)>> {
    let target = DbTarget::resolve(None, root)?;
    if let DbTarget::Sqlite(p) = &target {
        if !p.is_file() {
            return Ok(Vec::new());
        }
    }
    let Some(mut db) = Db::open(&target)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (bench, model) in db.trend_series(2)?.into_iter().take(max) {
        let rows = db.history(&bench, &model)?;
        let lines = trend_lines(&rows);
        if lines.is_empty() {
            continue;
        }
        let file = format!("trends/{}.png", slug(&format!("{bench}-{model}")));
        let title = format!("{bench} ({model}): tok/s per hardware");
        crate::output::plot::trend_png(
            &root.join(&file),
            &title,
            ("run (time order)", "tok/s"),
            &lines,
        )?;
        out.push((title, file));
    }
    Ok(out)
}

/// A commit prefix for LIKE: only its letters and digits, so no `%` or `_` can widen it.
fn like_escape(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
}

/// Pushes the records of a run folder that are not in the database yet (the hook every run
/// folder's flush calls, so benches and the CLI both do it). `db` is resolved from
/// `MODELBENCH_DB` with the default beside the run folders.
pub fn sync_run(run_dir: &Path, records: &[Record]) -> Result<()> {
    sync(run_dir, records, true)
}

/// Records the run folder's state ([`crate::output::runs::run_state`]) in the database: the
/// last step of [`crate::output::report::RunDir::complete`].
pub fn sync_state(run_dir: &Path, records: &[Record]) -> Result<()> {
    sync(run_dir, records, false)
}

fn sync(run_dir: &Path, records: &[Record], push_records: bool) -> Result<()> {
    use crate::output::runs::{list_runs, run_state, RunState};
    let root = run_dir.parent().unwrap_or(Path::new("."));
    let target = DbTarget::resolve(None, root)?;
    let name = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let push = || -> Result<()> {
        let Some(mut db) = Db::open(&target)? else {
            return Ok(());
        };
        if push_records {
            let first = db.push_runs(&[(name.clone(), records.to_vec())])? == records.len() as u64;
            // A run's first push also marks earlier runs of this folder whose owners are gone.
            if first {
                let gone: Vec<String> = list_runs(root)
                    .iter()
                    .filter(|p| p.as_path() != run_dir && run_state(p) == RunState::Interrupted)
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect();
                db.mark_interrupted(&gone)?;
            }
        }
        if let Some(hw) = records.first().map(|r| r.hardware.fingerprint()) {
            db.set_states(&[(name.clone(), hw, run_state(run_dir).as_str())])?;
        }
        Ok(())
    };
    push().map_err(|e| match e {
        Error::Db(m) => Error::Db(format!(
            "{m}; the run folder {} holds the records: `modelbench db push {}` once the database is back",
            run_dir.display(),
            run_dir.display()
        )),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(DbTarget::parse("off").unwrap(), DbTarget::Off);
        assert_eq!(
            DbTarget::parse("sqlite:/tmp/x.db").unwrap(),
            DbTarget::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            DbTarget::parse("x.db").unwrap(),
            DbTarget::Sqlite("x.db".into())
        );
        assert!(matches!(
            DbTarget::parse("postgres://u@127.0.0.1:5432/db").unwrap(),
            DbTarget::Postgres(_)
        ));
        assert!(DbTarget::parse("mysql://x").is_err());
        assert!(DbTarget::parse("sqlite:").is_err());
        assert!(DbTarget::parse("").is_err());
        assert!(DbTarget::parse("/").is_err());
    }

    #[test]
    fn passwords_are_not_printed() {
        let t = DbTarget::Postgres("postgres://u:secret@h:5/db".into());
        assert_eq!(t.describe(), "postgres://u:***@h:5/db");
    }

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            Dialect::Postgres.placeholders("a = ? AND b = ?"),
            "a = $1 AND b = $2"
        );
        assert_eq!(Dialect::Sqlite.placeholders("a = ?"), "a = ?");
    }

    #[test]
    fn a_row_has_every_column_with_its_type() {
        let r = Record::from_samples(
            crate::output::record::Kind::Generation,
            "s",
            vec![1.0, 2.0],
            4,
        );
        let v = row_values("run", 0, &r);
        assert_eq!(v.len(), COLUMNS.len());
        for ((name, ty), val) in COLUMNS.iter().zip(&v) {
            let ok = matches!(
                (ty, val),
                (Ty::Int, Val::Int(_)) | (Ty::Real, Val::Real(_)) | (Ty::Text, Val::Text(_))
            );
            assert!(ok, "{name}: {val:?} is not {ty:?}");
        }
        // Not measured is NULL, never 0.
        let col = |n: &str| &v[COLUMNS.iter().position(|c| c.0 == n).unwrap()];
        assert_eq!(col("ttft_p99_ms"), &Val::Real(None));
        assert_eq!(col("j_per_token"), &Val::Real(None));
        assert_eq!(col("median_s"), &Val::Real(Some(1.5)));
    }
}
