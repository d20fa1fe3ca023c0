//! The library's error type. Every variant renders as one line that names the thing that is
//! wrong and, where there is one, how to fix it.

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

    /// A model reference that does not parse into any source.
    #[error("model `{reference}`: {reason}")]
    ModelRef { reference: String, reason: String },

    /// A file the hub cache should hold but does not.
    #[error("{file} of {repo} is not in the Hugging Face cache {cache}: {hint}")]
    CacheMiss {
        repo: String,
        file: String,
        cache: PathBuf,
        hint: String,
    },

    /// Any other failure to talk to the hub.
    #[error("hub: {repo}: {reason}")]
    Hub { repo: String, reason: String },

    /// A config.json that does not describe a model the suite can build.
    #[error("{path}: invalid config for {family}: {reason}")]
    Config {
        path: String,
        family: String,
        reason: String,
    },

    /// Weights that are missing, truncated or do not match the config.
    #[error("{path}: {reason}")]
    Weights { path: String, reason: String },

    /// A tokenizer that cannot be loaded or used.
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: String, reason: String },

    /// A scenario that cannot run on a model (e.g. longer than its context).
    #[error("scenario `{scenario}` on {model}: {reason}")]
    Scenario {
        scenario: String,
        model: String,
        reason: String,
    },

    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A report or record that cannot be read or compared.
    #[error("{0}")]
    Report(String),

    /// The results database (see output::db): what failed, on which database.
    #[error("database {0}")]
    Db(String),

    /// Training hit a NaN or infinite value (see workloads::train).
    #[error("training stopped at step {step}: {tensor} is NaN or infinite (lower lr, or check the data and the initialisation)")]
    NonFinite { step: usize, tensor: String },

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

    pub fn weights(path: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Error::Weights {
            path: path.to_string(),
            reason: one_line(&reason.to_string()),
        }
    }
}

/// Candle errors can carry multi-line backtraces; a user-facing message keeps the first line.
pub fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}
