//! The architecture sweep's outputs (`modelbench sweep`): one [`ArchRow`] per grid point,
//! written as parquet (schema [`COLUMNS`], stable; README documents every column) and
//! the original sweep's telemetry table as Markdown. A value that was not measured is null in parquet
//! and "not available" in the table, never 0.

use std::path::Path;
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

use crate::error::{Error, Result};

/// One grid point: a family at one model dim, depth and horizon count, measured as a forward
/// and as a train step.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ArchRow {
    pub queue: String,
    pub architecture: String,
    pub model_dim: i64,
    pub depth: i64,
    pub horizons: i64,
    pub batch: i64,
    pub seq_len: i64,
    pub vocab: i64,
    pub attention_layers: i64,
    pub state_space_layers: i64,
    pub experts: Option<i64>,
    pub top_k: Option<i64>,
    pub params: i64,
    pub active_params: i64,
    pub accelerator: String,
    pub device: String,
    pub dtype: String,
    pub trials: i64,
    pub forward_ms_median: Option<f64>,
    pub forward_ms_p90: Option<f64>,
    pub train_ms_median: Option<f64>,
    pub train_ms_p90: Option<f64>,
    pub forward_samples_per_s: Option<f64>,
    pub forward_tokens_per_s: Option<f64>,
    pub train_samples_per_s: Option<f64>,
    pub train_tokens_per_s: Option<f64>,
    pub train_loss: Option<f64>,
    /// `host heap` (counting allocator) or `device pool` (candle's CUDA pool high-water mark).
    pub memory_kind: String,
    pub forward_peak_bytes: Option<i64>,
    pub train_peak_bytes: Option<i64>,
    pub forward_flops_per_token: f64,
    pub train_flops_per_token: f64,
    pub train_gflops: Option<f64>,
    pub matmul_roof_gflops: Option<f64>,
    pub train_roof_pct: Option<f64>,
    pub roof_source: String,
    /// `ok`, or `failed` with the reason.
    pub status: String,
    pub reason: Option<String>,
    pub timestamp: String,
}

/// How one column is read from a row: its parquet type and nullability follow.
#[derive(Clone, Copy)]
pub enum Col {
    Str(fn(&ArchRow) -> &str),
    OptStr(fn(&ArchRow) -> Option<&str>),
    I64(fn(&ArchRow) -> i64),
    OptI64(fn(&ArchRow) -> Option<i64>),
    F64(fn(&ArchRow) -> f64),
    OptF64(fn(&ArchRow) -> Option<f64>),
}

impl Col {
    /// The column's line of the parquet message type.
    fn declare(self, name: &str) -> String {
        let (rep, ty) = match self {
            Col::Str(_) => ("REQUIRED", "BYTE_ARRAY"),
            Col::OptStr(_) => ("OPTIONAL", "BYTE_ARRAY"),
            Col::I64(_) => ("REQUIRED", "INT64"),
            Col::OptI64(_) => ("OPTIONAL", "INT64"),
            Col::F64(_) => ("REQUIRED", "DOUBLE"),
            Col::OptF64(_) => ("OPTIONAL", "DOUBLE"),
        };
        let utf8 = if ty == "BYTE_ARRAY" { " (UTF8)" } else { "" };
        format!("  {rep} {ty} {name}{utf8};\n")
    }
}

/// The columns, in file order: the one definition of the schema (README documents it).
pub const COLUMNS: &[(&str, Col)] = &[
    ("queue", Col::Str(|r| &r.queue)),
    ("architecture", Col::Str(|r| &r.architecture)),
    ("model_dim", Col::I64(|r| r.model_dim)),
    ("depth", Col::I64(|r| r.depth)),
    ("horizons", Col::I64(|r| r.horizons)),
    ("batch", Col::I64(|r| r.batch)),
    ("seq_len", Col::I64(|r| r.seq_len)),
    ("vocab", Col::I64(|r| r.vocab)),
    ("attention_layers", Col::I64(|r| r.attention_layers)),
    ("state_space_layers", Col::I64(|r| r.state_space_layers)),
    ("experts", Col::OptI64(|r| r.experts)),
    ("top_k", Col::OptI64(|r| r.top_k)),
    ("params", Col::I64(|r| r.params)),
    ("active_params", Col::I64(|r| r.active_params)),
    ("accelerator", Col::Str(|r| &r.accelerator)),
    ("device", Col::Str(|r| &r.device)),
    ("dtype", Col::Str(|r| &r.dtype)),
    ("trials", Col::I64(|r| r.trials)),
    ("forward_ms_median", Col::OptF64(|r| r.forward_ms_median)),
    ("forward_ms_p90", Col::OptF64(|r| r.forward_ms_p90)),
    ("train_ms_median", Col::OptF64(|r| r.train_ms_median)),
    ("train_ms_p90", Col::OptF64(|r| r.train_ms_p90)),
    (
        "forward_samples_per_s",
        Col::OptF64(|r| r.forward_samples_per_s),
    ),
    (
        "forward_tokens_per_s",
        Col::OptF64(|r| r.forward_tokens_per_s),
    ),
    (
        "train_samples_per_s",
        Col::OptF64(|r| r.train_samples_per_s),
    ),
    ("train_tokens_per_s", Col::OptF64(|r| r.train_tokens_per_s)),
    ("train_loss", Col::OptF64(|r| r.train_loss)),
    ("memory_kind", Col::Str(|r| &r.memory_kind)),
    ("forward_peak_bytes", Col::OptI64(|r| r.forward_peak_bytes)),
    ("train_peak_bytes", Col::OptI64(|r| r.train_peak_bytes)),
    (
        "forward_flops_per_token",
        Col::F64(|r| r.forward_flops_per_token),
    ),
    (
        "train_flops_per_token",
        Col::F64(|r| r.train_flops_per_token),
    ),
    ("train_gflops", Col::OptF64(|r| r.train_gflops)),
    ("matmul_roof_gflops", Col::OptF64(|r| r.matmul_roof_gflops)),
    ("train_roof_pct", Col::OptF64(|r| r.train_roof_pct)),
    ("roof_source", Col::Str(|r| &r.roof_source)),
    ("status", Col::Str(|r| &r.status)),
    ("reason", Col::OptStr(|r| r.reason.as_deref())),
    ("timestamp", Col::Str(|r| &r.timestamp)),
];

/// The parquet message type of [`COLUMNS`].
pub fn message_type() -> String {
    let mut s = String::from("message arch_sweep {\n");
    for (name, c) in COLUMNS {
        s.push_str(&c.declare(name));
    }
    s.push('}');
    s
}

/// Definition levels of an optional column (1 present, 0 null) and its present values.
fn present<T>(v: Vec<Option<T>>) -> (Vec<T>, Vec<i16>) {
    let defs = v.iter().map(|x| i16::from(x.is_some())).collect();
    (v.into_iter().flatten().collect(), defs)
}

/// The rows as a parquet file's bytes: one row group, uncompressed (the crate is built
/// without codecs), written with parquet's column writer.
pub fn parquet_bytes(rows: &[ArchRow]) -> Result<Vec<u8>> {
    let err = |e: parquet::errors::ParquetError| Error::Report(format!("parquet write: {e}"));
    let schema =
        Arc::new(parquet::schema::parser::parse_message_type(&message_type()).map_err(err)?);
    let props = Arc::new(WriterProperties::builder().build());
    let mut buf = Vec::new();
    let mut w = SerializedFileWriter::new(&mut buf, schema, props).map_err(err)?;
    let mut rg = w.next_row_group().map_err(err)?;
    let bytes = |s: &str| ByteArray::from(s.as_bytes().to_vec());
    for (_, c) in COLUMNS {
        let mut col = rg
            .next_column()
            .map_err(err)?
            .expect("one writer per column");
        let written = match *c {
            Col::Str(f) => {
                let v: Vec<ByteArray> = rows.iter().map(|r| bytes(f(r))).collect();
                col.typed::<ByteArrayType>().write_batch(&v, None, None)
            }
            Col::OptStr(f) => {
                let (v, d) = present(rows.iter().map(|r| f(r).map(bytes)).collect());
                col.typed::<ByteArrayType>().write_batch(&v, Some(&d), None)
            }
            Col::I64(f) => {
                let v: Vec<i64> = rows.iter().map(f).collect();
                col.typed::<Int64Type>().write_batch(&v, None, None)
            }
            Col::OptI64(f) => {
                let (v, d) = present(rows.iter().map(f).collect());
                col.typed::<Int64Type>().write_batch(&v, Some(&d), None)
            }
            Col::F64(f) => {
                let v: Vec<f64> = rows.iter().map(f).collect();
                col.typed::<DoubleType>().write_batch(&v, None, None)
            }
            Col::OptF64(f) => {
                let (v, d) = present(rows.iter().map(f).collect());
                col.typed::<DoubleType>().write_batch(&v, Some(&d), None)
            }
        };
        written.map_err(err)?;
        col.close().map_err(err)?;
    }
    rg.close().map_err(err)?;
    w.close().map_err(err)?;
    Ok(buf)
}

/// Writes the rows to `path` as parquet, atomically (a failed write leaves nothing
/// half-written).
pub fn write_parquet(path: &Path, rows: &[ArchRow]) -> Result<()> {
    Ok(crate::util::fsio::atomic_write(
        path,
        &parquet_bytes(rows)?,
    )?)
}

fn na(v: Option<f64>, prec: usize) -> String {
    v.map(|v| format!("{v:.prec$}"))
        .unwrap_or_else(|| "not available".into())
}

/// The original sweep's "Profiler Trace Status" table, one line per grid point: train-step throughput
/// (samples/s) and median latency (ms/step), VRAM (the CUDA pool's peak over the train steps;
/// "not available" on a CPU run) and the host heap peak (CPU runs).
pub fn telemetry_markdown(rows: &[ArchRow]) -> String {
    let mut s = String::from(
        "| Run | Grid point | Throughput (samples/s) | VRAM (GB) | Host heap peak (GB) | Latency (ms/step) | Status |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in rows {
        let gb = |b: Option<i64>| b.map(|b| b as f64 / 1e9);
        let (vram, host) = if r.memory_kind == "device pool" {
            (na(gb(r.train_peak_bytes), 3), "not available".to_string())
        } else {
            (
                "not available (CPU run)".to_string(),
                na(gb(r.train_peak_bytes), 3),
            )
        };
        let status = match &r.reason {
            None => format!(
                "{}: train step (B {} x T {}, {} {}), median of {} steps",
                r.status, r.batch, r.seq_len, r.device, r.dtype, r.trials
            ),
            Some(why) => format!("{}: {}", r.status, why.replace('|', "/")),
        };
        s.push_str(&format!(
            "| {} | {} d{} L{} h{} | {} | {} | {} | {} | {} |\n",
            r.queue,
            r.architecture,
            r.model_dim,
            r.depth,
            r.horizons,
            na(r.train_samples_per_s, 2),
            vram,
            host,
            na(r.train_ms_median, 1),
            status
        ));
    }
    s
}
