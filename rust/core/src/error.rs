//! The core's error type. The Python binding maps each variant to an exception class
//! (`ValueError`, `recofast.errors.SnapshotError`, `OSError`) at the boundary only.

/// Everything that can go wrong in the core on an input path. No input makes the core panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller passed something the operation cannot take (k = 0, lengths that differ, an
    /// unknown event type, a wrong dimension...). The message says what was wrong.
    #[error("{0}")]
    InvalidArgument(String),
    /// A snapshot file is truncated, corrupt, of another format or of a version we cannot read.
    #[error("{0}")]
    Snapshot(String),
    /// An operating-system error while reading or writing a file.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for `Err(Error::InvalidArgument(format!(...)))`.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => {
        Err($crate::error::Error::InvalidArgument(format!($($arg)*)))
    };
}
