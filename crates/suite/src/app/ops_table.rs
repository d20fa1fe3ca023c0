//! The per-op table as `ops --json` saves it: the table and the Candle of the build that
//! measured it (issue 48), so two tables of two Candles (`ops --candle`) compare with
//! `ops --base` and say which Candle each is; and the check that a base table is of the same
//! model and step.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::workloads::ops::{OpsPlan, OpsTable, Phase};
use crate::Result;

/// A saved per-op table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedTable {
    #[serde(flatten)]
    pub table: OpsTable,
    /// The Candle of the build that measured it (`build.candle` of its records:
    /// `0.11.1`, `0.11.0 (crates.io)`, `0.11.0 path /x/candle (git 1a2b3c4d5e6f; ...)`). None:
    /// a table saved before tables named it.
    #[serde(default)]
    pub candle: Option<String>,
}

impl SavedTable {
    /// A table measured by this process, with this build's Candle.
    pub fn of_this_build(table: OpsTable) -> SavedTable {
        SavedTable {
            table,
            candle: Some(crate::measure::hardware::build().candle),
        }
    }
}

/// A table written by `ops --json`, with its Candle label when it has one.
pub fn read_saved(p: &Path) -> Result<SavedTable> {
    let text = std::fs::read_to_string(p).map_err(|e| {
        fail!(
            "{}: {e} (write one with `modelbench ops --json`)",
            p.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| {
        fail!(
            "{}: not a per-op table from `modelbench ops --json` ({e})",
            p.display()
        )
    })
}

/// Refuses a base table of another model or step than `model` at `plan`: its rows are other
/// ops and shapes, so what grew would mean nothing. One line naming both and the fix.
pub fn same_step(base: &SavedTable, path: &Path, model: &str, plan: &OpsPlan) -> Result<()> {
    let b = &base.table;
    let step = |phase: Phase, tokens: usize, depth: usize| match phase {
        Phase::Decode => format!("decode at depth {depth}"),
        Phase::Prefill => format!("prefill of {tokens} tokens"),
    };
    ensure!(
        b.model == model,
        "--base {}: a table of model `{}`, not `{model}`; compare tables of one model (give --model {} or a base table of {model})",
        path.display(),
        b.model,
        b.model
    );
    let (theirs, ours) = (
        step(b.phase, b.tokens, b.depth),
        step(plan.phase, plan.tokens, plan.depth),
    );
    ensure!(
        theirs == ours,
        "--base {}: a table of the {theirs}, not the {ours}; compare tables of one step (give the base's --scenario and --depth / --prompt-tokens)",
        path.display()
    );
    Ok(())
}

/// Which Candle each table was measured on: both labels when they differ (what `ops
/// --candle` tables are compared for), one when they agree.
pub fn candles_line(base: &SavedTable, new: &SavedTable) -> String {
    let name = |t: &SavedTable| {
        t.candle
            .clone()
            .unwrap_or_else(|| "not recorded (a table saved before tables named it)".into())
    };
    if base.candle == new.candle {
        format!("Candle: {} (both tables)", name(new))
    } else {
        format!(
            "Candles differ: base measured on Candle {}, this table on Candle {}",
            name(base),
            name(new)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::ops::Roofs;

    fn table(model: &str, phase: Phase, depth: usize, tokens: usize) -> OpsTable {
        OpsTable {
            model: model.into(),
            phase,
            tokens,
            depth,
            threads: "rayon=2, matmul=2".into(),
            step_us: 100.0,
            step_ci_us: None,
            step_samples: 2,
            rows: Vec::new(),
            roofs: Roofs::default(),
            injected: None,
            peer: None,
            in_model: None,
            order_note: None,
        }
    }

    #[test]
    fn a_saved_table_carries_its_candle_and_older_tables_still_read() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("t.json");
        let saved = SavedTable {
            table: table("gguf:fixture:gemma3", Phase::Decode, 320, 1),
            candle: Some("0.11.0 (crates.io)".into()),
        };
        std::fs::write(&p, crate::app::json_text(&saved)).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("\"candle\": \"0.11.0 (crates.io)\""),
            "{text}"
        );
        assert!(
            text.contains("\"model\": \"gguf:fixture:gemma3\""),
            "{text}"
        );
        let back = read_saved(&p).unwrap();
        assert_eq!(back.candle.as_deref(), Some("0.11.0 (crates.io)"));
        assert_eq!(back.table.depth, 320);
        // A table written before the label: the plain table.
        std::fs::write(&p, crate::app::json_text(&saved.table)).unwrap();
        assert_eq!(read_saved(&p).unwrap().candle, None);
        // This build's own label.
        let mine = SavedTable::of_this_build(saved.table.clone());
        assert_eq!(mine.candle, Some(crate::measure::hardware::build().candle));
    }

    #[test]
    fn a_base_of_another_model_or_step_is_refused_in_one_line() {
        let p = Path::new("base.json");
        let decode = OpsPlan::for_scenario(Phase::Decode, None, None);
        let base = |m: &str, ph: Phase, d: usize, t: usize| SavedTable {
            table: table(m, ph, d, t),
            candle: None,
        };
        let ok = base("gguf:fixture:gemma3", Phase::Decode, 320, 1);
        assert!(same_step(&ok, p, "gguf:fixture:gemma3", &decode).is_ok());
        let refused = |b: &SavedTable, model: &str| {
            let e = same_step(b, p, model, &decode).unwrap_err().to_string();
            assert_eq!(e.lines().count(), 1, "{e}");
            e
        };
        assert_eq!(
            refused(&ok, "gguf:other"),
            "--base base.json: a table of model `gguf:fixture:gemma3`, not `gguf:other`; compare tables of one model (give --model gguf:fixture:gemma3 or a base table of gguf:other)"
        );
        let prefill = base("gguf:fixture:gemma3", Phase::Prefill, 0, 1024);
        let e = refused(&prefill, "gguf:fixture:gemma3");
        assert!(
            e.starts_with("--base base.json: a table of the prefill of 1024 tokens, not the decode at depth 320;"),
            "{e}"
        );
        let deeper = base("gguf:fixture:gemma3", Phase::Decode, 100, 1);
        let e = refused(&deeper, "gguf:fixture:gemma3");
        assert!(
            e.contains("decode at depth 100, not the decode at depth 320"),
            "{e}"
        );
    }

    #[test]
    fn the_candles_of_both_tables_are_named_when_they_differ() {
        let t = |c: Option<&str>| SavedTable {
            table: table("m", Phase::Decode, 320, 1),
            candle: c.map(str::to_string),
        };
        assert_eq!(
            candles_line(&t(Some("0.11.0 (crates.io)")), &t(Some("0.11.1"))),
            "Candles differ: base measured on Candle 0.11.0 (crates.io), this table on Candle 0.11.1"
        );
        assert_eq!(
            candles_line(&t(Some("0.11.1")), &t(Some("0.11.1"))),
            "Candle: 0.11.1 (both tables)"
        );
        assert!(candles_line(&t(None), &t(Some("0.11.1")))
            .starts_with("Candles differ: base measured on Candle not recorded"));
    }
}
