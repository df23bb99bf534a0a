//! The embedding table: string ids mapped to dense `f32` rows, read and updated by many
//! threads at once without locks on the numbers and without undefined behaviour.
//!
//! How it stays sound:
//! - **Rows never move.** Values live in a [`Segmented`] store of `AtomicU32` (the bits of an
//!   `f32`), in segments that are allocated once and never reallocated, so a reference to a
//!   row stays valid while other threads add rows.
//! - **Numbers are atomics.** Learners `load` and `store` each component with `Relaxed`
//!   ordering (plain moves on x86-64 and AArch64). Two learners that update one row at the
//!   same moment may lose one of the two small steps (the "Hogwild!" trade of lock-free
//!   SGD), but every read sees some value a thread wrote: no torn floats, no data race, so
//!   no undefined behaviour.
//! - **Ids are published after their rows.** The id map is a read-mostly `RwLock`; a new id
//!   is inserted (under the write lock) only after its row was allocated and initialised, so
//!   every thread that can see an id can read its row (the lock's release/acquire orders
//!   the initialising stores before any later read).
//! - **Scoring reads a snapshot.** SIMD kernels need plain `&[f32]`, which must not alias
//!   memory another thread writes. The model therefore copies the item matrix out with
//!   atomic loads into an immutable buffer and publishes it through an atomic pointer swap
//!   (`arc_swap`): readers never wait, writers never wait, and a reader sees a consistent
//!   matrix a few milliseconds (or a configurable number of events) old.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use hashbrown::HashMap;
use parking_lot::RwLock;

use crate::segmented::Segmented;

/// `f32` values stored as atomic bits: a lock-free, race-free cell.
#[derive(Default)]
#[repr(transparent)]
pub struct AtomicF32(AtomicU32);

impl AtomicF32 {
    #[inline]
    pub fn load(&self) -> f32 {
        f32::from_bits(self.0.load(Relaxed))
    }
    #[inline]
    pub fn store(&self, v: f32) {
        self.0.store(v.to_bits(), Relaxed)
    }
    /// Adds `d` with a compare-and-swap loop, so concurrent adds are never lost (used for
    /// counters; the SGD steps use plain load/store).
    #[inline]
    pub fn fetch_add(&self, d: f32) {
        let mut cur = self.0.load(Relaxed);
        loop {
            let new = (f32::from_bits(cur) + d).to_bits();
            match self.0.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(c) => cur = c,
            }
        }
    }
}

/// Reads a row of atomics into `out`.
#[inline]
pub fn load_row(row: &[AtomicF32], out: &mut [f32]) {
    for (o, a) in out.iter_mut().zip(row) {
        *o = a.load();
    }
}

/// Writes `values` into a row of atomics.
#[inline]
pub fn store_row(row: &[AtomicF32], values: &[f32]) {
    for (a, v) in row.iter().zip(values) {
        a.store(*v);
    }
}

/// String ids to dense row numbers, and back.
#[derive(Default)]
pub struct IdMap {
    inner: RwLock<IdInner>,
}

#[derive(Default, Clone)]
struct IdInner {
    map: HashMap<Box<str>, u32>,
    ids: Vec<Box<str>>,
}

impl IdMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.inner.read().ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row of an id, if known.
    pub fn get(&self, id: &str) -> Option<u32> {
        self.inner.read().map.get(id).copied()
    }

    /// The rows of many ids at once, `u32::MAX` for the unknown ones (one read lock).
    pub fn get_many<S: AsRef<str>>(&self, ids: &[S]) -> Vec<u32> {
        let g = self.inner.read();
        ids.iter().map(|s| g.map.get(s.as_ref()).copied().unwrap_or(u32::MAX)).collect()
    }

    /// The rows of many ids, creating the new ones. `init(first_new_row, count)` runs under
    /// the write lock before the new ids become visible, so it can allocate and initialise
    /// their rows. Known ids take only the read lock.
    pub fn resolve_many<S: AsRef<str>>(
        &self,
        ids: &[S],
        init: impl FnOnce(usize, usize),
    ) -> Vec<u32> {
        let mut out = self.get_many(ids);
        if !out.contains(&u32::MAX) {
            return out;
        }
        let mut g = self.inner.write();
        let first = g.ids.len();
        let mut fresh: Vec<Box<str>> = Vec::new();
        let mut pending: HashMap<Box<str>, u32> = HashMap::new();
        for (o, s) in out.iter_mut().zip(ids) {
            if *o != u32::MAX {
                continue;
            }
            let s = s.as_ref();
            if let Some(&r) = g.map.get(s).or_else(|| pending.get(s)) {
                *o = r;
                continue;
            }
            let r = (first + fresh.len()) as u32;
            fresh.push(s.into());
            pending.insert(s.into(), r);
            *o = r;
        }
        if !fresh.is_empty() {
            init(first, fresh.len());
            g.map.extend(pending);
            g.ids.extend(fresh);
        }
        out
    }

    /// The id of a row.
    pub fn id(&self, row: u32) -> Option<String> {
        self.inner.read().ids.get(row as usize).map(|s| s.to_string())
    }

    /// The ids of many rows (one read lock). Unknown rows give an empty string.
    pub fn ids_of(&self, rows: &[u32]) -> Vec<String> {
        let g = self.inner.read();
        rows.iter().map(|&r| g.ids.get(r as usize).map(|s| s.to_string()).unwrap_or_default()).collect()
    }

    /// All ids in row order.
    pub fn all(&self) -> Vec<String> {
        self.inner.read().ids.iter().map(|s| s.to_string()).collect()
    }

    /// Replaces the contents (used when loading a snapshot).
    pub fn set_all(&self, ids: Vec<String>) -> Result<(), String> {
        let mut inner = IdInner::default();
        for (r, s) in ids.into_iter().enumerate() {
            let s: Box<str> = s.into();
            if inner.map.insert(s.clone(), r as u32).is_some() {
                return Err(format!("duplicate id {s:?}"));
            }
            inner.ids.push(s);
        }
        *self.inner.write() = inner;
        Ok(())
    }
}

/// A table of `dim`-wide `f32` rows with ids, growing without moving rows. See the module docs.
pub struct EmbeddingTable {
    dim: usize,
    ids: IdMap,
    rows: Segmented<AtomicF32>,
}

impl EmbeddingTable {
    pub fn new(dim: usize) -> Self {
        Self { dim, ids: IdMap::new(), rows: Segmented::new(dim) }
    }

    #[inline]
    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn ids(&self) -> &IdMap {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row's atomics.
    #[inline]
    pub fn row(&self, r: u32) -> &[AtomicF32] {
        self.rows.row(r as usize)
    }

    /// Makes sure rows `0..n` are allocated (used under the id map's write lock).
    pub fn ensure(&self, n: usize) {
        self.rows.ensure(n)
    }

    /// Rows of `ids`, creating the new ones; `init(row, values)` fills each new row before
    /// its id becomes visible to other threads.
    pub fn resolve_many<S: AsRef<str>>(&self, ids: &[S], mut init: impl FnMut(u32, &[AtomicF32])) -> Vec<u32> {
        self.ids.resolve_many(ids, |first, count| {
            self.rows.ensure(first + count);
            for r in first..first + count {
                init(r as u32, self.rows.row(r));
            }
        })
    }

    /// Copies rows `0..n` into a contiguous row-major buffer.
    pub fn copy_out(&self, n: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; n * self.dim];
        for (r, chunk) in out.chunks_exact_mut(self.dim.max(1)).enumerate().take(n) {
            load_row(self.row(r as u32), chunk);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn resolve_creates_each_new_id_once() {
        let t = EmbeddingTable::new(4);
        let mut inits = 0;
        let rows = t.resolve_many(&["a", "b", "a", "c"], |_, row| {
            inits += 1;
            row[0].store(1.5);
        });
        assert_eq!(rows, vec![0, 1, 0, 2]);
        assert_eq!(inits, 3);
        assert_eq!(t.row(2)[0].load(), 1.5);
        assert_eq!(t.ids().get("b"), Some(1));
        assert_eq!(t.ids().ids_of(&[2, 0]), vec!["c".to_string(), "a".to_string()]);
    }

    /// Several threads add ids and update rows while others read them: every id maps to one
    /// row, every value read is one that a writer stored (never a torn or uninitialised
    /// float), and the test finishes in time (a hang here means a deadlock).
    #[test]
    fn stress_concurrent_growth_updates_and_reads() {
        let t = Arc::new(EmbeddingTable::new(8));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut hs = Vec::new();
        for w in 0..4u32 {
            let t = t.clone();
            hs.push(std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let id = format!("u{}", (i * 7 + w) % 5000);
                    let r = t.resolve_many(&[id.as_str()], |_, row| row.iter().for_each(|a| a.store(0.0)))[0];
                    let v = (i % 1000) as f32;
                    for a in t.row(r) {
                        a.store(v);
                    }
                }
            }));
        }
        for _ in 0..2 {
            let t = t.clone();
            hs.push(std::thread::spawn(move || {
                let mut buf = [0f32; 8];
                let mut reads = 0u64;
                while Instant::now() < deadline && reads < 200_000 {
                    let n = t.len();
                    for r in 0..n.min(64) as u32 {
                        load_row(t.row(r), &mut buf);
                        assert!(buf.iter().all(|x| x.is_finite() && *x >= 0.0 && *x < 1000.0));
                        reads += 1;
                    }
                    std::thread::yield_now();
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
        assert!(Instant::now() < deadline, "stress test ran past its deadline");
        assert_eq!(t.len(), 5000);
        let all = t.ids().all();
        let uniq: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(uniq.len(), 5000);
    }
}
