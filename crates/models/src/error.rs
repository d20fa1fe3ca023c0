//! The model layer's error type: model references, the hub cache, configs, weights and
//! tokenizers, and a model asked for what it cannot do. What the measurement layer below
//! fails at arrives as [`Error::Measure`] and renders as it did there. Every variant renders
//! as one line that names the thing that is wrong and, where there is one, how to fix it.

use std::path::PathBuf;

pub use modelbench_measure::error::one_line;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The measurement layer's errors (a knob, a file, candle itself, ...), as they were.
    #[error(transparent)]
    Measure(#[from] modelbench_measure::Error),

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

    /// A model asked for what it cannot do (a forward of no tokens, a KV state of another
    /// model, a batch slot that does not exist, a fixture that cannot be written): what and why.
    #[error("{0}")]
    Model(String),
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Measure(e.into())
    }
}

impl Error {
    /// A bad knob or flag value (the measurement layer's [`modelbench_measure::Error::Knob`]).
    pub fn knob(
        name: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
        allowed: impl Into<String>,
    ) -> Self {
        Error::Measure(modelbench_measure::Error::knob(
            name, value, reason, allowed,
        ))
    }

    /// A file that cannot be read or written (the measurement layer's `Io`).
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let f = modelbench_measure::Error::io(path);
        move |source| Error::Measure(f(source))
    }

    pub fn weights(path: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Error::Weights {
            path: path.to_string(),
            reason: one_line(&reason.to_string()),
        }
    }

    /// The candle error inside, where this is one.
    pub fn as_candle(&self) -> Option<&candle_core::Error> {
        match self {
            Error::Measure(modelbench_measure::Error::Candle(c)) => Some(c),
            _ => None,
        }
    }
}
