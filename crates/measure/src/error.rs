//! The measurement layer's error type: only what this crate itself can get wrong (a knob, a
//! file, a child process, valgrind, thread counts, a Candle source, candle itself). Each layer
//! above has its own enum that wraps the one below (`modelbench_models::Error::Measure`,
//! `modelbench_suite::Error::Models`), so a variant lives where its errors are made. Every
//! variant renders as one line that names the thing that is wrong and, where there is one,
//! how to fix it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad value of an environment knob or CLI flag.
    #[error("{name}={value:?} is invalid: {reason} (allowed: {allowed})")]
    Knob {
        name: String,
        value: String,
        reason: String,
        allowed: String,
    },

    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A measurement that could not be taken or kept (a child process that failed, a buffer
    /// that could not be had, a calibration that could not be written): what and why.
    #[error("{0}")]
    Measure(String),

    /// Counting instructions under valgrind (see measure::instructions): what failed, and
    /// the fix.
    #[error("valgrind: {0}")]
    Valgrind(String),

    /// Thread counts that make a comparison unfair (candle's two pools, or an engine and
    /// candle): both counts, the variables that set them and the fix, in one line.
    #[error("{0}")]
    ThreadMismatch(String),

    /// A `--base-candle` / `--new-candle` source that cannot be used or built against
    /// (measure::candle_source): the source, what is wrong and the fix, in one line.
    #[error("{0}")]
    CandleSource(String),

    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn knob(
        name: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
        allowed: impl Into<String>,
    ) -> Self {
        Error::Knob {
            name: name.into(),
            value: value.into(),
            reason: reason.into(),
            allowed: allowed.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Candle errors can carry multi-line backtraces; a user-facing message keeps the first line.
pub fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}
