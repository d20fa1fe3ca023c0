//! The application: what each `modelbench` command does, given its options (as cargo's
//! `ops` are to cargo's commands). A command's options are its `clap::Args` type here, beside
//! the function that runs it; the binary (src/bin/modelbench/) parses the command line and
//! calls one function of this layer (or of [`crate::verdicts`]). Errors are one-line
//! [`crate::Error::Command`]s naming the flag or step and the fix; output goes to stdout
//! (results) and stderr (progress), as the commands print it.

use std::fmt::Display;

use crate::{Error, Result};

pub mod args;
pub mod calibrate;
pub mod db;
pub mod depth;
pub mod dequantize;
pub mod generate;
pub mod history;
pub mod list;
pub mod load;
pub mod memory;
pub mod moe;
pub mod ops;
pub mod ops_table;
pub mod peers;
pub mod perplexity;
pub mod power;
pub mod probe;
pub mod report;
pub mod run;
pub mod serve;
pub mod sweep;
pub mod tokenize;
pub mod train;
pub mod train_sweep;
pub mod trials;
pub mod verify;

/// A failure with what was being done in front: `what: error` (as anyhow's `context` reads),
/// or only `what` for a missing value.
pub trait Context<T> {
    fn context(self, what: impl Display) -> Result<T>;
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Display) -> Result<T> {
        self.map_err(|e| Error::Command(format!("{what}: {e}")))
    }
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::Command(format!("{}: {e}", what())))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl Display) -> Result<T> {
        self.ok_or_else(|| Error::Command(what.to_string()))
    }
    fn with_context<D: Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.ok_or_else(|| Error::Command(what().to_string()))
    }
}

/// Pretty JSON of a value the crate built (its types always serialize).
pub fn json_text(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).expect("serializable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_reads_as_anyhow_did() {
        let r: std::result::Result<(), String> = Err("boom".into());
        assert_eq!(
            r.context("cannot start x").unwrap_err().to_string(),
            "cannot start x: boom"
        );
        let o: Option<u8> = None;
        assert_eq!(
            o.with_context(|| format!("no {}", "model"))
                .unwrap_err()
                .to_string(),
            "no model"
        );
    }
}
