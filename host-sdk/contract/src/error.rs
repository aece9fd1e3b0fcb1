//! Errors that cross the boundary: node failures and validation issues.

use std::fmt;

use abi_stable::{std_types::RString, StableAbi};

/// What kind of failure a [`NodeError`] is.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The node ran and failed (bad data, I/O, numerical error, ...).
    Failed = 0,
    /// The node panicked; the plugin caught it at the boundary.
    Panicked = 1,
    /// The node stopped because the host asked it to (cancellation).
    Interrupted = 2,
    /// An input had the wrong type or an unusable value.
    InvalidInput = 3,
    /// The node ran out of (GPU or host) memory.
    OutOfMemory = 4,
}

impl ErrorKind {
    /// The exception-type string used in ComfyUI's `execution_error` event.
    pub const fn exception_type(self) -> &'static str {
        match self {
            ErrorKind::Failed => "RuntimeError",
            ErrorKind::Panicked => "Panic",
            ErrorKind::Interrupted => "InterruptProcessingException",
            ErrorKind::InvalidInput => "ValueError",
            ErrorKind::OutOfMemory => "OutOfMemoryError",
        }
    }
}

/// An error returned by a plugin entry point.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct NodeError {
    /// The kind of failure.
    pub kind: ErrorKind,
    /// A one-line, human-readable reason.
    pub message: RString,
}

impl NodeError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        NodeError {
            kind,
            message: RString::from(message.into()),
        }
    }

    /// A generic failure.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }

    /// A caught panic.
    pub fn panicked(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Panicked, message)
    }

    /// Cancellation acknowledged.
    pub fn interrupted() -> Self {
        Self::new(ErrorKind::Interrupted, "interrupted")
    }

    /// A problem with one input.
    pub fn invalid_input(input: &str, message: impl fmt::Display) -> Self {
        Self::new(
            ErrorKind::InvalidInput,
            format!("input '{input}': {message}"),
        )
    }

    /// Whether this error is the acknowledgement of a cancellation.
    pub fn is_interrupted(&self) -> bool {
        self.kind == ErrorKind::Interrupted
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message.as_str())
    }
}

impl std::error::Error for NodeError {}

/// One problem found by a node's own input validation (see `PluginMod::validate`).
/// The host reports it as a ComfyUI `custom_validation_failed` error.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ValidationIssue {
    /// The input concerned, or empty for a problem with the node as a whole.
    pub input_name: RString,
    /// Why the value is refused.
    pub message: RString,
}

impl ValidationIssue {
    /// A problem with one input.
    pub fn new(input_name: &str, message: impl Into<String>) -> Self {
        ValidationIssue {
            input_name: RString::from(input_name),
            message: RString::from(message.into()),
        }
    }
}
