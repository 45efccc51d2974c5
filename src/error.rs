//! The library's one error type: every variant names what went wrong in terms a user can act on
//! (the op and the shapes, the file and the value). `anyhow` appears only in `main.rs` and `cli/`.

use std::path::PathBuf;

/// Every fallible library call returns this.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op got tensors whose shapes do not fit together.
    #[error("{op}: shape mismatch: expected {expected}, got {got}")]
    Shape { op: &'static str, expected: String, got: String },

    /// An op got an argument outside its domain (a zero stride, a negative probability, ...).
    #[error("{op}: invalid argument: {msg}")]
    Arg { op: &'static str, msg: String },

    /// Tensors on different devices, or an op that the device cannot run.
    #[error("{op}: device mismatch or unsupported device: {msg}")]
    Device { op: &'static str, msg: String },

    /// A file could not be read or written. The OS error is part of the message (not a
    /// `source`), so error chains print it once.
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },

    /// A file was read but its content is not what it claims to be.
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },

    /// A configuration value is wrong.
    #[error("config: {msg}")]
    Config { msg: String },

    /// Something the CUDA driver or NVRTC reported.
    #[error("cuda: {0}")]
    Cuda(String),

    /// Training produced a non-finite loss, gradient or weight. Nothing non-finite was written:
    /// the last good checkpoint stays as it was.
    #[error("training diverged: {0}")]
    Diverged(String),

    /// The user interrupted a long job (Ctrl-C); what was finished is on disk.
    #[error("interrupted: {0}")]
    Interrupted(String),

    /// A feature that is planned but not built yet. Never returned for anything that is documented
    /// as working.
    #[error("{0} is not implemented yet")]
    NotImplemented(&'static str),
}

impl Error {
    /// Shorthand for [`Error::Shape`] with `Debug`-formatted shapes.
    pub fn shape(
        op: &'static str,
        expected: impl std::fmt::Debug,
        got: impl std::fmt::Debug,
    ) -> Self {
        Error::Shape { op, expected: format!("{expected:?}"), got: format!("{got:?}") }
    }

    /// Shorthand for [`Error::Arg`].
    pub fn arg(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Arg { op, msg: msg.into() }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), err: source }
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), msg: msg.into() }
    }
}
