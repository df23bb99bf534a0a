//! The model snapshot file: one versioned binary image of a [`Model`] with a checksum.
//!
//! Layout (all integers little-endian):
//! ```text
//! magic   8 bytes  "RCFSNAP\0"
//! version u32      FORMAT_VERSION
//! length  u64      bytes of the body that follows
//! body             sections, in order:
//!   config      u32 count, then (str name, str value) pairs
//!   counters    u64 events learned, u64 co-occurrence decay base
//!   items       u32 n, n × str id, n × dim f32 factors, n × f32 bias, n × f32 weight,
//!               n × u64 popularity cell, n × (u32 m, m × (u32 row, f32 weight)) neighbours
//!   users       u32 n, n × str id, n × dim f32 factors,
//!               n × (u32 events, u32 session, f64 last_ts, u32 r, r × (u32 item, u32 session),
//!                    u32 s, s × u32 seen item)
//!   text        n × (u32 w, w × str word)
//!   context     (version 2) u32 c, c × str key, c × dim f32; u32 i, i × (u32 user, u32 session,
//!               str query, u32 r, r × u32 context row); u32 f, f × (u32 item, u64 since)
//!   memory      (version 3) f64 clock; u32 k, k × u32 free item row, n × (u32 active secs,
//!               u8 in catalogue); u32 k, k × u32 free user row, nu × (u64 last_seq,
//!               f64 active_ts); u32 k, k × u32 free context row, c × f64 last seen
//!   ranker      (version 4) u32 r, r × f32: the second stage's weights, then its AdaGrad
//!               sums (see `crate::ranker`); a file without it starts the ranker afresh
//! crc32   u32      CRC-32 (IEEE) of magic, version, length and body
//! ```
//! Free rows (evicted users, retired items, pruned keys) keep their place, with an empty id
//! and zero values, so row numbers inside the file stay valid; the id of a forgotten or
//! evicted user appears nowhere in the file. Files of versions 1 and 2 have no free rows;
//! loading them starts the clock at the newest user event time in the file and counts
//! every item and user as active then (so nothing is retired at once for lack of a date).
//! ```text
//! ```
//! `str` is a u32 byte length and UTF-8 bytes. Files are written to a temporary file in the
//! same folder, fsynced, then renamed over the target, and the folder is fsynced: a reader
//! sees the old file or the new one, never half of one. Reading checks the magic, version,
//! length and checksum first, and every read is bounds-checked: a truncated or corrupt file
//! is an [`Error::Snapshot`], never a panic.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Model, UserState};

pub const MAGIC: &[u8; 8] = b"RCFSNAP\0";
pub const FORMAT_VERSION: u32 = 4;
/// The oldest format version this build still reads (version 1 has no context section).
pub const OLDEST_VERSION: u32 = 1;

struct W(Vec<u8>);

impl W {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f32(&mut self, v: f32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct R<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len()).ok_or_else(|| {
            Error::Snapshot(format!("snapshot is truncated or corrupt: needed {n} bytes at offset {}", self.pos))
        })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default()))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default()))
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    /// A list of free rows below `n`, as a mask of `n` rows.
    fn free_rows(&mut self, n: usize) -> Result<Vec<bool>> {
        let mut free = vec![false; n];
        for _ in 0..self.count(4)? {
            let r = self.u32()? as usize;
            match free.get_mut(r) {
                Some(f) => *f = true,
                None => return Err(Error::Snapshot(format!("snapshot is corrupt: free row {r} is out of range"))),
            }
        }
        Ok(free)
    }
    fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Error::Snapshot("snapshot holds an id that is not UTF-8".into()))
    }
    /// A count that must fit in what is left, at `min_each` bytes per element.
    fn count(&mut self, min_each: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_each) > self.b.len() - self.pos {
            return Err(Error::Snapshot(format!("snapshot is corrupt: a count of {n} does not fit in the file")));
        }
        Ok(n)
    }
}

/// The snapshot of a model as bytes.
pub fn to_bytes(m: &Model) -> Vec<u8> {
    let mut w = W(Vec::new());
    let pairs = m.config().to_pairs();
    w.u32(pairs.len() as u32);
    for (k, v) in &pairs {
        w.str(k);
        w.str(v);
    }
    w.u64(m.events());
    w.u64(m.cooc_base());
    let dim = m.config().dim;
    let (item_ids, item_live) = m.items().ids().all_rows();
    let n = item_ids.len();
    let live_item = |j: u32| item_live.get(j as usize).copied().unwrap_or(false);
    w.u32(n as u32);
    item_ids.iter().for_each(|s| w.str(s));
    m.items().copy_out(n).into_iter().for_each(|x| w.f32(x));
    (0..n as u32).for_each(|r| w.f32(m.item_bias_of(r)));
    (0..n as u32).for_each(|r| w.f32(m.item_weight_of(r)));
    (0..n as u32).for_each(|r| w.u64(m.item_pop_raw(r)));
    for r in 0..n as u32 {
        // Items created by other threads while this runs are left out (consistent file).
        let mut nb: Vec<(u32, f32)> = if live_item(r) { m.neighbors_of(r).into_iter().filter(|x| live_item(x.0)).collect() } else { Vec::new() };
        nb.sort_by_key(|x| x.0);
        w.u32(nb.len() as u32);
        for (j, c) in nb {
            w.u32(j);
            w.f32(c);
        }
    }
    let (user_ids, user_live) = m.users().ids().all_rows();
    let nu = user_ids.len();
    let live_user = |u: u32| user_live.get(u as usize).copied().unwrap_or(false);
    let state = |r: u32| if live_user(r) { m.user_state_of(r) } else { UserState::default() };
    w.u32(nu as u32);
    user_ids.iter().for_each(|s| w.str(s));
    let mut uf = m.users().copy_out(nu);
    for (r, row) in uf.chunks_exact_mut(dim.max(1)).enumerate() {
        if !live_user(r as u32) {
            row.iter_mut().for_each(|x| *x = 0.0);
        }
    }
    uf.into_iter().for_each(|x| w.f32(x));
    let mut activity = Vec::with_capacity(nu);
    for r in 0..nu as u32 {
        let st = state(r);
        activity.push((st.last_seq, st.active_ts));
        w.u32(st.events);
        w.u32(st.session);
        w.f64(st.last_ts);
        let recent: Vec<(u32, u32)> = st.recent().iter().copied().filter(|x| live_item(x.0)).collect();
        w.u32(recent.len() as u32);
        for (i, s) in recent {
            w.u32(i);
            w.u32(s);
        }
        let seen: Vec<u32> = st.seen().iter().copied().filter(|&i| live_item(i)).collect();
        w.u32(seen.len() as u32);
        seen.iter().for_each(|&i| w.u32(i));
    }
    // Item text, as the indexed words of each item.
    for r in 0..n as u32 {
        let words = m.item_words(r);
        w.u32(words.len() as u32);
        words.iter().for_each(|x| w.str(x));
    }
    // Version 2: context embeddings, session intents, exploration candidates.
    let (ctx_ids, ctx_live) = m.contexts().ids().all_rows();
    w.u32(ctx_ids.len() as u32);
    ctx_ids.iter().for_each(|s| w.str(s));
    m.contexts().copy_out(ctx_ids.len()).into_iter().for_each(|x| w.f32(x));
    // Rows added by other threads while this runs are left out, so the file is consistent.
    let nc = ctx_ids.len();
    let intents: Vec<(u32, crate::model::Intent)> = (0..nu as u32)
        .filter_map(|r| state(r).intent.map(|i| (r, *i)))
        .map(|(r, mut i)| {
            i.rows.retain(|&c| ctx_live.get(c as usize).copied().unwrap_or(false));
            (r, i)
        })
        .collect();
    w.u32(intents.len() as u32);
    for (r, it) in &intents {
        w.u32(*r);
        w.u32(it.session);
        w.str(&it.query);
        w.u32(it.rows.len() as u32);
        it.rows.iter().for_each(|&c| w.u32(c));
    }
    let fresh: Vec<(u32, u64)> = m.fresh_raw().into_iter().filter(|f| live_item(f.0)).collect();
    w.u32(fresh.len() as u32);
    fresh.iter().for_each(|&(f, since)| {
        w.u32(f);
        w.u64(since);
    });
    // Version 3: the clock, free rows and activity.
    w.f64(m.clock());
    let free = |live: &[bool]| -> Vec<u32> { live.iter().enumerate().filter(|x| !*x.1).map(|x| x.0 as u32).collect() };
    let fi = free(&item_live);
    w.u32(fi.len() as u32);
    fi.iter().for_each(|&r| w.u32(r));
    for r in 0..n as u32 {
        let (active, pinned) = if live_item(r) { m.item_activity(r) } else { (0, false) };
        w.u32(active);
        w.u8(pinned as u8);
    }
    let fu = free(&user_live);
    w.u32(fu.len() as u32);
    fu.iter().for_each(|&r| w.u32(r));
    for (seq, t) in activity {
        w.u64(seq);
        w.f64(t);
    }
    let fc = free(&ctx_live);
    w.u32(fc.len() as u32);
    fc.iter().for_each(|&r| w.u32(r));
    for r in 0..nc as u32 {
        w.f64(if ctx_live[r as usize] { m.ctx_seen_of(r) } else { 0.0 });
    }
    let rk = m.ranker().state();
    w.u32(rk.len() as u32);
    rk.iter().for_each(|&x| w.f32(x));
    let body = w.0;
    let mut out = Vec::with_capacity(body.len() + 24);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A model from snapshot bytes.
pub fn from_bytes(b: &[u8]) -> Result<Model> {
    if b.len() < 24 || &b[..8] != MAGIC {
        return Err(Error::Snapshot("not a recofast snapshot (bad magic or too short)".into()));
    }
    let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(Error::Snapshot(format!("snapshot format version {version} is not supported (this build reads {OLDEST_VERSION} to {FORMAT_VERSION})")));
    }
    let len = u64::from_le_bytes(b[12..20].try_into().unwrap_or_default());
    if len != (b.len() - 24) as u64 {
        return Err(Error::Snapshot(format!("snapshot is truncated: the header announces {len} body bytes, the file has {}", b.len() as i64 - 24)));
    }
    let (data, crc) = b.split_at(b.len() - 4);
    let want = u32::from_le_bytes(crc.try_into().unwrap_or_default());
    if crc32fast::hash(data) != want {
        return Err(Error::Snapshot("snapshot checksum mismatch: the file is corrupt".into()));
    }
    let mut r = R { b: &data[20..], pos: 0 };
    let mut cfg = Config::default();
    for _ in 0..r.count(8)? {
        let (k, v) = (r.str()?, r.str()?);
        cfg.set(&k, &v).map_err(|e| Error::Snapshot(format!("snapshot option {k}: {e}")))?;
    }
    let events = r.u64()?;
    let cooc_base = r.u64()?;
    let m = Model::new(cfg).map_err(|e| Error::Snapshot(format!("snapshot configuration: {e}")))?;
    m.set_events(events);
    m.set_cooc_base(cooc_base);
    let n = r.count(4)?;
    let ids: Vec<String> = (0..n).map(|_| r.str()).collect::<Result<_>>()?;
    m.ensure_items(n);
    for i in 0..n as u32 {
        for a in m.items().row(i) {
            a.store(r.f32()?);
        }
    }
    let bias: Vec<f32> = (0..n).map(|_| r.f32()).collect::<Result<_>>()?;
    let weight: Vec<f32> = (0..n).map(|_| r.f32()).collect::<Result<_>>()?;
    let pop: Vec<u64> = (0..n).map(|_| r.u64()).collect::<Result<_>>()?;
    for i in 0..n {
        let k = r.count(8)?;
        let mut nb = Vec::with_capacity(k);
        for _ in 0..k {
            let j = r.u32()?;
            if j as usize >= n {
                return Err(Error::Snapshot(format!("snapshot is corrupt: neighbour {j} of item {i} is out of range")));
            }
            nb.push((j, r.f32()?));
        }
        m.restore_item(i as u32, bias[i], weight[i], pop[i], nb);
    }
    let nu = r.count(4)?;
    let uids: Vec<String> = (0..nu).map(|_| r.str()).collect::<Result<_>>()?;
    m.ensure_users(nu);
    for u in 0..nu as u32 {
        for a in m.users().row(u) {
            a.store(r.f32()?);
        }
    }
    for u in 0..nu as u32 {
        let mut st = UserState::default();
        st.events = r.u32()?;
        st.session = r.u32()?;
        st.last_ts = r.f64()?;
        let mut recent = Vec::new();
        for _ in 0..r.count(8)? {
            let (i, s) = (r.u32()?, r.u32()?);
            if i as usize >= n {
                return Err(Error::Snapshot(format!("snapshot is corrupt: item {i} out of range")));
            }
            recent.push((i, s));
        }
        if recent.len() > crate::config::RECENT_CAP {
            return Err(Error::Snapshot("snapshot is corrupt: too many recent items".into()));
        }
        for &(i, s) in recent.iter().rev() {
            st.push_recent(i, s, crate::config::RECENT_CAP);
        }
        for _ in 0..r.count(4)? {
            let i = r.u32()?;
            if i as usize >= n {
                return Err(Error::Snapshot(format!("snapshot is corrupt: item {i} out of range")));
            }
            st.see(i);
        }
        m.restore_user(u, st);
    }
    for i in 0..n as u32 {
        let words: Vec<String> = (0..r.count(4)?).map(|_| r.str()).collect::<Result<_>>()?;
        if !words.is_empty() {
            m.restore_text(i, &words.join(" "));
        }
    }
    let mut cids: Vec<String> = Vec::new();
    if version >= 2 {
        let nc = r.count(4)?;
        cids = (0..nc).map(|_| r.str()).collect::<Result<_>>()?;
        m.ensure_contexts(nc);
        for c in 0..nc as u32 {
            for a in m.contexts().row(c) {
                a.store(r.f32()?);
            }
        }
        for _ in 0..r.count(12)? {
            let (u, session, query) = (r.u32()?, r.u32()?, r.str()?);
            let rows: Vec<u32> = (0..r.count(4)?).map(|_| r.u32()).collect::<Result<_>>()?;
            if u as usize >= nu || rows.iter().any(|&c| c as usize >= cids.len()) {
                return Err(Error::Snapshot("snapshot is corrupt: an intent is out of range".into()));
            }
            let mut st = m.user_state_of(u);
            st.intent = Some(Box::new(crate::model::Intent { query, rows, session }));
            m.restore_user(u, st);
        }
        let fresh: Vec<(u32, u64)> = (0..r.count(12)?).map(|_| Ok((r.u32()?, r.u64()?))).collect::<Result<_>>()?;
        if fresh.iter().any(|&(f, _)| f as usize >= n) {
            return Err(Error::Snapshot("snapshot is corrupt: a new item is out of range".into()));
        }
        m.set_fresh(fresh);
    }
    let nc = cids.len();
    let (mut free_i, mut free_u, mut free_c) = (vec![false; n], vec![false; nu], vec![false; nc]);
    if version >= 3 {
        m.set_clock(r.f64()?);
        free_i = r.free_rows(n)?;
        for i in 0..n as u32 {
            let (active, pinned) = (r.u32()?, r.u8()? != 0);
            m.restore_item_activity(i, active, pinned);
        }
        free_u = r.free_rows(nu)?;
        for u in 0..nu as u32 {
            let (seq, t) = (r.u64()?, r.f64()?);
            let mut st = m.user_state_of(u);
            st.last_seq = seq;
            st.active_ts = t;
            m.restore_user(u, st);
        }
        free_c = r.free_rows(nc)?;
        for c in 0..nc as u32 {
            m.restore_ctx_seen(c, r.f64()?);
        }
    } else {
        // No dates in the file: every user and item counts as active at the newest event time.
        let clock = (0..nu as u32).map(|u| m.user_state_of(u).last_ts).filter(|t| t.is_finite()).fold(0.0f64, f64::max);
        m.set_clock(clock);
        for i in 0..n as u32 {
            m.restore_item_activity(i, clock.clamp(0.0, u32::MAX as f64) as u32, false);
        }
        for u in 0..nu as u32 {
            let mut st = m.user_state_of(u);
            st.last_seq = events;
            st.active_ts = if st.last_ts.is_finite() { st.last_ts } else { clock };
            m.restore_user(u, st);
        }
        for c in 0..nc as u32 {
            m.restore_ctx_seen(c, clock);
        }
    }
    m.restore_ids((uids, free_u), (ids, free_i), (cids, free_c))?;
    if version >= 4 {
        let k = r.count(4)?;
        let mut st = Vec::with_capacity(k);
        for _ in 0..k {
            st.push(r.f32()?);
        }
        // A ranker of another shape (another build's features) starts afresh.
        m.ranker().set_state(&st);
    }
    if r.pos != r.b.len() {
        return Err(Error::Snapshot("snapshot is corrupt: trailing bytes after the last section".into()));
    }
    m.refresh();
    Ok(m)
}

/// Writes bytes to `path` atomically: a temporary file beside it, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::InvalidArgument(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let res = (|| -> Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Saves a model to `path` atomically.
pub fn save(m: &Model, path: &Path) -> Result<()> {
    write_atomic(path, &to_bytes(m))
}

/// Loads a model from `path`.
pub fn load(path: &Path) -> Result<Model> {
    let b = fs::read(path)?;
    from_bytes(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Query;

    fn trained() -> Model {
        let m = Model::new(Config { dim: 8, snapshot_every: 1, snapshot_ms: 0, ranker: true, ..Config::default() }).unwrap();
        let users: Vec<String> = (0..300).map(|i| format!("u{}", i % 37)).collect();
        let items: Vec<String> = (0..300).map(|i| format!("i{}", (i * 7) % 53)).collect();
        let ctx: Vec<Vec<(&str, &str)>> = (0..300).map(|i| vec![("device", ["mobile", "desktop"][i % 2]), ("hour", "20")]).collect();
        m.learn_many_ctx(&users, &items, &[], &(0..300).map(|i| i as f64 * 100.0).collect::<Vec<_>>(), &[], &ctx).unwrap();
        m.set_item_text(&["i1", "i2", "brand-new"], &["red lamp", "blue lamp", "green lamp"]).unwrap();
        m.search_many(&["u1"], &["lamp"], &[30_000.0]).unwrap();
        m
    }

    #[test]
    fn round_trip_gives_the_same_recommendations() {
        let m = trained();
        // The ranker learns from a choice among a request's candidates, and keeps it.
        let q = Query { k: 5, exclude_seen: true, ..Default::default() };
        let listed = m.recommend_row(m.users().ids().get("u1"), &q).unwrap();
        let chosen = m.items().ids().id(listed.last().unwrap().0).unwrap();
        m.learn_one("u1", &chosen, "purchase", None, None).unwrap();
        assert_eq!(m.ranker().pairs(), 1);
        assert_ne!(m.ranker().state(), Model::new(m.config().clone()).unwrap().ranker().state());
        let b = to_bytes(&m);
        let m2 = from_bytes(&b).unwrap();
        assert_eq!(to_bytes(&m2), b);
        assert_eq!(m2.ranker().state(), m.ranker().state());
        m.refresh();
        assert_eq!(m2.fresh_items(), m.fresh_items());
        assert_eq!(m2.user_state("u1").unwrap().intent.unwrap().query, "lamp");
        let ctx = m.context_rows(&["device=mobile", "hour=evening"], false);
        assert_eq!(ctx.len(), 2);
        for u in ["u1", "u5", "nobody"] {
            let q = Query { k: 10, exclude_seen: true, ctx: &ctx, explore: 1, ..Default::default() };
            let a = m.recommend_row(m.users().ids().get(u), &q).unwrap();
            let c = m2.recommend_row(m2.users().ids().get(u), &q).unwrap();
            assert_eq!(a, c, "user {u}");
        }
    }

    /// A version-`v` file from the body of a version-4 one, its last `cut` bytes left out.
    fn older(b: &[u8], v: u32, cut: usize) -> Vec<u8> {
        let body = &b[20..b.len() - 4];
        let mut old = Vec::new();
        old.extend_from_slice(MAGIC);
        old.extend_from_slice(&v.to_le_bytes());
        old.extend_from_slice(&((body.len() - cut) as u64).to_le_bytes());
        old.extend_from_slice(&body[..body.len() - cut]);
        let crc = crc32fast::hash(&old);
        old.extend_from_slice(&crc.to_le_bytes());
        old
    }

    #[test]
    fn version_1_2_and_3_files_still_load() {
        // One user, one item, no context: the version-3 section is 8 (clock) + 4 + 5 (items)
        // + 4 + 16 (users) + 4 (contexts) bytes; version 2 adds 12 bytes to version 1.
        let m = Model::new(Config { dim: 4, ..Config::default() }).unwrap();
        m.learn_many(&["u"], &["a"], &[], &[5000.0], &[]).unwrap();
        let b = to_bytes(&m);
        let v4 = 4 + 4 * m.ranker().state().len();
        let v3 = 8 + 4 + 5 + 4 + 16 + 4 + v4;
        let m3 = from_bytes(&older(&b, 3, v4)).unwrap();
        assert_eq!(m3.ranker().state(), Model::new(Config { dim: 4, ..Config::default() }).unwrap().ranker().state(), "a version-3 file starts the ranker afresh");
        let m1 = from_bytes(&older(&b, 1, 12 + v3)).unwrap();
        assert_eq!(m1.events(), 1);
        assert_eq!(m1.contexts().len(), 0);
        assert_eq!(m1.clock(), 5000.0, "the clock starts at the newest user event time");
        let m2 = from_bytes(&older(&b, 2, v3)).unwrap();
        assert_eq!((m2.n_users(), m2.n_items()), (1, 1));
        assert_eq!(m2.user_state("u").unwrap().active_ts, 5000.0);
        assert!(m2.expire(None).items.is_empty(), "an old file's items are not retired for lack of dates");
    }

    #[test]
    fn free_rows_round_trip_and_forgotten_ids_leave_no_trace() {
        let m = trained();
        m.learn_one("secret-user-42", "i1", "purchase", Some(40_000.0), None).unwrap();
        m.search_many(&["secret-user-42"], &["lamp"], &[40_001.0]).unwrap();
        assert!(to_bytes(&m).windows(14).any(|w| w == b"secret-user-42"));
        assert_eq!(m.forget(&["secret-user-42", "u3"]), 2);
        let b = to_bytes(&m);
        assert!(!b.windows(14).any(|w| w == b"secret-user-42"), "a forgotten id is in no byte of the file");
        let m2 = from_bytes(&b).unwrap();
        assert_eq!(to_bytes(&m2), b);
        assert!(m2.users().ids().get("u3").is_none());
        assert_eq!(m2.n_users(), m.n_users());
        assert_eq!(m2.users().ids().n_free(), 2);
        m2.learn_one("newcomer", "i2", "view", None, None).unwrap();
        assert_eq!(m2.users().rows(), m.users().rows(), "the loaded free rows are reused");
        assert_eq!(m2.clock(), m.clock());
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_an_error() {
        let b = to_bytes(&trained());
        for cut in (0..b.len()).step_by(97) {
            assert!(matches!(from_bytes(&b[..cut]), Err(Error::Snapshot(_))), "cut at {cut}");
        }
        for pos in (0..b.len()).step_by(89) {
            let mut c = b.clone();
            c[pos] ^= 0x40;
            assert!(matches!(from_bytes(&c), Err(Error::Snapshot(_))), "flip at {pos}");
        }
    }
}
