//! `modelbench sweep` seen from outside: a tiny grid of all four families writes a parquet
//! file whose schema and rows read back with the parquet crate's own reader, the telemetry
//! table beside it; the GPU queues and bad flags are refused with one line, writing nothing.

mod common;
use common::{assert_bad_input, modelbench};

use std::path::Path;

use parquet::basic::Type as Physical;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};

/// The schema README documents: (column, physical type, nullable).
const SCHEMA: &[(&str, Physical, bool)] = &[
    ("queue", Physical::BYTE_ARRAY, false),
    ("architecture", Physical::BYTE_ARRAY, false),
    ("model_dim", Physical::INT64, false),
    ("depth", Physical::INT64, false),
    ("horizons", Physical::INT64, false),
    ("batch", Physical::INT64, false),
    ("seq_len", Physical::INT64, false),
    ("vocab", Physical::INT64, false),
    ("attention_layers", Physical::INT64, false),
    ("state_space_layers", Physical::INT64, false),
    ("experts", Physical::INT64, true),
    ("top_k", Physical::INT64, true),
    ("params", Physical::INT64, false),
    ("active_params", Physical::INT64, false),
    ("accelerator", Physical::BYTE_ARRAY, false),
    ("device", Physical::BYTE_ARRAY, false),
    ("dtype", Physical::BYTE_ARRAY, false),
    ("trials", Physical::INT64, false),
    ("forward_ms_median", Physical::DOUBLE, true),
    ("forward_ms_p90", Physical::DOUBLE, true),
    ("train_ms_median", Physical::DOUBLE, true),
    ("train_ms_p90", Physical::DOUBLE, true),
    ("forward_samples_per_s", Physical::DOUBLE, true),
    ("forward_tokens_per_s", Physical::DOUBLE, true),
    ("train_samples_per_s", Physical::DOUBLE, true),
    ("train_tokens_per_s", Physical::DOUBLE, true),
    ("train_loss", Physical::DOUBLE, true),
    ("memory_kind", Physical::BYTE_ARRAY, false),
    ("forward_peak_bytes", Physical::INT64, true),
    ("train_peak_bytes", Physical::INT64, true),
    ("forward_flops_per_token", Physical::DOUBLE, false),
    ("train_flops_per_token", Physical::DOUBLE, false),
    ("train_gflops", Physical::DOUBLE, true),
    ("matmul_roof_gflops", Physical::DOUBLE, true),
    ("train_roof_pct", Physical::DOUBLE, true),
    ("roof_source", Physical::BYTE_ARRAY, false),
    ("status", Physical::BYTE_ARRAY, false),
    ("reason", Physical::BYTE_ARRAY, true),
    ("timestamp", Physical::BYTE_ARRAY, false),
];

fn field<'a>(r: &'a Row, name: &str) -> &'a Field {
    r.get_column_iter()
        .find(|(n, _)| n.as_str() == name)
        .map(|(_, f)| f)
        .unwrap_or_else(|| panic!("no column {name}"))
}

fn num(r: &Row, name: &str) -> Option<f64> {
    match field(r, name) {
        Field::Null => None,
        Field::Double(v) => Some(*v),
        Field::Long(v) => Some(*v as f64),
        other => panic!("{name}: {other:?}"),
    }
}

fn text(r: &Row, name: &str) -> String {
    match field(r, name) {
        Field::Str(s) => s.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn a_tiny_sweep_writes_parquet_that_reads_back_with_its_schema_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.yaml");
    std::fs::write(
        &cfg,
        "queue: tiny-cpu\naccelerator: cpu\nbatch: 2\nseq_len: 8\nvocab: 32\nwarmup: 1\ntrials: 2\nexperts: 4\nattention_every: 2\n",
    )
    .unwrap();
    let out = dir.path().join("out/tiny.parquet");
    let o = modelbench(
        dir.path(),
        &[
            "sweep",
            "--config",
            cfg.to_str().unwrap(),
            "--architectures",
            "dense,omni_mixture,state_space,hybrid_transformer",
            "--model-dims",
            "32",
            "--depths",
            "1,2",
            "--horizons",
            "2",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let reader = SerializedFileReader::new(std::fs::File::open(&out).unwrap()).unwrap();
    let meta = reader.metadata().file_metadata();
    let cols: Vec<(String, Physical, bool)> = meta
        .schema_descr()
        .columns()
        .iter()
        .map(|c| {
            (
                c.name().to_string(),
                c.physical_type(),
                c.self_type().is_optional(),
            )
        })
        .collect();
    let want: Vec<(String, Physical, bool)> = SCHEMA
        .iter()
        .map(|(n, t, o)| (n.to_string(), *t, *o))
        .collect();
    assert_eq!(cols, want);
    assert_eq!(meta.num_rows(), 4 * 2, "families x depths");
    let rows: Vec<Row> = reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(rows.len(), 8);
    let arch: Vec<String> = rows.iter().map(|r| text(r, "architecture")).collect();
    assert_eq!(
        arch,
        [
            "dense",
            "dense",
            "mixture",
            "mixture",
            "state_space",
            "state_space",
            "hybrid",
            "hybrid"
        ]
    );
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(text(r, "status"), "ok", "row {i}");
        assert_eq!(text(r, "memory_kind"), "host heap");
        // Every timing, throughput and the host heap peak were measured; p90 >= median.
        for name in [
            "train_ms_median",
            "forward_ms_median",
            "train_samples_per_s",
            "train_tokens_per_s",
            "train_peak_bytes",
        ] {
            assert!(num(r, name).is_some_and(|v| v > 0.0), "row {i} {name}");
        }
        assert!(num(r, "train_ms_p90").unwrap() >= num(r, "train_ms_median").unwrap());
        // samples/s = batch / median step; tokens/s = samples/s x seq_len.
        let sps = 2.0 / (num(r, "train_ms_median").unwrap() / 1e3);
        assert!((num(r, "train_samples_per_s").unwrap() / sps - 1.0).abs() < 1e-9);
        assert!((num(r, "train_tokens_per_s").unwrap() / (8.0 * sps) - 1.0).abs() < 1e-9);
        // Experts only on mixture rows.
        assert_eq!(num(r, "experts").is_some(), i == 2 || i == 3, "row {i}");
    }
    assert_eq!(num(&rows[2], "experts"), Some(4.0));
    // hybrid at depth 2 with attention_every 2: one attention and one state-space layer.
    assert_eq!(num(&rows[7], "attention_layers"), Some(1.0));
    assert_eq!(num(&rows[7], "state_space_layers"), Some(1.0));
    assert_eq!(num(&rows[5], "attention_layers"), Some(0.0));
    assert!(num(&rows[2], "active_params").unwrap() < num(&rows[2], "params").unwrap());

    let md = std::fs::read_to_string(out.with_extension("md")).unwrap();
    assert_eq!(md.lines().count(), 2 + 8);
    assert!(!md.contains("_pending_") && !md.contains("| 0 |"), "{md}");
    assert!(md.contains("| tiny-cpu | hybrid d32 L2 h2 |"), "{md}");
    assert!(md.contains("not available (CPU run)"), "{md}");
}

#[test]
fn gpu_queues_and_bad_flags_are_refused_with_one_line_and_nothing_written() {
    if cfg!(feature = "cuda") {
        return; // a CUDA build may open a GPU here
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gpu.parquet");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for q in ["omni_gpu", "hybrid_gpu"] {
        let cfg = root.join(format!("configs/benchmarks/{q}.yaml"));
        let o = modelbench(
            dir.path(),
            &[
                "sweep",
                "--config",
                cfg.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
            ],
        );
        assert_bad_input(&o, "built without CUDA");
    }
    let o = modelbench(
        dir.path(),
        &[
            "sweep",
            "--accelerator",
            "gpu",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert_bad_input(&o, "--accelerator");
    let o = modelbench(
        dir.path(),
        &[
            "sweep",
            "--architectures",
            "rnn",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert_bad_input(&o, "unknown architecture `rnn`");
    let o = modelbench(
        dir.path(),
        &[
            "sweep",
            "--model-dims",
            "33",
            "--architectures",
            "dense",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert_bad_input(&o, "heads");
    assert!(!out.exists());
}

#[test]
fn the_committed_baseline_cpu_parquet_reads_back_with_one_row_of_the_schema() {
    // docs/benchmarks/baseline_cpu.parquet: the seed's baseline-cpu command, as run and
    // committed (README "Architecture sweep").
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/benchmarks/baseline_cpu.parquet");
    let reader = SerializedFileReader::new(std::fs::File::open(&p).unwrap()).unwrap();
    let meta = reader.metadata().file_metadata();
    let names: Vec<&str> = meta
        .schema_descr()
        .columns()
        .iter()
        .map(|c| c.name())
        .collect();
    let want: Vec<&str> = SCHEMA.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(names, want);
    assert_eq!(meta.num_rows(), 1);
    let row = reader.get_row_iter(None).unwrap().next().unwrap().unwrap();
    assert_eq!(text(&row, "queue"), "baseline-cpu");
    assert_eq!(text(&row, "architecture"), "state_space");
    assert_eq!(num(&row, "model_dim"), Some(256.0));
    assert_eq!(num(&row, "depth"), Some(6.0));
    assert_eq!(num(&row, "horizons"), Some(5.0));
    assert!(num(&row, "train_ms_median").is_some_and(|v| v > 0.0));
    println!(
        "rows {} | train {:.1} ms/step | {:.2} samples/s | host heap peak {} B",
        meta.num_rows(),
        num(&row, "train_ms_median").unwrap(),
        num(&row, "train_samples_per_s").unwrap(),
        num(&row, "train_peak_bytes").unwrap()
    );
}
