//! The suite's error type: scenarios, reports and records, the results database, training,
//! serving and the commands. What the layers below fail at arrives as [`Error::Models`] (the
//! model layer's errors, which wrap the measurement layer's) and renders as it did there.
//! Every variant renders as one line that names the thing that is wrong and, where there is
//! one, how to fix it.

use std::path::PathBuf;

pub use modelbench_models::error::one_line;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model layer's errors (references, configs, weights, tokenizers) and, inside them,
    /// the measurement layer's (knobs, files, candle), as they were.
    #[error(transparent)]
    Models(#[from] modelbench_models::Error),

    /// A scenario that cannot run on a model (e.g. longer than its context).
    #[error("scenario `{scenario}` on {model}: {reason}")]
    Scenario {
        scenario: String,
        model: String,
        reason: String,
    },

    /// A report or record that cannot be read, written or compared.
    #[error("{0}")]
    Report(String),

    /// The results database (see output::db): what failed, on which database.
    #[error("database {0}")]
    Db(String),

    /// Training hit a NaN or infinite value (see workloads::train).
    #[error("training stopped at step {step}: {tensor} is NaN or infinite (lower lr, or check the data and the initialisation)")]
    NonFinite { step: usize, tensor: String },

    /// Serving (`serve`, `load`; see serving/): a bad flag or a server that cannot be
    /// reached, named with its fix.
    #[error("{0}")]
    Serving(String),

    /// A command (the suite's app and verdicts layers): a flag or config file that cannot be
    /// used, or a step that failed (git, cargo, a worker process, an A/B build), named with
    /// its fix, in one line.
    #[error("{0}")]
    Command(String),
}

impl From<modelbench_measure::Error> for Error {
    fn from(e: modelbench_measure::Error) -> Self {
        Error::Models(e.into())
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Models(e.into())
    }
}

impl Error {
    /// A bad knob or flag value (the measurement layer's `Knob`).
    pub fn knob(
        name: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
        allowed: impl Into<String>,
    ) -> Self {
        modelbench_measure::Error::knob(name, value, reason, allowed).into()
    }

    /// A file that cannot be read or written (the measurement layer's `Io`).
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let f = modelbench_measure::Error::io(path);
        move |source| f(source).into()
    }

    /// The candle error inside, where this is one.
    pub fn as_candle(&self) -> Option<&candle_core::Error> {
        match self {
            Error::Models(e) => e.as_candle(),
            _ => None,
        }
    }
}
