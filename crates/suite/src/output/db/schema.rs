//! The results database's schema: the SQL values and dialects, the columns a record becomes,
//! and the migrations between versions.

use crate::output::record::Record;

/// A value bound to or read from a query. Parameters carry their SQL type even when NULL
/// (PostgreSQL needs it); results read as NULL are [`Val::Null`].
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<String>),
    Null,
}

impl Val {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Text(Some(s)) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Real(v) => *v,
            Val::Int(v) => v.map(|i| i as f64),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Val::Int(v) => *v,
            _ => None,
        }
    }

    pub(super) fn text(s: &str) -> Val {
        Val::Text(Some(s.to_string()))
    }

    pub(super) fn int(v: impl TryInto<i64>) -> Val {
        Val::Int(v.try_into().ok())
    }
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value};
        Ok(ToSqlOutput::Owned(match self {
            Val::Int(Some(i)) => Value::Integer(*i),
            Val::Real(Some(f)) => Value::Real(*f),
            Val::Text(Some(s)) => Value::Text(s.clone()),
            _ => Value::Null,
        }))
    }
}

/// The SQL that differs between SQLite and PostgreSQL; everything else is written once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub(super) fn id_column(self) -> &'static str {
        match self {
            Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Dialect::Postgres => "BIGSERIAL PRIMARY KEY",
        }
    }

    /// `?` placeholders as the backend wants them (`$1, $2, ...` for PostgreSQL). The SQL of
    /// this module never holds a `?` inside a string literal.
    pub(super) fn placeholders(self, sql: &str) -> String {
        match self {
            Dialect::Sqlite => sql.to_string(),
            Dialect::Postgres => {
                let mut out = String::with_capacity(sql.len() + 8);
                let mut n = 0;
                for c in sql.chars() {
                    if c == '?' {
                        n += 1;
                        out.push_str(&format!("${n}"));
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }

    /// Taken (inside the migration transaction) so two processes never migrate at once.
    /// SQLite's migration transaction is IMMEDIATE already.
    pub(super) fn migration_lock(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("LOCK TABLE schema_version IN ACCESS EXCLUSIVE MODE"),
        }
    }
}

/// SQL column types of [`COLUMNS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Int,
    Real,
    Text,
}

impl Ty {
    pub(super) fn sql(self) -> &'static str {
        match self {
            Ty::Int => "BIGINT",
            Ty::Real => "DOUBLE PRECISION",
            Ty::Text => "TEXT",
        }
    }
}

/// The columns of `records` (schema version 1), besides `id`, in insert order. Frozen: a
/// change is a new migration.
pub const COLUMNS: &[(&str, Ty)] = &[
    ("run", Ty::Text),
    ("seq", Ty::Int),
    ("timestamp", Ty::Text),
    ("git_commit", Ty::Text),
    ("git_dirty", Ty::Text),
    ("hardware_fp", Ty::Text),
    ("cpu", Ty::Text),
    ("cores", Ty::Int),
    ("gpu", Ty::Text),
    ("os", Ty::Text),
    ("hardware", Ty::Text),
    ("device", Ty::Text),
    ("dtype", Ty::Text),
    ("model", Ty::Text),
    ("model_source", Ty::Text),
    ("family", Ty::Text),
    ("kind", Ty::Text),
    ("scenario", Ty::Text),
    ("bench_id", Ty::Text),
    ("sampling", Ty::Text),
    ("shape", Ty::Text),
    ("record_key", Ty::Text),
    ("harness", Ty::Text),
    ("engine", Ty::Text),
    ("prompt_tokens", Ty::Int),
    ("new_tokens", Ty::Int),
    ("tokens_per_sample", Ty::Int),
    ("n_samples", Ty::Int),
    ("median_s", Ty::Real),
    ("mean_s", Ty::Real),
    ("stddev_s", Ty::Real),
    ("mad_s", Ty::Real),
    ("min_s", Ty::Real),
    ("max_s", Ty::Real),
    ("tok_s", Ty::Real),
    ("ttft_p50_ms", Ty::Real),
    ("ttft_p90_ms", Ty::Real),
    ("ttft_p99_ms", Ty::Real),
    ("tpot_p50_ms", Ty::Real),
    ("tpot_p90_ms", Ty::Real),
    ("tpot_p99_ms", Ty::Real),
    ("itl_p50_ms", Ty::Real),
    ("itl_p90_ms", Ty::Real),
    ("itl_p99_ms", Ty::Real),
    ("prefill_tok_s", Ty::Real),
    ("decode_tok_s", Ty::Real),
    ("load_s", Ty::Real),
    ("host_peak_bytes", Ty::Int),
    ("gpu_peak_bytes", Ty::Int),
    ("gpu_used_bytes", Ty::Int),
    ("power_mean_w", Ty::Real),
    ("power_max_w", Ty::Real),
    ("energy_j", Ty::Real),
    ("j_per_token", Ty::Real),
    ("decode_gbs", Ty::Real),
    ("mem_bw_util_pct", Ty::Real),
    ("prefill_gflops", Ty::Real),
    ("compute_util_pct", Ty::Real),
    ("samples_json", Ty::Text),
    ("record_json", Ty::Text),
];

/// Columns that are never NULL.
pub(super) const NOT_NULL: &[&str] = &[
    "run",
    "seq",
    "timestamp",
    "hardware_fp",
    "bench_id",
    "record_key",
    "record_json",
];

/// A migration: its description and its statements in a dialect.
pub type Migration = (&'static str, fn(Dialect) -> Vec<String>);

/// Ordered migrations: version `i + 1` is `MIGRATIONS[i]`, applied once, in order.
pub const MIGRATIONS: &[Migration] = &[
    ("records table", migration_1),
    ("query indexes", migration_2),
    ("run states", migration_3),
];

pub(super) fn migration_1(d: Dialect) -> Vec<String> {
    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|(n, t)| {
            let nn = if NOT_NULL.contains(n) {
                " NOT NULL"
            } else {
                ""
            };
            format!("  {n} {}{nn}", t.sql())
        })
        .collect();
    vec![format!(
        "CREATE TABLE records (\n  id {},\n{},\n  UNIQUE (run, hardware_fp, seq)\n)",
        d.id_column(),
        cols.join(",\n")
    )]
}

pub(super) fn migration_2(_: Dialect) -> Vec<String> {
    vec![
        "CREATE INDEX records_commit ON records (git_commit)".into(),
        "CREATE INDEX records_bench ON records (bench_id, model, timestamp)".into(),
        "CREATE INDEX records_hardware ON records (hardware_fp, timestamp)".into(),
    ]
}

/// Whether each run ended (issue 61 item 8): `running` from its first record, `complete` when
/// its last benchmark has ended, `interrupted` once a later run on the machine sees its owner
/// gone. A run with records and no row here predates run states.
pub(super) fn migration_3(_: Dialect) -> Vec<String> {
    vec![
        "CREATE TABLE run_states (\n  run TEXT NOT NULL,\n  hardware_fp TEXT NOT NULL,\n  state TEXT NOT NULL,\n  updated TEXT NOT NULL,\n  UNIQUE (run, hardware_fp)\n)".into(),
    ]
}

/// The schema version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// The column values of one record (in [`COLUMNS`] order).
pub fn row_values(run: &str, seq: usize, r: &Record) -> Vec<Val> {
    let g = r.gen.clone().unwrap_or_default();
    let rl = r.roofline.clone().unwrap_or_default();
    let real = Val::Real;
    let fin = |v: Option<f64>| Val::Real(v.filter(|x| x.is_finite()));
    let stat = |v: f64| Val::Real((r.stats.n > 0 && v.is_finite()).then_some(v));
    let bytes = |v: Option<u64>| Val::Int(v.and_then(|b| i64::try_from(b).ok()));
    let bench_id = if r.id.is_empty() {
        format!("{}/{}-{}", r.scenario, r.device, r.dtype)
    } else {
        r.id.clone()
    };
    let engine = if r.model.provenance.implementation.is_empty() {
        "candle".to_string()
    } else {
        r.model.provenance.implementation.clone()
    };
    let mut row = vec![
        Val::text(run),
        Val::int(seq as i64),
        Val::text(&r.timestamp),
        Val::text(&r.build.git_commit),
        Val::text(&r.build.git_dirty),
        Val::text(&r.hardware.fingerprint()),
        Val::text(&r.hardware.cpu),
        Val::int(r.hardware.cores as i64),
        Val::Text(r.hardware.gpu.as_ref().map(|g| g.name.clone())),
        Val::text(&r.hardware.os),
        Val::text(&r.hardware.describe()),
        Val::text(&r.device),
        Val::text(&r.dtype.name()),
        Val::text(&r.model.label),
        Val::text(&r.model.source),
        Val::text(&r.model.family),
        Val::text(r.kind.as_str()),
        Val::text(&r.scenario),
        Val::text(&bench_id),
        Val::text(&r.sampling_desc),
        Val::text(&r.shape.to_string()),
        Val::text(&r.key()),
        Val::text(match r.harness {
            crate::output::record::Harness::Criterion => "criterion",
            crate::output::record::Harness::Cli => "cli",
        }),
        Val::text(&engine),
        Val::Int(r.prompt_tokens.and_then(|v| i64::try_from(v).ok())),
        Val::Int(r.new_tokens.and_then(|v| i64::try_from(v).ok())),
        Val::int(r.tokens_per_sample as i64),
        Val::int(r.stats.n as i64),
    ];
    // median_s .. max_s.
    let s = &r.stats;
    row.extend([s.median, s.mean, s.stddev, s.mad, s.min, s.max].map(stat));
    row.push(fin(r.tok_s));
    // ttft_p50_ms .. itl_p99_ms.
    row.extend(g.latency_percentiles().into_iter().map(fin));
    row.extend([fin(g.prefill_tok_s), fin(g.decode_tok_s)]);
    // Only records that loaded a model have a load time.
    row.push(real(r.model.load_seconds));
    row.extend(
        [
            r.memory.host_peak_bytes,
            r.memory.gpu_peak_bytes,
            r.memory.gpu_used_bytes,
        ]
        .map(bytes),
    );
    // power_mean_w .. compute_util_pct.
    row.extend(
        [
            r.power.mean_w,
            r.power.max_w,
            r.power.energy_j,
            r.power.j_per_token,
            rl.decode_gbs,
            rl.mem_bw_util_pct,
            rl.prefill_gflops,
            rl.compute_util_pct,
        ]
        .map(fin),
    );
    row.push(Val::Text(Some(
        serde_json::to_string(&r.samples_s).unwrap_or_else(|_| "[]".into()),
    )));
    row.push(Val::Text(Some(
        serde_json::to_string(r)
            .map_err(|e| e.to_string())
            .unwrap_or_default(),
    )));
    row
}
