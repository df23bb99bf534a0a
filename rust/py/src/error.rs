//! Error mapping (`recofast_core::error`): the one conversion of a core error to a Python
//! exception, applied at the boundary only.

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;

use recofast_core::Error;

/// Maps a core error to its Python exception: `ValueError`, `recofast.errors.SnapshotError`
/// or an `OSError` subclass (`FileNotFoundError`, `PermissionError`, ...).
pub(crate) fn to_py(py: Python<'_>, e: Error) -> PyErr {
    match e {
        Error::InvalidArgument(m) => PyValueError::new_err(m),
        Error::Snapshot(m) => match py.import("recofast.errors").and_then(|m| m.getattr("SnapshotError")) {
            Ok(cls) => PyErr::from_type(cls.cast_into().expect("SnapshotError is a type"), m),
            Err(_) => PyOSError::new_err(m),
        },
        Error::Io(e) => PyErr::from(e),
    }
}
