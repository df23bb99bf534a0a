//! Conversions at the boundary: ids and event names out of Python objects, factor tables
//! into numpy arrays, and the helper every heavy call takes to release the GIL.

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString, PyTuple};

use recofast_core::config::{event_index, Weights};
use recofast_core::table::{load_row, EmbeddingTable};

use crate::error::to_py;

/// Runs heavy core work with the GIL released and maps its error: the one path every
/// long call from Python takes.
pub(crate) fn run<T: Send>(py: Python<'_>, f: impl FnOnce() -> recofast_core::Result<T> + Send) -> PyResult<T> {
    py.detach(f).map_err(to_py)
}

/// Ids packed in one buffer: copied out of Python objects under the GIL (one allocation),
/// then used without it.
pub(crate) struct Ids {
    buf: String,
    ends: Vec<usize>,
}

impl Ids {
    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }
    pub(crate) fn as_strs(&self) -> Vec<&str> {
        (0..self.ends.len()).map(|i| self.get(i)).collect()
    }
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }
}

/// Appends the decimal form of `v` (what `str(v)` gives in Python), without the
/// formatting machinery: ids of numpy arrays go through here by the million.
fn push_int(buf: &mut String, v: i64) {
    let mut tmp = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut p = tmp.len();
    loop {
        p -= 1;
        tmp[p] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        buf.push('-');
    }
    // The digits are ASCII.
    buf.push_str(std::str::from_utf8(&tmp[p..]).unwrap_or_default());
}

/// Reads ids from a list/tuple/sequence of `str` or `int`, or a 1-d numpy integer array.
pub(crate) fn extract_ids(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Ids> {
    let mut ids = Ids { buf: String::new(), ends: Vec::new() };
    if let Ok(a) = obj.cast::<PyArray1<i64>>() {
        let a = a.readonly();
        let s = a.as_slice()?;
        ids.ends.reserve(s.len());
        for &v in s {
            push_int(&mut ids.buf, v);
            ids.ends.push(ids.buf.len());
        }
        return Ok(ids);
    }
    if obj.hasattr("dtype")? && obj.hasattr("ndim")? {
        let dtype = obj.getattr("dtype")?;
        let kind: String = dtype.getattr("kind")?.extract()?;
        if kind == "i" || kind == "u" {
            let arr = obj.call_method1("astype", ("int64",))?;
            return extract_ids(&arr, what);
        }
        if kind != "U" && kind != "O" {
            return Err(PyValueError::new_err(format!("{what} must hold strings or integers, got an array of dtype {}", dtype.str()?)));
        }
    }
    if obj.is_instance_of::<PyString>() {
        return Err(PyValueError::new_err(format!("{what} must be a sequence of ids, not a single string")));
    }
    let push = |ids: &mut Ids, item: &Bound<'_, PyAny>| -> PyResult<()> {
        if let Ok(s) = item.cast::<PyString>() {
            ids.buf.push_str(s.to_str()?);
        } else if let Ok(v) = item.extract::<i64>() {
            if item.is_instance_of::<pyo3::types::PyBool>() {
                return Err(PyValueError::new_err(format!("{what} must hold strings or integers, got a bool")));
            }
            use std::fmt::Write;
            let _ = write!(ids.buf, "{v}");
        } else {
            return Err(PyValueError::new_err(format!(
                "{what} must hold strings or integers, got {}",
                item.get_type().name()?
            )));
        }
        ids.ends.push(ids.buf.len());
        Ok(())
    };
    if let Ok(l) = obj.cast::<PyList>() {
        ids.ends.reserve(l.len());
        for item in l.iter() {
            push(&mut ids, &item)?;
        }
    } else if let Ok(t) = obj.cast::<PyTuple>() {
        for item in t.iter() {
            push(&mut ids, &item)?;
        }
    } else {
        let it = obj.try_iter().map_err(|_| PyTypeError::new_err(format!("{what} must be a sequence of ids")))?;
        for item in it {
            push(&mut ids, &item?)?;
        }
    }
    Ok(ids)
}

/// One id (a `str`, or an `int` taken as its decimal form).
pub(crate) fn one_id(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(s.to_str()?.to_string());
    }
    if !obj.is_instance_of::<pyo3::types::PyBool>() {
        if let Ok(v) = obj.extract::<i64>() {
            return Ok(v.to_string());
        }
    }
    Err(PyValueError::new_err(format!("{what} must be a string or an integer, got {}", obj.get_type().name()?)))
}

/// Event codes from None (all "view"), one name for all, names, or a uint8 code array.
pub(crate) fn extract_events(obj: Option<&Bound<'_, PyAny>>, n: usize) -> PyResult<Vec<u8>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok(Vec::new()) };
    if let Ok(s) = obj.cast::<PyString>() {
        let k = event_index(s.to_str()?).map_err(|e| PyValueError::new_err(e.to_string()))?;
        return Ok(vec![k; n]);
    }
    if let Ok(a) = obj.cast::<PyArray1<u8>>() {
        return Ok(a.readonly().as_slice()?.to_vec());
    }
    let mut out = Vec::with_capacity(n);
    for item in obj.try_iter().map_err(|_| PyTypeError::new_err("events must be a string or a sequence of event names"))? {
        let item = item?;
        let s = item.cast::<PyString>().map_err(|_| PyValueError::new_err("events must hold event names (str)"))?;
        out.push(event_index(s.to_str()?).map_err(|e| PyValueError::new_err(e.to_string()))?);
    }
    Ok(out)
}

/// Scoring weights of one request: a dict of name to number, or (name, number) pairs, set
/// over `base` (the model's weights); `None` when absent. An unknown name, a value that is no
/// number or a number out of range is a `ValueError` naming the weight.
pub(crate) fn extract_weights(obj: Option<&Bound<'_, PyAny>>, base: Weights) -> PyResult<Option<Weights>> {
    let Some(obj) = obj.filter(|o| !o.is_none()) else { return Ok(None) };
    let shape = || PyValueError::new_err("weights must be a mapping of weight name to number (e.g. {\"w_ctx\": 0.0}) or (name, number) pairs");
    let pairs: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = if let Ok(d) = obj.cast::<PyDict>() {
        d.iter().collect()
    } else {
        if obj.is_instance_of::<PyString>() {
            return Err(shape());
        }
        let mut v = Vec::new();
        for item in obj.try_iter().map_err(|_| shape())? {
            v.push(item?.extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>().map_err(|_| shape())?);
        }
        v
    };
    let mut w = base;
    for (name, value) in pairs {
        let name = name.cast::<PyString>().map_err(|_| shape())?.to_str()?.to_string();
        Weights::check_name(&name).map_err(to_py)?;
        let x = match value.extract::<f64>() {
            Ok(x) if !value.is_instance_of::<PyBool>() => x,
            _ => return Err(PyValueError::new_err(format!("weight {name}: {} is not a number", value.repr()?))),
        };
        w.set(&name, x as f32).map_err(to_py)?;
    }
    Ok(Some(w))
}

/// An optional float64 array as a vector (empty when absent).
pub(crate) fn f64s(obj: Option<PyReadonlyArray1<'_, f64>>) -> PyResult<Vec<f64>> {
    Ok(match obj {
        Some(a) => a.as_slice()?.to_vec(),
        None => Vec::new(),
    })
}

/// (live ids, their factors as a float32 array of shape (n, dim)), in row order.
pub(crate) fn live_factors<'py>(py: Python<'py>, t: &EmbeddingTable, dim: usize) -> PyResult<(Vec<String>, Bound<'py, PyArray2<f32>>)> {
    let live = t.ids().live();
    let mut flat = vec![0f32; live.len() * dim];
    for (chunk, (r, _)) in flat.chunks_exact_mut(dim.max(1)).zip(&live) {
        load_row(t.row(*r), chunk);
    }
    let arr = PyArray1::from_vec(py, flat).reshape([live.len(), dim])?;
    Ok((live.into_iter().map(|x| x.1).collect(), arr))
}
