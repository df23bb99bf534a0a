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
//! - **Freed rows are reused, never unmapped.** Removing an id takes it out of the map
//!   (under the write lock); the caller then zeroes the row and hands it to the free list
//!   ([`EmbeddingTable::release`]), and a later new id may get it. A reader that looked the
//!   row up before the removal may still be reading it: it reads atomics, so it sees the old
//!   values, zeros or the next owner's, each a value some thread stored — a stale answer at
//!   worst, never undefined behaviour. No `unsafe` is needed for any of this.
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

/// String ids to dense row numbers, and back, with a free list: a removed id's row goes to
/// the free list and is handed to a later new id, so the rows stay bounded by the most ids
/// held at once, not by every id ever seen.
#[derive(Default)]
pub struct IdMap {
    inner: RwLock<IdInner>,
}

#[derive(Default, Clone)]
struct IdInner {
    map: HashMap<Box<str>, u32>,
    /// The id of each row; an empty string for a free row (`live` tells them apart).
    ids: Vec<Box<str>>,
    live: Vec<bool>,
    /// Rows released by [`IdMap::release`], reused last-in first-out.
    free: Vec<u32>,
}

impl IdMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of ids held now (live rows).
    pub fn len(&self) -> usize {
        self.inner.read().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows ever allocated (live, free and removed-but-not-yet-released): the bound of
    /// every row number handed out.
    pub fn rows(&self) -> usize {
        self.inner.read().ids.len()
    }

    /// Rows in the free list.
    pub fn n_free(&self) -> usize {
        self.inner.read().free.len()
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

    /// The rows of many ids, creating the new ones (from the free list first, then new
    /// rows at the end). `init(new_rows)` runs under the write lock before the new ids
    /// become visible, so it can allocate and initialise their rows. Known ids take only
    /// the read lock.
    pub fn resolve_many<S: AsRef<str>>(&self, ids: &[S], init: impl FnOnce(&[u32])) -> Vec<u32> {
        let mut out = self.get_many(ids);
        if !out.contains(&u32::MAX) {
            return out;
        }
        let mut g = self.inner.write();
        let g = &mut *g;
        let mut fresh: Vec<(u32, Box<str>)> = Vec::new();
        let mut pending: HashMap<&str, u32> = HashMap::new();
        let mut next = g.ids.len();
        let mut free_used = 0usize;
        for (o, s) in out.iter_mut().zip(ids) {
            if *o != u32::MAX {
                continue;
            }
            let s = s.as_ref();
            if let Some(&r) = g.map.get(s).or_else(|| pending.get(s)) {
                *o = r;
                continue;
            }
            let r = if free_used < g.free.len() {
                free_used += 1;
                g.free[g.free.len() - free_used]
            } else {
                next += 1;
                (next - 1) as u32
            };
            fresh.push((r, s.into()));
            pending.insert(s, r);
            *o = r;
        }
        if !fresh.is_empty() {
            let new_rows: Vec<u32> = fresh.iter().map(|f| f.0).collect();
            init(&new_rows);
            let keep = g.free.len() - free_used;
            g.free.truncate(keep);
            g.ids.resize(next, Box::from(""));
            g.live.resize(next, false);
            for (r, s) in fresh {
                g.map.insert(s.clone(), r);
                g.ids[r as usize] = s;
                g.live[r as usize] = true;
            }
        }
        out
    }

    /// Removes ids; returns (id, row) of those that were known. Their rows are neither
    /// live nor free until [`IdMap::release`]: the caller clears them in between, so no new
    /// id can be handed a row that is still being cleared.
    pub fn remove_ids<S: AsRef<str>>(&self, ids: &[S]) -> Vec<(String, u32)> {
        let mut g = self.inner.write();
        let g = &mut *g;
        let mut out = Vec::new();
        for s in ids {
            if let Some(r) = g.map.remove(s.as_ref()) {
                g.live[r as usize] = false;
                let old = std::mem::replace(&mut g.ids[r as usize], Box::from(""));
                out.push((old.into_string(), r));
            }
        }
        out
    }

    /// Removes the ids of live rows (others are skipped); returns (id, row) of each removed.
    pub fn remove_rows(&self, rows: &[u32]) -> Vec<(String, u32)> {
        let mut g = self.inner.write();
        let g = &mut *g;
        let mut out = Vec::new();
        for &r in rows {
            if g.live.get(r as usize).copied().unwrap_or(false) {
                g.live[r as usize] = false;
                let old = std::mem::replace(&mut g.ids[r as usize], Box::from(""));
                g.map.remove(&old);
                out.push((old.into_string(), r));
            }
        }
        out
    }

    /// Puts removed rows in the free list (rows that are live or already free are skipped).
    pub fn release(&self, rows: &[u32]) {
        let mut g = self.inner.write();
        let g = &mut *g;
        let mut is_free: hashbrown::HashSet<u32> = hashbrown::HashSet::new();
        if !g.free.is_empty() {
            is_free.extend(g.free.iter().copied());
        }
        for &r in rows {
            if (r as usize) < g.ids.len() && !g.live[r as usize] && is_free.insert(r) {
                g.free.push(r);
            }
        }
    }

    /// Whether a row holds an id now.
    pub fn is_live(&self, row: u32) -> bool {
        self.inner.read().live.get(row as usize).copied().unwrap_or(false)
    }

    /// Whether each row `0..rows()` holds an id now (one read lock).
    pub fn live_mask(&self) -> Vec<bool> {
        self.inner.read().live.clone()
    }

    /// The id of a live row.
    pub fn id(&self, row: u32) -> Option<String> {
        let g = self.inner.read();
        g.live.get(row as usize).copied().unwrap_or(false).then(|| g.ids[row as usize].to_string())
    }

    /// The ids of many rows (one read lock). Unknown or free rows give an empty string.
    pub fn ids_of(&self, rows: &[u32]) -> Vec<String> {
        let g = self.inner.read();
        rows.iter().map(|&r| g.ids.get(r as usize).map(|s| s.to_string()).unwrap_or_default()).collect()
    }

    /// Every row's id in row order, an empty string for a row that holds none, with the
    /// rows that hold an id (one read lock: a consistent view).
    pub fn all_rows(&self) -> (Vec<String>, Vec<bool>) {
        let g = self.inner.read();
        (g.ids.iter().map(|s| s.to_string()).collect(), g.live.clone())
    }

    /// The live ids in row order.
    pub fn all(&self) -> Vec<String> {
        let g = self.inner.read();
        g.ids.iter().zip(&g.live).filter(|x| *x.1).map(|x| x.0.to_string()).collect()
    }

    /// The live (row, id) pairs in row order.
    pub fn live(&self) -> Vec<(u32, String)> {
        let g = self.inner.read();
        g.ids.iter().zip(&g.live).enumerate().filter(|x| *x.1 .1).map(|(r, x)| (r as u32, x.0.to_string())).collect()
    }

    /// Replaces the contents (used when loading a snapshot): row `r` gets `ids[r]` unless
    /// `free[r]`; free rows go to the free list.
    pub fn set_all(&self, ids: Vec<String>, free: &[bool]) -> Result<(), String> {
        let mut inner = IdInner::default();
        for (r, s) in ids.into_iter().enumerate() {
            if free.get(r).copied().unwrap_or(false) {
                inner.ids.push(Box::from(""));
                inner.live.push(false);
                continue;
            }
            let s: Box<str> = s.into();
            if inner.map.insert(s.clone(), r as u32).is_some() {
                return Err(format!("duplicate id {s:?}"));
            }
            inner.ids.push(s);
            inner.live.push(true);
        }
        // Reused lowest row first (the list pops from its end).
        inner.free = (0..inner.ids.len() as u32).rev().filter(|&r| !inner.live[r as usize]).collect();
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

    /// Ids held now.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows ever allocated (the bound of every row number; free rows included).
    pub fn rows(&self) -> usize {
        self.ids.rows()
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
        self.ids.resolve_many(ids, |new_rows| {
            if let Some(&hi) = new_rows.iter().max() {
                self.rows.ensure(hi as usize + 1);
            }
            for &r in new_rows {
                init(r, self.rows.row(r as usize));
            }
        })
    }

    /// Zeroes removed rows and puts them in the free list (see [`IdMap::remove_ids`]).
    /// A reader may still be reading such a row: every value is an atomic, so it sees the
    /// old numbers, zeros or (after reuse) the next owner's, never a torn or undefined one.
    pub fn release(&self, rows: &[u32]) {
        for &r in rows {
            if let Some(row) = self.rows.try_row(r as usize) {
                row.iter().for_each(|a| a.store(0.0));
            }
        }
        self.ids.release(rows);
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

    #[test]
    fn removed_rows_go_to_the_free_list_and_are_reused() {
        let t = EmbeddingTable::new(2);
        t.resolve_many(&["a", "b", "c"], |_, row| row[0].store(1.0));
        assert_eq!(t.ids().remove_ids(&["b", "zz"]), vec![("b".to_string(), 1)]);
        assert_eq!((t.len(), t.rows()), (2, 3));
        assert_eq!(t.ids().get("b"), None);
        // Removed but not released: a new id must not get the row being cleared.
        assert_eq!(t.resolve_many(&["d"], |_, _| {}), vec![3]);
        t.release(&[1]);
        assert_eq!(t.row(1)[0].load(), 0.0, "a released row is zeroed");
        assert_eq!(t.ids().n_free(), 1);
        assert_eq!(t.resolve_many(&["e", "e"], |_, row| row[1].store(5.0)), vec![1, 1]);
        assert_eq!(t.row(1)[1].load(), 5.0);
        assert_eq!(t.rows(), 4);
        assert_eq!(t.ids().all(), ["a", "e", "c", "d"]);
        assert_eq!(t.ids().remove_rows(&[0, 0, 9]), vec![("a".to_string(), 0)]);
        t.release(&[0, 0]);
        assert_eq!(t.ids().n_free(), 1, "a row is freed once");
        let (ids, live) = t.ids().all_rows();
        assert_eq!(ids[0], "");
        assert!(!live[0] && live[1]);
    }

    /// Writers add and remove ids (rows are reused) while readers read rows: ids stay
    /// unique, every row read holds values some writer stored, and it ends in time.
    #[test]
    fn stress_reuse_of_rows_under_readers() {
        let t = Arc::new(EmbeddingTable::new(8));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut hs = Vec::new();
        for w in 0..3u32 {
            let t = t.clone();
            hs.push(std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let id = format!("u{}", (i * 13 + w * 7) % 3000);
                    let r = t.resolve_many(&[id.as_str()], |_, row| row.iter().for_each(|a| a.store(1.0)))[0];
                    t.row(r).iter().for_each(|a| a.store((i % 100) as f32));
                    if i % 3 == 0 {
                        let gone: Vec<u32> = t.ids().remove_ids(&[id.as_str()]).into_iter().map(|x| x.1).collect();
                        t.release(&gone);
                    }
                }
            }));
        }
        for _ in 0..2 {
            let t = t.clone();
            hs.push(std::thread::spawn(move || {
                let mut buf = [0f32; 8];
                while Instant::now() < deadline && t.rows() < 10 {
                    std::thread::yield_now();
                }
                for _ in 0..2000 {
                    for r in 0..t.rows().min(256) as u32 {
                        load_row(t.row(r), &mut buf);
                        assert!(buf.iter().all(|x| x.is_finite() && *x >= 0.0 && *x < 100.0));
                    }
                }
            }));
        }
        for h in hs {
            h.join().unwrap();
        }
        assert!(Instant::now() < deadline, "stress test ran past its deadline");
        let all = t.ids().all();
        let uniq: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(uniq.len(), all.len());
        assert_eq!(all.len(), t.len());
        assert!(t.rows() <= 3000 + 3, "rows are reused: {}", t.rows());
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
                    let n = t.rows();
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
