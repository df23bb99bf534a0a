//! Bindings of the online recommender (`recofast_core::model`, its `config` and
//! `snapshot`): the `Model` class that `recofast.Recommender` wraps, the default options
//! and the build information. Conversions, GIL release and error mapping only.

use std::path::PathBuf;
use std::sync::Arc;

use numpy::{PyArray2, PyReadonlyArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use recofast_core::config::{event_index, Config, MAX_WEIGHT};
use recofast_core::kernels::SimdLevel;
use recofast_core::model::{Model, Query};
use recofast_core::{context, snapshot};

use crate::convert::{extract_events, extract_ids, extract_weights, f64s, live_factors, one_id, run};
use crate::error::to_py;

/// The online recommender of the core. Python code uses `recofast.Recommender`, which wraps it.
#[pyclass(name = "Model", module = "recofast._core", frozen)]
struct PyModel {
    m: Arc<Model>,
}

/// `k` as a count: a positive integer.
fn check_k(k: i64) -> PyResult<usize> {
    if k <= 0 {
        return Err(PyValueError::new_err(format!("k must be a positive integer, got {k}")));
    }
    Ok(k as usize)
}

impl PyModel {
    /// The rows of the known items among `ids` (an `exclude` or `allow` argument; None
    /// when not given).
    fn item_rows(&self, ids: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<Vec<u32>>> {
        match ids.filter(|e| !e.is_none()) {
            Some(e) => {
                let ids = extract_ids(e, what)?;
                Ok(Some(self.m.items().ids().get_many(&ids.as_strs()).into_iter().filter(|&r| r != u32::MAX).collect()))
            }
            None => Ok(None),
        }
    }

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
    fn new(options: Vec<(String, String)>) -> PyResult<Self> {
        let mut cfg = Config::default();
        for (k, v) in &options {
            cfg.set(k, v).map_err(to_py)?;
        }
        let m = Model::new(cfg).map_err(to_py)?;
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
        context::keys_of_all(&pairs)
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
        user: &Bound<'_, PyAny>,
        item: &Bound<'_, PyAny>,
        event: &str,
        ts: Option<f64>,
        weight: Option<f32>,
        context: Option<Vec<(String, String)>>,
    ) -> PyResult<()> {
        let (u, i) = (one_id(user, "user")?, one_id(item, "item")?);
        if let Some(w) = weight {
            let max = MAX_WEIGHT;
            if !(w.is_finite() && w.abs() <= max) {
                return Err(PyValueError::new_err(format!("weight must be a finite number between -{max} and {max}, got {w}")));
            }
        }
        match context.filter(|c| !c.is_empty()) {
            None => self.m.learn_one(&u, &i, event, ts, weight).map_err(to_py),
            Some(ctx) => {
                let kind = event_index(event).map_err(to_py)?;
                let (t, w): (Vec<f64>, Vec<f32>) = (ts.into_iter().collect(), weight.into_iter().collect());
                self.m.learn_many_ctx(&[u], &[i], &[kind], &t, &w, &[ctx]).map_err(to_py)
            }
        }
    }

    /// Top-k (item, score) for a user, best first. `weights`: scoring weights for this
    /// request instead of the model's (a dict, or (name, value) pairs).
    #[pyo3(signature = (user, k = 10, exclude = None, allow = None, exclude_seen = true, context = None, explore = 0, ts = None, weights = None))]
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
        weights: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<(String, f32)>> {
        let k = check_k(k)?;
        let u = one_id(user, "user")?;
        let weights = extract_weights(weights, self.m.config().weights())?;
        let exclude = self.item_rows(exclude, "exclude")?.unwrap_or_default();
        let allow = self.item_rows(allow, "allow")?;
        let m = self.m.clone();
        let (ctx_pairs, intent) = split_intent(context.unwrap_or_default());
        let recs = run(py, move || {
            let row = m.users().ids().get(&u);
            let ctx = m.context_rows(&context::keys_of_all(&ctx_pairs), false);
            m.recommend_row(row, &Query { k, exclude: &exclude, allow: allow.as_deref(), exclude_seen, ctx: &ctx, intent: intent.as_deref(), explore, ts, weights })
        })?;
        Ok(self.named(recs))
    }

    /// Top-k lists for many users, computed in parallel with the GIL released; `weights`
    /// as for `recommend`.
    #[pyo3(signature = (users, k = 10, exclude_seen = true, context = None, explore = 0, weights = None))]
    #[allow(clippy::too_many_arguments)]
    fn recommend_many(
        &self,
        py: Python<'_>,
        users: &Bound<'_, PyAny>,
        k: i64,
        exclude_seen: bool,
        context: Option<Vec<(String, String)>>,
        explore: usize,
        weights: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Vec<(String, f32)>>> {
        let k = check_k(k)?;
        let ids = extract_ids(users, "users")?;
        let weights = extract_weights(weights, self.m.config().weights())?;
        let m = self.m.clone();
        let (ctx_pairs, intent) = split_intent(context.unwrap_or_default());
        let lists = run(py, move || {
            let rows: Vec<Option<u32>> = m.users().ids().get_many(&ids.as_strs()).into_iter().map(|r| (r != u32::MAX).then_some(r)).collect();
            let ctx = m.context_rows(&context::keys_of_all(&ctx_pairs), false);
            m.recommend_rows(&rows, &Query { k, exclude_seen, ctx: &ctx, intent: intent.as_deref(), explore, weights, ..Default::default() })
        })?;
        Ok(lists.into_iter().map(|l| self.named(l)).collect())
    }

    /// The ranker's weights: {bucket: {feature: weight}} (each bucket's effective weights)
    /// and the pairs it learned from.
    fn ranker_weights(&self) -> (Vec<(String, Vec<(String, f32)>)>, u64) {
        let r = self.m.ranker();
        let out = recofast_core::ranker::BUCKET_NAMES
            .iter()
            .enumerate()
            .map(|(b, name)| {
                let w = r.weights_of(b as u8);
                (name.to_string(), recofast_core::ranker::FEATURES.iter().zip(w).map(|(f, v)| (f.to_string(), v)).collect())
            })
            .collect();
        (out, r.pairs())
    }

    /// The top-k list with each item's reason: (item, score, kind, the item it goes with or
    /// "", detail, contributions by feature).
    #[pyo3(signature = (user, k = 10, exclude = None, allow = None, exclude_seen = true, context = None, explore = 0, ts = None, weights = None))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn recommend_why(
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
        weights: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<(String, f32, &'static str, String, String, Vec<(&'static str, f32)>)>> {
        let k = check_k(k)?;
        let u = one_id(user, "user")?;
        let weights = extract_weights(weights, self.m.config().weights())?;
        let exclude = self.item_rows(exclude, "exclude")?.unwrap_or_default();
        let allow = self.item_rows(allow, "allow")?;
        let m = self.m.clone();
        let (ctx_pairs, intent) = split_intent(context.unwrap_or_default());
        let (recs, why) = run(py, move || {
            let row = m.users().ids().get(&u);
            let ctx = m.context_rows(&context::keys_of_all(&ctx_pairs), false);
            m.recommend_row_why(row, &Query { k, exclude: &exclude, allow: allow.as_deref(), exclude_seen, ctx: &ctx, intent: intent.as_deref(), explore, ts, weights })
        })?;
        let ids = self.m.items().ids();
        Ok(recs
            .into_iter()
            .zip(why)
            .filter_map(|((r, s), w)| {
                let item = ids.id(r)?;
                let with = if w.item == u32::MAX { String::new() } else { ids.id(w.item).unwrap_or_default() };
                let contrib = recofast_core::ranker::FEATURES.iter().copied().zip(w.contributions).collect();
                Some((item, s, w.kind, with, w.detail, contrib))
            })
            .collect())
    }

    /// `recommend_many` with each item's reason: lists of (item, score, kind, the item it
    /// goes with or "", detail).
    #[pyo3(signature = (users, k = 10, exclude_seen = true, context = None, explore = 0, weights = None))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn recommend_many_why(
        &self,
        py: Python<'_>,
        users: &Bound<'_, PyAny>,
        k: i64,
        exclude_seen: bool,
        context: Option<Vec<(String, String)>>,
        explore: usize,
        weights: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Vec<(String, f32, &'static str, String, String)>>> {
        let k = check_k(k)?;
        let ids = extract_ids(users, "users")?;
        let weights = extract_weights(weights, self.m.config().weights())?;
        let m = self.m.clone();
        let (ctx_pairs, intent) = split_intent(context.unwrap_or_default());
        let lists = run(py, move || {
            let rows: Vec<Option<u32>> = m.users().ids().get_many(&ids.as_strs()).into_iter().map(|r| (r != u32::MAX).then_some(r)).collect();
            let ctx = m.context_rows(&context::keys_of_all(&ctx_pairs), false);
            m.recommend_rows_why(&rows, &Query { k, exclude_seen, ctx: &ctx, intent: intent.as_deref(), explore, weights, ..Default::default() })
        })?;
        let idm = self.m.items().ids();
        Ok(lists
            .into_iter()
            .map(|(recs, why)| {
                recs.into_iter()
                    .zip(why)
                    .filter_map(|((r, s), w)| {
                        let with = if w.item == u32::MAX { String::new() } else { idm.id(w.item).unwrap_or_default() };
                        Some((idm.id(r)?, s, w.kind, with, w.detail))
                    })
                    .collect()
            })
            .collect())
    }

    /// Items most similar to an item; an unknown item gives an empty list. `weights` as for
    /// `recommend` (`w_mf` and `w_cooc` score here).
    #[pyo3(signature = (item, k = 10, weights = None))]
    fn similar_items(&self, py: Python<'_>, item: &Bound<'_, PyAny>, k: i64, weights: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<(String, f32)>> {
        let k = check_k(k)?;
        let i = one_id(item, "item")?;
        let weights = extract_weights(weights, self.m.config().weights())?;
        let Some(row) = self.m.items().ids().get(&i) else { return Ok(Vec::new()) };
        let m = self.m.clone();
        let recs = run(py, move || m.similar_row(row, k, weights))?;
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
    fn adapt(&self, lr_boost: f32, recency_decay: f32, events: u64) -> PyResult<()> {
        self.m.adapt(lr_boost, recency_decay, events).map_err(to_py)
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
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let m = self.m.clone();
        let b = py.detach(move || snapshot::to_bytes(&m));
        PyBytes::new(py, &b)
    }

    /// A model from `to_bytes` output.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<PyModel> {
        let data = data.to_vec();
        let m = run(py, move || snapshot::from_bytes(&data))?;
        Ok(PyModel { m: Arc::new(m) })
    }

    /// Starts gathering what learning does to items for `take_item_delta` (`cap`: the most
    /// items one delta gathers; beyond it updates are dropped and counted), or stops (0).
    fn share_items(&self, cap: usize) {
        self.m.share_items(cap);
    }

    /// How the next learning calls treat their events while replaying ones already shared:
    /// `share` false keeps them out of the deltas, `items` false learns them for their
    /// users only. `set_replay(True, True)` is normal learning.
    fn set_replay(&self, share: bool, items: bool) {
        self.m.set_replay(share, items);
    }

    /// What learning did to items since the last call, as compact binary deltas of at most
    /// `max_bytes` each for another engine's `apply_item_delta` (none: nothing learned, or
    /// sharing is off).
    #[pyo3(signature = (max_bytes = 1 << 20))]
    fn take_item_delta<'py>(&self, py: Python<'py>, max_bytes: usize) -> Vec<Bound<'py, PyBytes>> {
        let m = self.m.clone();
        py.detach(move || m.take_item_delta(max_bytes)).iter().map(|b| PyBytes::new(py, b)).collect()
    }

    /// Applies another engine's item delta: (items, pairs) applied. Raises `ValueError`,
    /// applying nothing, when any part of it is invalid.
    fn apply_item_delta(&self, py: Python<'_>, data: &[u8]) -> PyResult<(usize, usize)> {
        let data = data.to_vec();
        let m = self.m.clone();
        let d = run(py, move || m.apply_item_delta(&data))?;
        Ok((d.items, d.pairs))
    }

    /// Copies the users `users` that `other` knows (factors, recent and seen items) into
    /// this model, replacing any it knows; returns how many were copied.
    fn import_users(&self, py: Python<'_>, other: PyRef<'_, PyModel>, users: &Bound<'_, PyAny>) -> PyResult<usize> {
        let ids = extract_ids(users, "users")?;
        let (m, o) = (self.m.clone(), other.m.clone());
        run(py, move || m.import_users(&o, &ids.as_strs()))
    }

    /// Item updates dropped because a delta's outbox was full, since sharing started.
    fn item_delta_dropped(&self) -> u64 {
        self.m.item_delta_dropped()
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

/// Adds the `Model` class and its module-level functions to `recofast._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModel>()?;
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    m.add_function(wrap_pyfunction!(default_options, m)?)?;
    Ok(())
}
