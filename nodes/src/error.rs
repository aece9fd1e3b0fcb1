//! The error type of the nodes library.

use std::path::PathBuf;

/// Everything that can go wrong while building, loading or running the model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed (shape mismatch inside candle, device error, ...).
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A parameter the configuration needs is not in the checkpoint.
    #[error("checkpoint has no parameter `{name}` (needed by the model configuration)")]
    MissingParam { name: String },
    /// A parameter has a shape that contradicts the configuration.
    #[error("parameter `{name}` has shape {found:?} but the configuration expects {expected:?}")]
    ParamShape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// The configuration itself is inconsistent or unsupported.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// A request the model cannot serve (bad length, wrong input shape, ...).
    #[error("{0}")]
    Invalid(String),
    /// A checkpoint file could not be read or parsed.
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The run was cancelled through a hook.
    #[error("cancelled")]
    Cancelled,
}

/// Result alias of the nodes library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
}
