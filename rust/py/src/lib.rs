//! `recofast._core`: the Python bindings of the Rust core. Conversions, GIL release and
//! error mapping only; every algorithm lives in `recofast-core`.

mod drift;
mod kernels;

use std::path::PathBuf;
use std::sync::Arc;

use numpy::{PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use recofast_core::config::{event_index, Config, EVENT_TYPES};
use recofast_core::kernels::SimdLevel;
use recofast_core::model::{Model, Query};
use recofast_core::{snapshot, Error};

/// Maps a core error to its Python exception: `ValueError`, `recofast.errors.SnapshotError`
/// or an `OSError` subclass (`FileNotFoundError`, `PermissionError`, ...).
fn to_py(py: Python<'_>, e: Error) -> PyErr {
    match e {
        Error::InvalidArgument(m) => PyValueError::new_err(m),
        Error::Snapshot(m) => match py.import("recofast.errors").and_then(|m| m.getattr("SnapshotError")) {
            Ok(cls) => PyErr::from_type(cls.cast_into().expect("SnapshotError is a type"), m),
            Err(_) => PyOSError::new_err(m),
        },
        Error::Io(e) => PyErr::from(e),
    }
}

/// Runs heavy core work with the GIL released and maps its error: the one path every
/// long call from Python takes.
fn run<T: Send>(py: Python<'_>, f: impl FnOnce() -> recofast_core::Result<T> + Send) -> PyResult<T> {
    py.detach(f).map_err(|e| to_py(py, e))
}

/// Ids packed in one buffer: copied out of Python objects under the GIL (one allocation),
/// then used without it.
struct Ids {
    buf: String,
    ends: Vec<usize>,
}

impl Ids {
    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }
    fn as_strs(&self) -> Vec<&str> {
        (0..self.ends.len()).map(|i| self.get(i)).collect()
    }
    fn len(&self) -> usize {
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
fn extract_ids(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Ids> {
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
fn one_id(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
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
fn extract_events(obj: Option<&Bound<'_, PyAny>>, n: usize) -> PyResult<Vec<u8>> {
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

fn f64s(obj: Option<PyReadonlyArray1<'_, f64>>) -> PyResult<Vec<f64>> {
    Ok(match obj {
        Some(a) => a.as_slice()?.to_vec(),
        None => Vec::new(),
    })
}

/// The online recommender of the core. Python code uses `recofast.Recommender`, which wraps it.
#[pyclass(name = "Model", module = "recofast._core", frozen)]
struct PyModel {
    m: Arc<Model>,
}

fn check_k(k: i64) -> PyResult<usize> {
    if k <= 0 {
        return Err(PyValueError::new_err(format!("k must be a positive integer, got {k}")));
    }
    Ok(k as usize)
}

impl PyModel {
    fn named(&self, recs: Vec<(u32, f32)>) -> Vec<(String, f32)> {
        let rows: Vec<u32> = recs.iter().map(|r| r.0).collect();
        self.m.items().ids().ids_of(&rows).into_iter().zip(recs).map(|(id, r)| (id, r.1)).collect()
    }
}

#[pymethods]
impl PyModel {
    /// `Model(options)`: options as (name, value-as-text) pairs.
    #[new]
    #[pyo3(signature = (options = Vec::new()))]
    fn new(py: Python<'_>, options: Vec<(String, String)>) -> PyResult<Self> {
        let mut cfg = Config::default();
        for (k, v) in &options {
            cfg.set(k, v).map_err(|e| to_py(py, e))?;
        }
        let m = Model::new(cfg).map_err(|e| to_py(py, e))?;
        Ok(PyModel { m: Arc::new(m) })
    }

    /// Learns from many events, in order, with the GIL released. `context`: (field, column)
    /// pairs, each column one text value (or None) per event.
    #[pyo3(signature = (users, items, events = None, ts = None, weights = None, context = None))]
    #[allow(clippy::too_many_arguments)]
    fn learn_many(
        &self,
        py: Python<'_>,
        users: &Bound<'_, PyAny>,
        items: &Bound<'_, PyAny>,
        events: Option<&Bound<'_, PyAny>>,
        ts: Option<PyReadonlyArray1<'_, f64>>,
        weights: Option<PyReadonlyArray1<'_, f32>>,
        context: Option<Vec<(String, Vec<Option<String>>)>>,
    ) -> PyResult<usize> {
        let users = extract_ids(users, "users")?;
        let items = extract_ids(items, "items")?;
        let events = extract_events(events, users.len())?;
        let ts = f64s(ts)?;
        let weights = match weights {
            Some(w) => w.as_slice()?.to_vec(),
            None => Vec::new(),
        };
        let m = self.m.clone();
        let n = users.len();
        let context = context.unwrap_or_default();
        if let Some((f, col)) = context.iter().find(|(_, c)| c.len() != n) {
            return Err(PyValueError::new_err(format!("context {f:?} has {} values, expected {n} (one per event)", col.len())));
        }
        run(py, move || m.learn_many_cols(&users.as_strs(), &items.as_strs(), &events, &ts, &weights, &context))?;
        Ok(n)
    }

    /// Search events: each query becomes the user's session intent.
    #[pyo3(signature = (users, queries, ts = None))]
    fn search_many(&self, py: Python<'_>, users: &Bound<'_, PyAny>, queries: Vec<String>, ts: Option<PyReadonlyArray1<'_, f64>>) -> PyResult<usize> {
        let users = extract_ids(users, "users")?;
        let ts = f64s(ts)?;
        let m = self.m.clone();
        let n = users.len();
        run(py, move || m.search_many(&users.as_strs(), &queries, &ts))?;
        Ok(n)
    }

    /// The embedding keys (`field=value`) of a context given as (field, value) pairs;
    /// unknown fields and values a field cannot take give none.
    #[staticmethod]
    fn context_keys(pairs: Vec<(String, String)>) -> Vec<String> {
        recofast_core::context::keys_of_all(&pairs)
    }

    /// Each learned context key with its `top` items by affinity (z-score), for export.
    #[pyo3(signature = (top = 100))]
    fn context_affinities(&self, py: Python<'_>, top: usize) -> Vec<(String, Vec<(String, f32)>)> {
        let m = self.m.clone();
        let aff = py.detach(move || m.context_affinities(top));
        aff.into_iter().map(|(k, l)| (k, self.named(l))).collect()
    }

    /// Items introduced by their metadata that are still new (exploration candidates).
    fn fresh_items(&self, py: Python<'_>) -> Vec<String> {
        let m = self.m.clone();
        let rows = py.detach(move || m.fresh_items());
        self.m.items().ids().ids_of(&rows)
    }

    /// A user's session intent (the last search), or None.
    fn user_intent(&self, user: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
        let u = one_id(user, "user")?;
        Ok(self.m.user_state(&u).and_then(|st| st.intent.map(|i| i.query)))
    }

    /// Learns from one event; `context` as (field, value) pairs.
    #[pyo3(signature = (user, item, event = "view", ts = None, weight = None, context = None))]
    #[allow(clippy::too_many_arguments)]
    fn learn_one(
        &self,
        py: Python<'_>,
        user: &Bound<'_, PyAny>,
        item: &Bound<'_, PyAny>,
        event: &str,
        ts: Option<f64>,
        weight: Option<f32>,
        context: Option<Vec<(String, String)>>,
    ) -> PyResult<()> {
        let (u, i) = (one_id(user, "user")?, one_id(item, "item")?);
        if let Some(w) = weight {
            let max = recofast_core::model::MAX_WEIGHT;
            if !(w.is_finite() && w.abs() <= max) {
                return Err(PyValueError::new_err(format!("weight must be a finite number between -{max} and {max}, got {w}")));
            }
        }
        match context.filter(|c| !c.is_empty()) {
            None => self.m.learn_one(&u, &i, event, ts, weight).map_err(|e| to_py(py, e)),
            Some(ctx) => {
                let kind = event_index(event).map_err(|e| to_py(py, e))?;
                let (t, w): (Vec<f64>, Vec<f32>) = (ts.into_iter().collect(), weight.into_iter().collect());
                self.m.learn_many_ctx(&[u], &[i], &[kind], &t, &w, &[ctx]).map_err(|e| to_py(py, e))
            }
        }
    }

    /// Top-k (item, score) for a user, best first.
    #[pyo3(signature = (user, k = 10, exclude = None, allow = None, exclude_seen = true, context = None, explore = 0, ts = None))]
    #[allow(clippy::too_many_arguments)]
    fn recommend(
        &self,
        py: Python<'_>,
        user: &Bound<'_, PyAny>,
        k: i64,
        exclude: Option<&Bound<'_, PyAny>>,
        allow: Option<&Bound<'_, PyAny>>,
        exclude_seen: bool,
        context: Option<Vec<(String, String)>>,
        explore: usize,
        ts: Option<f64>,
    ) -> PyResult<Vec<(String, f32)>> {
        let k = check_k(k)?;
        let u = one_id(user, "user")?;
        let exclude: Vec<u32> = match exclude.filter(|e| !e.is_none()) {
            Some(e) => {
                let ids = extract_ids(e, "exclude")?;
                self.m.items().ids().get_many(&ids.as_strs()).into_iter().filter(|&r| r != u32::MAX).collect()
            }
            None => Vec::new(),
        };
        let allow: Option<Vec<u32>> = match allow.filter(|a| !a.is_none()) {
            Some(a) => {
                let ids = extract_ids(a, "allow")?;
                Some(self.m.items().ids().get_many(&ids.as_strs()).into_iter().filter(|&r| r != u32::MAX).collect())
            }
            None => None,
        };
        let m = self.m.clone();
        let (ctx_pairs, intent) = split_intent(context.unwrap_or_default());
        let recs = py.detach(move || {
            let row = m.users().ids().get(&u);
            let ctx = m.context_rows(&recofast_core::context::keys_of_all(&ctx_pairs), false);
            m.recommend_row(row, &Query { k, exclude: &exclude, allow: allow.as_deref(), exclude_seen, ctx: &ctx, intent: intent.as_deref(), explore, ts })
        });
        Ok(self.named(recs))
    }

    /// Top-k lists for many users, computed in parallel with the GIL released.
    #[pyo3(signature = (users, k = 10, exclude_seen = true, context = None, explore = 0))]
    fn recommend_many(
        &self,
        py: Python<'_>,
        users: &Bound<'_, PyAny>,
        k: i64,
        exclude_seen: bool,
        context: Option<Vec<(String, String)>>,
        explore: usize,
    ) -> PyResult<Vec<Vec<(String, f32)>>> {
        let k = check_k(k)?;
        let ids = extract_ids(users, "users")?;
        let m = self.m.clone();
        let (ctx_pairs, intent) = split_intent(context.unwrap_or_default());
        let lists = py.detach(move || {
            let rows: Vec<Option<u32>> = m.users().ids().get_many(&ids.as_strs()).into_iter().map(|r| (r != u32::MAX).then_some(r)).collect();
            let ctx = m.context_rows(&recofast_core::context::keys_of_all(&ctx_pairs), false);
            m.recommend_rows(&rows, &Query { k, exclude_seen, ctx: &ctx, intent: intent.as_deref(), explore, ..Default::default() })
        });
        Ok(lists.into_iter().map(|l| self.named(l)).collect())
    }

    /// Items most similar to an item; an unknown item gives an empty list.
    #[pyo3(signature = (item, k = 10))]
    fn similar_items(&self, py: Python<'_>, item: &Bound<'_, PyAny>, k: i64) -> PyResult<Vec<(String, f32)>> {
        let k = check_k(k)?;
        let i = one_id(item, "item")?;
        let Some(row) = self.m.items().ids().get(&i) else { return Ok(Vec::new()) };
        let m = self.m.clone();
        let recs = py.detach(move || m.similar_row(row, k));
        Ok(self.named(recs))
    }

    /// (ids, float32 array of shape (n, dim)) of the items.
    fn item_factors<'py>(&self, py: Python<'py>) -> PyResult<(Vec<String>, Bound<'py, PyArray2<f32>>)> {
        live_factors(py, self.m.items(), self.m.config().dim)
    }

    /// (ids, float32 array of shape (n, dim)) of the users.
    fn user_factors<'py>(&self, py: Python<'py>) -> PyResult<(Vec<String>, Bound<'py, PyArray2<f32>>)> {
        live_factors(py, self.m.users(), self.m.config().dim)
    }

    /// Idle expiry, the user cap, item retirement and context pruning at event time `now`
    /// (default: the newest event time seen), with the GIL released: (evicted users,
    /// retired items, pruned context keys).
    #[pyo3(signature = (now = None))]
    fn expire(&self, py: Python<'_>, now: Option<f64>) -> (Vec<String>, Vec<String>, Vec<String>) {
        let m = self.m.clone();
        let e = py.detach(move || m.expire(now));
        (e.users, e.items, e.contexts)
    }

    /// Users evicted by the cap during learning since the last drain.
    fn drain_evicted(&self, py: Python<'_>) -> Vec<String> {
        let m = self.m.clone();
        py.detach(move || m.drain_evicted())
    }

    /// Removes users entirely; returns how many were known.
    fn forget(&self, py: Python<'_>, users: &Bound<'_, PyAny>) -> PyResult<usize> {
        let ids = extract_ids(users, "users")?;
        let m = self.m.clone();
        Ok(py.detach(move || m.forget(&ids.as_strs())))
    }

    /// Marks items as in the catalogue (never retired), or not.
    #[pyo3(signature = (items, in_catalogue = true))]
    fn set_catalogue(&self, py: Python<'_>, items: &Bound<'_, PyAny>, in_catalogue: bool) -> PyResult<()> {
        let ids = extract_ids(items, "items")?;
        let m = self.m.clone();
        py.detach(move || m.set_catalogue(&ids.as_strs(), in_catalogue));
        Ok(())
    }

    /// Row counts of the user, item and context tables (live, allocated, free).
    fn memory_info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.m.row_stats();
        let d = PyDict::new(py);
        d.set_item("users", s.users)?;
        d.set_item("user_rows", s.user_rows)?;
        d.set_item("user_free", s.user_free)?;
        d.set_item("items", s.items)?;
        d.set_item("item_rows", s.item_rows)?;
        d.set_item("item_free", s.item_free)?;
        d.set_item("contexts", s.contexts)?;
        d.set_item("context_rows", s.context_rows)?;
        d.set_item("context_free", s.context_free)?;
        d.set_item("context_candidates", s.context_candidates)?;
        d.set_item("evicted_waiting", s.evicted_waiting)?;
        d.set_item("evicted_dropped", s.evicted_dropped)?;
        d.set_item("clock", self.m.clock())?;
        Ok(d)
    }

    /// A user's recent items (most recent first) and number of positive events, or None.
    fn user_history(&self, user: &Bound<'_, PyAny>) -> PyResult<Option<(Vec<String>, u32)>> {
        let u = one_id(user, "user")?;
        Ok(self.m.user_state(&u).map(|st| {
            let rows: Vec<u32> = st.recent().iter().map(|r| r.0).collect();
            (self.m.items().ids().ids_of(&rows), st.events)
        }))
    }

    /// Whether the user has a positive event on the item.
    fn has_seen(&self, user: &Bound<'_, PyAny>, item: &Bound<'_, PyAny>) -> PyResult<bool> {
        let (u, i) = (one_id(user, "user")?, one_id(item, "item")?);
        let Some(row) = self.m.items().ids().get(&i) else { return Ok(false) };
        Ok(self.m.user_state(&u).is_some_and(|st| st.has_seen(row)))
    }

    /// The item ids for which `allow`-style lists can be built.
    fn item_ids(&self) -> Vec<String> {
        self.m.items().ids().all()
    }

    /// Adapts to a detected drift for the next `events` events (see the core's docs).
    fn adapt(&self, py: Python<'_>, lr_boost: f32, recency_decay: f32, events: u64) -> PyResult<()> {
        self.m.adapt(lr_boost, recency_decay, events).map_err(|e| to_py(py, e))
    }

    /// (adaptation in force, adaptations started).
    fn adaptation(&self) -> (bool, u64) {
        self.m.adaptation()
    }

    /// Sets the text of items (created when new).
    fn set_item_text(&self, py: Python<'_>, items: &Bound<'_, PyAny>, texts: Vec<String>) -> PyResult<()> {
        let ids = extract_ids(items, "items")?;
        let m = self.m.clone();
        run(py, move || m.set_item_text(&ids.as_strs(), &texts))
    }

    /// Rebuilds the scoring snapshot of the item matrix now.
    fn refresh(&self, py: Python<'_>) {
        let m = self.m.clone();
        py.detach(move || m.refresh());
    }

    /// Writes the model to `path` atomically (temporary file, fsync, rename).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let m = self.m.clone();
        run(py, move || snapshot::save(&m, &path))
    }

    /// Reads a model written by `save`. Raises `recofast.errors.SnapshotError` on a corrupt file.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<PyModel> {
        let m = run(py, move || snapshot::load(&path))?;
        Ok(PyModel { m: Arc::new(m) })
    }

    /// The snapshot as bytes (what `save` writes).
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, pyo3::types::PyBytes> {
        let m = self.m.clone();
        let b = py.detach(move || snapshot::to_bytes(&m));
        pyo3::types::PyBytes::new(py, &b)
    }

    /// A model from `to_bytes` output.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<PyModel> {
        let data = data.to_vec();
        let m = run(py, move || snapshot::from_bytes(&data))?;
        Ok(PyModel { m: Arc::new(m) })
    }

    /// The options as (name, value) text pairs.
    fn options(&self) -> Vec<(String, String)> {
        self.m.config().to_pairs()
    }

    #[getter]
    fn n_users(&self) -> usize {
        self.m.n_users()
    }
    #[getter]
    fn n_items(&self) -> usize {
        self.m.n_items()
    }
    #[getter]
    fn events(&self) -> u64 {
        self.m.events()
    }
    #[getter]
    fn simd_level(&self) -> &'static str {
        self.m.simd_level().name()
    }
}

/// (live ids, their factors as a float32 array of shape (n, dim)), in row order.
fn live_factors<'py>(py: Python<'py>, t: &recofast_core::table::EmbeddingTable, dim: usize) -> PyResult<(Vec<String>, Bound<'py, PyArray2<f32>>)> {
    let live = t.ids().live();
    let mut flat = vec![0f32; live.len() * dim];
    for (chunk, (r, _)) in flat.chunks_exact_mut(dim.max(1)).zip(&live) {
        recofast_core::table::load_row(t.row(*r), chunk);
    }
    let arr = PyArray1::from_vec(py, flat).reshape([live.len(), dim])?;
    Ok((live.into_iter().map(|x| x.1).collect(), arr))
}

/// Splits a request's context into its (field, value) pairs and its intent text: the
/// intent is matched against item text and looked up as `intent=<word>` by the core.
fn split_intent(pairs: Vec<(String, String)>) -> (Vec<(String, String)>, Option<String>) {
    let mut intent = None;
    let rest = pairs
        .into_iter()
        .filter(|(f, v)| {
            if f == "intent" {
                intent = Some(v.clone()).filter(|v| !v.trim().is_empty());
                false
            } else {
                true
            }
        })
        .collect();
    (rest, intent)
}

/// Version, build profile and SIMD level of this build.
#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("version", recofast_core::VERSION)?;
    d.set_item("profile", if cfg!(debug_assertions) { "debug" } else { "release" })?;
    d.set_item("simd", SimdLevel::detect().name())?;
    d.set_item("simd_available", SimdLevel::available().iter().map(|l| l.name()).collect::<Vec<_>>())?;
    d.set_item("target", format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS))?;
    d.set_item("snapshot_format", snapshot::FORMAT_VERSION)?;
    Ok(d)
}

/// The default options as (name, value) text pairs.
#[pyfunction]
fn default_options() -> Vec<(String, String)> {
    Config::default().to_pairs()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModel>()?;
    drift::register(m)?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add_function(wrap_pyfunction!(default_options, m)?)?;
    m.add("EVENT_TYPES", EVENT_TYPES.to_vec())?;
    m.add("CONTEXT_FIELDS", recofast_core::context::CONTEXT_FIELDS.to_vec())?;
    m.add("__version__", recofast_core::VERSION)?;
    kernels::register(m)?;
    Ok(())
}
