//! `recofast._core`: the Python bindings of the Rust core. Conversions, GIL release and
//! error mapping only; every algorithm lives in `recofast-core`. The files mirror the
//! core's modules: `model` (the `Model` class, its options and snapshots), `drift`,
//! `kernels`, `error` (the exception classes and the mapping of core errors); `convert`
//! holds the conversions they share.

mod convert;
mod drift;
mod error;
mod kernels;
mod model;

use pyo3::prelude::*;

use recofast_core::context::CONTEXT_FIELDS;
use recofast_core::{EVENT_TYPES, VERSION};

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    error::register(m)?;
    model::register(m)?;
    drift::register(m)?;
    kernels::register(m)?;
    m.add("EVENT_TYPES", EVENT_TYPES.to_vec())?;
    m.add("CONTEXT_FIELDS", CONTEXT_FIELDS.to_vec())?;
    m.add("__version__", VERSION)?;
    Ok(())
}
