//! Bindings of the scoring kernels (`recofast.kernels` wraps them and checks arguments):
//! fused top-K over a float32 item matrix, batched queries, the int8 quantised table, and a
//! plain read of a matrix (the bandwidth reference). Every heavy call releases the GIL.
//!
//! The item matrix is read in place (no copy) while the GIL is released; like numpy's own
//! GIL-free loops, a Python thread writing to it at the same time gets unspecified scores.

use std::sync::Arc;

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use recofast_core::kernels::{self, Filter, QuantizedItems, SimdLevel};

use crate::error::to_py;

fn level_of(level: Option<&str>) -> PyResult<SimdLevel> {
    let Some(name) = level else { return Ok(SimdLevel::detect()) };
    let l = SimdLevel::parse(name).ok_or_else(|| PyValueError::new_err(format!("unknown SIMD level {name:?}; use one of scalar, avx2, avx512, neon, auto")))?;
    if !l.supported() {
        return Err(PyValueError::new_err(format!("this CPU cannot run the {name} kernels")));
    }
    Ok(l)
}

fn threads_of(threads: Option<i64>) -> PyResult<Option<usize>> {
    match threads {
        None => Ok(None),
        Some(t) if (1..=1024).contains(&t) => Ok(Some(t as usize)),
        Some(t) => Err(PyValueError::new_err(format!("threads must be between 1 and 1024, got {t}"))),
    }
}

fn contiguous<'a, T: numpy::Element>(a: &'a PyReadonlyArray2<'_, T>, what: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| PyValueError::new_err(format!("{what} must be a C-contiguous array")))
}

/// Id lists (one shared, or one per query) as sorted, deduplicated rows `< n`.
fn id_lists(lists: Option<Vec<PyReadonlyArray1<'_, i64>>>, n: usize, m: usize, what: &str) -> PyResult<Option<Vec<Vec<u32>>>> {
    let Some(lists) = lists else { return Ok(None) };
    if lists.len() != 1 && lists.len() != m {
        return Err(PyValueError::new_err(format!("{what} must be one id list or one per query ({m}), got {}", lists.len())));
    }
    let mut out = Vec::with_capacity(lists.len());
    for l in &lists {
        let a = l.as_array();
        let mut v = Vec::with_capacity(a.len());
        for &x in a.iter() {
            if x < 0 || x as u64 >= n as u64 {
                return Err(PyValueError::new_err(format!("{what} holds id {x}, outside 0..{n}")));
            }
            v.push(x as u32);
        }
        v.sort_unstable();
        v.dedup();
        out.push(v);
    }
    Ok(Some(out))
}

/// Filters for `m` queries from the optional shared / per-query lists.
fn filters<'a>(ex: &'a Option<Vec<Vec<u32>>>, al: &'a Option<Vec<Vec<u32>>>, m: usize) -> Vec<Filter<'a>> {
    let len = |o: &Option<Vec<Vec<u32>>>| o.as_ref().map_or(1, |v| v.len());
    let count = if len(ex) == 1 && len(al) == 1 { 1 } else { m };
    let pick = |o: &'a Option<Vec<Vec<u32>>>, i: usize| o.as_ref().map(|v| if v.len() == 1 { v[0].as_slice() } else { v[i].as_slice() });
    (0..count).map(|i| Filter { exclude: pick(ex, i).unwrap_or(&[]), allow: pick(al, i) }).collect()
}

/// Results as (ids int64 (m, k), scores float32 (m, k)); short lists padded with -1 / -inf.
type Arrays<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

fn to_arrays(py: Python<'_>, res: Vec<Vec<(u32, f32)>>, k: usize) -> PyResult<Arrays<'_>> {
    let m = res.len();
    let mut ids = vec![-1i64; m * k];
    let mut scores = vec![f32::NEG_INFINITY; m * k];
    for (q, r) in res.iter().enumerate() {
        for (j, &(id, s)) in r.iter().take(k).enumerate() {
            ids[q * k + j] = id as i64;
            scores[q * k + j] = s;
        }
    }
    Ok((PyArray1::from_vec(py, ids).reshape([m, k])?, PyArray1::from_vec(py, scores).reshape([m, k])?))
}

fn check_k(k: i64, n: usize) -> PyResult<usize> {
    if k <= 0 || k as u64 > n as u64 {
        return Err(PyValueError::new_err(format!("k must be between 1 and the number of items ({n}), got {k}")));
    }
    Ok(k as usize)
}

/// Exact top-k of `items` (n, d) for every row of `queries` (m, d).
#[pyfunction]
#[pyo3(signature = (items, queries, k, exclude = None, allow = None, threads = None, level = None))]
#[allow(clippy::too_many_arguments)]
fn topk_exact<'py>(
    py: Python<'py>,
    items: PyReadonlyArray2<'py, f32>,
    queries: PyReadonlyArray2<'py, f32>,
    k: i64,
    exclude: Option<Vec<PyReadonlyArray1<'py, i64>>>,
    allow: Option<Vec<PyReadonlyArray1<'py, i64>>>,
    threads: Option<i64>,
    level: Option<&str>,
) -> PyResult<Arrays<'py>> {
    let level = level_of(level)?;
    let threads = threads_of(threads)?;
    let (n, dim) = (items.shape()[0], items.shape()[1]);
    let m = queries.shape()[0];
    if queries.shape()[1] != dim {
        return Err(PyValueError::new_err(format!("queries have dimension {}, items {dim}", queries.shape()[1])));
    }
    let k = check_k(k, n)?;
    let (it, qs) = (contiguous(&items, "items")?, contiguous(&queries, "queries")?);
    let ex = id_lists(exclude, n, m, "exclude")?;
    let al = id_lists(allow, n, m, "allow")?;
    let fs = filters(&ex, &al, m);
    let res = py
        .detach(|| {
            kernels::with_threads(threads, |t| {
                if m == 1 {
                    kernels::topk_scan(level, it, dim, qs, k, &fs[0], t).map(|r| vec![r])
                } else {
                    kernels::topk_batch(level, it, dim, qs, k, &fs, t)
                }
            })
            .and_then(|r| r)
        })
        .map_err(to_py)?;
    to_arrays(py, res, k)
}

/// A plain sum of every value of a float32 matrix (the memory-read reference).
#[pyfunction]
fn read_sum(py: Python<'_>, items: PyReadonlyArray2<'_, f32>) -> PyResult<f64> {
    let it = contiguous(&items, "items")?;
    Ok(py.detach(|| kernels::read_sum(it)))
}

/// An int8 copy of a float32 item matrix (per-row scale), kept with a reference to the
/// matrix for the exact rescoring.
#[pyclass(name = "QuantizedItems", module = "recofast._core", frozen)]
struct PyQuantized {
    q: Arc<QuantizedItems>,
    items: Py<PyArray2<f32>>,
}

#[pymethods]
impl PyQuantized {
    #[new]
    fn new(py: Python<'_>, items: Bound<'_, PyArray2<f32>>) -> PyResult<Self> {
        let ro = items.readonly();
        let dim = ro.shape()[1];
        let it = contiguous(&ro, "items")?;
        let q = py.detach(|| QuantizedItems::new(it, dim)).map_err(to_py)?;
        drop(ro);
        Ok(PyQuantized { q: Arc::new(q), items: items.unbind() })
    }

    /// Top-k per query: int8 scan for `candidates` rows, exact f32 rescoring.
    #[pyo3(signature = (queries, k, candidates, exclude = None, allow = None, threads = None, level = None))]
    #[allow(clippy::too_many_arguments)]
    fn topk<'py>(
        &self,
        py: Python<'py>,
        queries: PyReadonlyArray2<'py, f32>,
        k: i64,
        candidates: i64,
        exclude: Option<Vec<PyReadonlyArray1<'py, i64>>>,
        allow: Option<Vec<PyReadonlyArray1<'py, i64>>>,
        threads: Option<i64>,
        level: Option<&str>,
    ) -> PyResult<Arrays<'py>> {
        let level = level_of(level)?;
        let threads = threads_of(threads)?;
        let (n, dim) = (self.q.len(), self.q.dim());
        let m = queries.shape()[0];
        if queries.shape()[1] != dim {
            return Err(PyValueError::new_err(format!("queries have dimension {}, items {dim}", queries.shape()[1])));
        }
        let k = check_k(k, n)?;
        if candidates <= 0 {
            return Err(PyValueError::new_err(format!("candidates must be positive, got {candidates}")));
        }
        let c = candidates as usize;
        let items = self.items.bind(py).readonly();
        let it = contiguous(&items, "items")?;
        let qs = contiguous(&queries, "queries")?;
        let ex = id_lists(exclude, n, m, "exclude")?;
        let al = id_lists(allow, n, m, "allow")?;
        let fs = filters(&ex, &al, m);
        let qt = &self.q;
        let res = py.detach(|| kernels::with_threads(threads, |t| qt.topk_many(level, it, qs, k, c, &fs, t)).and_then(|r| r)).map_err(to_py)?;
        to_arrays(py, res, k)
    }

    /// Dequantised approximate scores of every row for one query (d,).
    #[pyo3(signature = (query, level = None))]
    fn approx_scores<'py>(&self, py: Python<'py>, query: PyReadonlyArray1<'py, f32>, level: Option<&str>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let level = level_of(level)?;
        let q = query.as_slice().map_err(|_| PyValueError::new_err("query must be a C-contiguous array"))?;
        let mut out = vec![0f32; self.q.len()];
        let qt = &self.q;
        py.detach(|| qt.approx_scores(level, q, &mut out)).map_err(to_py)?;
        Ok(PyArray1::from_vec(py, out))
    }

    /// The float32 matrix this table was built from.
    #[getter]
    fn items<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f32>> {
        self.items.bind(py).clone()
    }
    #[getter]
    fn nbytes(&self) -> usize {
        self.q.nbytes()
    }
}

/// Registers the kernel functions and classes on `recofast._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(topk_exact, m)?)?;
    m.add_function(wrap_pyfunction!(read_sum, m)?)?;
    m.add_class::<PyQuantized>()?;
    Ok(())
}
