//! Error mapping (`recofast_core::error`): the exception classes of recofast, defined here
//! and re-exported by `recofast.errors`, and the one conversion of a core error to a Python
//! exception, applied at the boundary only.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;

use recofast_core::Error;

// The classes report `recofast.errors` as their module: that is where they are documented
// and imported from, and where pickle finds them again.
create_exception!(recofast.errors, RecofastError, PyException, "Base class of recofast's own exceptions.");
create_exception!(
    recofast.errors,
    SnapshotError,
    RecofastError,
    "A model snapshot is truncated, corrupt, or of a format this build cannot read."
);

/// Maps a core error to its Python exception: `ValueError`, `recofast.errors.SnapshotError`
/// or an `OSError` subclass (`FileNotFoundError`, `PermissionError`, ...).
pub(crate) fn to_py(e: Error) -> PyErr {
    match e {
        Error::InvalidArgument(m) => PyValueError::new_err(m),
        Error::Snapshot(m) => SnapshotError::new_err(m),
        Error::Io(e) => PyErr::from(e),
    }
}

/// Adds the exception classes to `recofast._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("RecofastError", py.get_type::<RecofastError>())?;
    m.add("SnapshotError", py.get_type::<SnapshotError>())?;
    Ok(())
}
