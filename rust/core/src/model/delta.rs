//! Item knowledge shared between engines that own different users (issue "beyond one
//! machine"): what an engine learns about items from its own users' events, gathered in a
//! bounded outbox and taken as one compact binary delta at a short cadence; another
//! engine applies it, so items bought together by the users of one engine are co-listed
//! for the users of another.
//!
//! A delta holds, per item touched since the last one:
//! - the positive event weight (popularity, the co-occurrence normalisation) and the
//!   latest activity time;
//! - the change of the item's factors and bias (positive and negative steps alike),
//!   quantised to one signed byte per component with a per-item scale;
//!
//! and the co-occurrence increments, per (item, neighbour) pair, before forward decay
//! (the receiver applies its own growth, so each engine's decay stays consistent).
//!
//! Applying the deltas of every other engine makes each engine's item side the sum of all
//! engines' updates, as if one engine had learned every event (asynchronous SGD with the
//! cadence as the staleness). What a delta never holds: users, or anything about them.
//!
//! Wire format (little endian), validated in full before anything is applied:
//! ```text
//! b"RFD1" | u16 dim | u32 n_ids | n_ids × (u16 len, utf-8 bytes)
//!         | u32 n_items | n_items × (u32 id, f32 weight, u32 active, f32 d_bias, f32 scale, dim × i8 if scale > 0)
//!         | u32 n_pairs | n_pairs × (u32 id, u32 neighbour id, f32 weight)
//! ```

use super::*;
use hashbrown::HashMap;

const MAGIC: &[u8; 4] = b"RFD1";
/// The longest item id a delta may carry (bytes).
pub const MAX_DELTA_ID: usize = 1024;
/// The most ids, items and pairs one delta may carry (a hostile message is refused before
/// anything is allocated for it).
pub const MAX_DELTA_ROWS: usize = 1 << 20;
/// Pairs kept per item the outbox can hold.
const PAIRS_PER_ITEM: usize = 16;
/// The largest magnitude accepted for a weight (the summed event weights of one item).
const MAX_DELTA_VALUE: f32 = 1e9;
/// The largest bias change and factor scale accepted: a factor coordinate moves by at most
/// 127 × this per delta, far beyond what learning moves it in one delta interval (factors are
/// regularised to a few units), so a hostile delta cannot blow factors up in a few messages.
const MAX_DELTA_STEP: f32 = 1.0;

/// What one item accumulates between two deltas.
#[derive(Clone, Debug, Default)]
pub(super) struct ItemAcc {
    w: f32,
    active: u32,
    db: f32,
    /// The factor change, empty until the factors moved.
    dv: Vec<f32>,
}

/// The bounded accumulation of what this engine learned about items since the last delta.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    items: HashMap<u32, ItemAcc>,
    pairs: HashMap<(u32, u32), f32>,
    /// The most items (and `PAIRS_PER_ITEM` × as many pairs); what comes beyond is dropped
    /// and counted.
    cap: usize,
    pub(super) dropped: u64,
}

impl Outbox {
    pub(super) fn new(cap: usize) -> Self {
        Outbox { cap, ..Outbox::default() }
    }

    fn acc(&mut self, row: u32) -> Option<&mut ItemAcc> {
        if !self.items.contains_key(&row) && self.items.len() >= self.cap {
            self.dropped += 1;
            return None;
        }
        Some(self.items.entry(row).or_default())
    }

    /// A positive event of weight `w` on `row` at `active` (whole seconds).
    pub(super) fn positive(&mut self, row: u32, w: f32, active: u32) {
        if let Some(a) = self.acc(row) {
            a.w += w;
            a.active = a.active.max(active);
        }
    }

    /// `row`'s factors moved from `old` to `new` and its bias by `db`.
    pub(super) fn moved(&mut self, row: u32, old: &[f32], new: &[f32], db: f32) {
        if let Some(a) = self.acc(row) {
            if a.dv.is_empty() {
                a.dv = vec![0.0; new.len()];
            }
            for ((d, o), n) in a.dv.iter_mut().zip(old).zip(new) {
                *d += n - o;
            }
            a.db += db;
        }
    }

    /// `neighbors[a]` gained `w` (before forward decay) on `b`.
    pub(super) fn pair(&mut self, a: u32, b: u32, w: f32) {
        let cap = self.cap.saturating_mul(PAIRS_PER_ITEM);
        if let Some(x) = self.pairs.get_mut(&(a, b)) {
            *x += w;
        } else if self.pairs.len() < cap {
            self.pairs.insert((a, b), w);
        } else {
            self.dropped += 1;
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.pairs.is_empty()
    }

    /// Adds `other` (a learning call's own outbox) to this one.
    pub(super) fn merge(&mut self, other: &mut Outbox) {
        for (row, a) in other.items.drain() {
            match self.acc(row) {
                Some(m) => {
                    m.w += a.w;
                    m.active = m.active.max(a.active);
                    m.db += a.db;
                    if !a.dv.is_empty() {
                        if m.dv.is_empty() {
                            m.dv = a.dv;
                        } else {
                            m.dv.iter_mut().zip(&a.dv).for_each(|(x, y)| *x += y);
                        }
                    }
                }
                None => continue,
            }
        }
        for ((a, b), w) in other.pairs.drain() {
            self.pair(a, b, w);
        }
        self.dropped += std::mem::take(&mut other.dropped);
    }

    /// Forgets what concerns `rows` (rows retired: they may soon hold other items).
    pub(super) fn drop_rows(&mut self, rows: &[u32]) {
        if rows.is_empty() || self.is_empty() {
            return;
        }
        let gone: hashbrown::HashSet<u32> = rows.iter().copied().collect();
        self.items.retain(|r, _| !gone.contains(r));
        self.pairs.retain(|(a, b), _| !gone.contains(a) && !gone.contains(b));
    }
}

/// What applying a delta did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaApplied {
    pub items: usize,
    pub pairs: usize,
}

/// A decoded delta, before its ids are resolved.
struct Decoded {
    ids: Vec<String>,
    items: Vec<(u32, f32, u32, f32, Vec<f32>)>,
    pairs: Vec<(u32, u32, f32)>,
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        match self.buf.get(self.at..self.at.saturating_add(n)) {
            Some(s) if self.at.checked_add(n).is_some() => {
                self.at += n;
                Ok(s)
            }
            _ => invalid!("item delta is truncated at byte {} (wanted {} more of {})", self.at, n, self.buf.len()),
        }
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f32(&mut self, what: &str) -> Result<f32> {
        let v = f32::from_bits(self.u32()?);
        if !(v.is_finite() && v.abs() <= MAX_DELTA_VALUE) {
            return invalid!("item delta: {what} {v} is not a finite number of at most {MAX_DELTA_VALUE}");
        }
        Ok(v)
    }
    fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        // Each entry takes at least `min_bytes`: a count the rest cannot hold is refused
        // before anything is allocated for it.
        if n > MAX_DELTA_ROWS || n.saturating_mul(min_bytes) > self.buf.len() - self.at {
            return invalid!("item delta: {n} {what} cannot be (at most {MAX_DELTA_ROWS}, in {} bytes left)", self.buf.len() - self.at);
        }
        Ok(n)
    }
}

fn decode(buf: &[u8], dim: usize) -> Result<Decoded> {
    let mut r = Reader { buf, at: 0 };
    if r.take(4)? != MAGIC {
        return invalid!("not an item delta (the first bytes are not RFD1)");
    }
    let d = r.u16()? as usize;
    if d != dim {
        return invalid!("item delta of dimension {d}; this model has dimension {dim}");
    }
    let n_ids = r.count("ids", 2)?;
    let mut ids = Vec::with_capacity(n_ids);
    for _ in 0..n_ids {
        let len = r.u16()? as usize;
        if len == 0 || len > MAX_DELTA_ID {
            return invalid!("item delta: an id of {len} bytes (1 to {MAX_DELTA_ID})");
        }
        let s = std::str::from_utf8(r.take(len)?).map_err(|_| crate::error::Error::InvalidArgument("item delta: an id is not UTF-8".into()))?;
        ids.push(s.to_string());
    }
    let id = |k: u32| -> Result<u32> {
        if (k as usize) < n_ids {
            Ok(k)
        } else {
            invalid!("item delta: id number {k} of {n_ids}")
        }
    };
    let n_items = r.count("items", 20)?;
    let mut items = Vec::with_capacity(n_items);
    for _ in 0..n_items {
        let k = id(r.u32()?)?;
        let w = r.f32("weight")?;
        if w < 0.0 {
            return invalid!("item delta: a negative weight {w}");
        }
        let active = r.u32()?;
        let db = r.f32("bias change")?;
        let scale = r.f32("scale")?;
        if !(0.0..=MAX_DELTA_STEP).contains(&scale) || db.abs() > 127.0 * MAX_DELTA_STEP {
            return invalid!("item delta: a scale {scale} or bias change {db} out of range");
        }
        let dv = if scale > 0.0 { r.take(dim)?.iter().map(|&q| q as i8 as f32 * scale).collect() } else { Vec::new() };
        items.push((k, w, active, db, dv));
    }
    let n_pairs = r.count("pairs", 12)?;
    let mut pairs = Vec::with_capacity(n_pairs);
    for _ in 0..n_pairs {
        let (a, b) = (id(r.u32()?)?, id(r.u32()?)?);
        let w = r.f32("pair weight")?;
        if a != b {
            pairs.push((a, b, w.max(0.0)));
        }
    }
    if r.at != buf.len() {
        return invalid!("item delta: {} bytes after its end", buf.len() - r.at);
    }
    Ok(Decoded { ids, items, pairs })
}

/// One delta being written: its id table, items and pairs, joined by [`Encoder::finish`].
struct Encoder {
    dim: usize,
    index: HashMap<u32, u32>,
    ids: Vec<u8>,
    items: Vec<u8>,
    n_items: u32,
    pairs: Vec<u8>,
    n_pairs: u32,
}

impl Encoder {
    fn new(dim: usize) -> Self {
        Encoder { dim, index: HashMap::new(), ids: Vec::new(), items: Vec::new(), n_items: 0, pairs: Vec::new(), n_pairs: 0 }
    }
    fn len(&self) -> usize {
        4 + 2 + 4 + self.ids.len() + 4 + self.items.len() + 4 + self.pairs.len()
    }
    fn id_cost(&self, row: u32, name: &str) -> usize {
        if self.index.contains_key(&row) { 0 } else { 2 + name.len() }
    }
    fn id(&mut self, row: u32, name: &str) -> u32 {
        let next = self.index.len() as u32;
        *self.index.entry(row).or_insert_with(|| {
            self.ids.extend_from_slice(&(name.len() as u16).to_le_bytes());
            self.ids.extend_from_slice(name.as_bytes());
            next
        })
    }
    fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.dim as u16).to_le_bytes());
        out.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.ids);
        out.extend_from_slice(&self.n_items.to_le_bytes());
        out.extend_from_slice(&self.items);
        out.extend_from_slice(&self.n_pairs.to_le_bytes());
        out.extend_from_slice(&self.pairs);
        out
    }
}

impl Model {
    /// Starts (`cap` > 0: the most items one delta gathers) or stops (0) gathering what
    /// learning does to items, for [`Model::take_item_delta`].
    pub fn share_items(&self, cap: usize) {
        let mut g = self.share.lock();
        *g = (cap > 0).then(|| Outbox::new(cap));
        self.share_on.store(cap > 0, Relaxed);
    }

    /// How the next learning calls treat their events, while replaying events whose effect on
    /// items another model has already shared: `share` false leaves them out of the outbox
    /// (they were sent once; a restarted engine replays its own), `items` false learns them
    /// for their users only (their item effects arrived as deltas; an engine taking a
    /// partition over replays the previous owner's). `set_replay(true, true)` is normal
    /// learning.
    pub fn set_replay(&self, share: bool, items: bool) {
        self.share_on.store(share && self.share.lock().is_some(), Relaxed);
        self.items_frozen.store(!items, Relaxed);
    }

    /// Item updates dropped because the outbox was full (since sharing started).
    pub fn item_delta_dropped(&self) -> u64 {
        self.share.lock().as_ref().map_or(0, |o| o.dropped)
    }

    /// Merges a learning call's outbox into the model's.
    pub(super) fn share_merge(&self, local: &mut Outbox) {
        if local.is_empty() && local.dropped == 0 {
            return;
        }
        if let Some(o) = self.share.lock().as_mut() {
            o.merge(local);
        }
    }

    /// Forgets the outbox's entries of retired rows.
    pub(super) fn share_drop_rows(&self, rows: &[u32]) {
        // Also while gathering is paused (set_replay): the outbox still holds these rows.
        if let Some(o) = self.share.lock().as_mut() {
            o.drop_rows(rows);
        }
    }

    /// Everything gathered since the last call, encoded (see the module docs) in deltas of
    /// at most `max_bytes` each (a message's limit), and a new empty outbox; empty when
    /// nothing was learned (or sharing is off).
    pub fn take_item_delta(&self, max_bytes: usize) -> Vec<Vec<u8>> {
        let ob = {
            let mut g = self.share.lock();
            let Some(o) = g.as_mut() else { return Vec::new() };
            if o.is_empty() {
                return Vec::new();
            }
            let cap = o.cap;
            let dropped = o.dropped;
            std::mem::replace(o, Outbox { cap, dropped, ..Outbox::default() })
        };
        let dim = self.cfg.dim;
        let mut rows: Vec<u32> = ob.items.keys().copied().chain(ob.pairs.keys().flat_map(|&(a, b)| [a, b])).collect();
        rows.sort_unstable();
        rows.dedup();
        let names = self.items.ids().ids_of(&rows);
        let live = self.items.ids().live_mask();
        // A row freed since it was gathered, or an id no delta can carry, is left out.
        let name: HashMap<u32, &str> = rows
            .iter()
            .zip(&names)
            .filter(|(r, n)| !n.is_empty() && n.len() <= MAX_DELTA_ID && live.get(**r as usize).copied().unwrap_or(false))
            .map(|(&r, n)| (r, n.as_str()))
            .collect();
        let max_bytes = max_bytes.max(64 + 2 * (24 + dim + MAX_DELTA_ID));
        let mut out = Vec::new();
        let mut enc = Encoder::new(dim);
        for (r, a) in &ob.items {
            let Some(&n) = name.get(r) else { continue };
            if !(a.w.is_finite() && (0.0..=MAX_DELTA_VALUE).contains(&a.w)) {
                continue; // what a receiver would refuse (and the whole delta with it)
            }
            let amax = a.dv.iter().fold(0f32, |m, x| m.max(x.abs()));
            // Within what a receiver accepts: a larger step is sent capped.
            let scale = if amax.is_finite() && amax > 0.0 { (amax / 127.0).min(MAX_DELTA_STEP) } else { 0.0 };
            let db = if a.db.is_finite() { a.db.clamp(-127.0 * MAX_DELTA_STEP, 127.0 * MAX_DELTA_STEP) } else { 0.0 };
            let cost = 20 + if scale > 0.0 { dim } else { 0 } + enc.id_cost(*r, n);
            if enc.len() + cost > max_bytes && enc.n_items + enc.n_pairs > 0 {
                out.push(std::mem::replace(&mut enc, Encoder::new(dim)).finish());
            }
            let k = enc.id(*r, n);
            for v in [k.to_le_bytes(), a.w.to_bits().to_le_bytes(), a.active.to_le_bytes(), db.to_bits().to_le_bytes(), scale.to_bits().to_le_bytes()] {
                enc.items.extend_from_slice(&v);
            }
            if scale > 0.0 {
                enc.items.extend(a.dv.iter().map(|&x| (x / scale).round().clamp(-127.0, 127.0) as i8 as u8));
            }
            enc.n_items += 1;
        }
        for (&(a, b), &w) in &ob.pairs {
            let (Some(&na), Some(&nb)) = (name.get(&a), name.get(&b)) else { continue };
            let cost = 12 + enc.id_cost(a, na) + enc.id_cost(b, nb);
            if enc.len() + cost > max_bytes && enc.n_items + enc.n_pairs > 0 {
                out.push(std::mem::replace(&mut enc, Encoder::new(dim)).finish());
            }
            let (ka, kb) = (enc.id(a, na), enc.id(b, nb));
            for v in [ka.to_le_bytes(), kb.to_le_bytes(), w.to_bits().to_le_bytes()] {
                enc.pairs.extend_from_slice(&v);
            }
            enc.n_pairs += 1;
        }
        if enc.n_items + enc.n_pairs > 0 {
            out.push(enc.finish());
        }
        out
    }

    /// Applies another engine's delta: its items are created if new; their popularity,
    /// activity, factors, bias and co-occurrence move by what the other engine learned.
    /// Nothing is applied if any part of it is invalid (`InvalidArgument`, saying what).
    /// What is applied here is not gathered for this engine's own deltas.
    pub fn apply_item_delta(&self, buf: &[u8]) -> Result<DeltaApplied> {
        let d = decode(buf, self.cfg.dim)?;
        let rows = self.resolve_items(&d.ids);
        let t = self.events();
        let growth = self.cooc_growth(t);
        for (k, w, active, db, dv) in &d.items {
            let r = rows[*k as usize];
            let i = r as usize;
            if *w > 0.0 {
                self.item_weight.get(i).fetch_add(w * growth);
                self.bump_pop(r, *w, t);
                let h = self.ring_head.fetch_add(1, Relaxed);
                self.ring[h % RING].store(r as u64, Relaxed);
            }
            let act = self.item_active.get(i);
            if act.load(Relaxed) < *active {
                act.store((*active).min(Self::secs(self.clock()).max(act.load(Relaxed))), Relaxed);
            }
            if *db != 0.0 {
                self.item_bias.get(i).fetch_add(*db);
            }
            for (a, x) in self.items.row(r).iter().zip(dv) {
                a.fetch_add(*x);
            }
        }
        let cap = self.cfg.max_neighbors;
        for &(a, b, w) in &d.pairs {
            if w > 0.0 {
                self.neighbors.get(rows[a as usize] as usize).lock().add(rows[b as usize], w * growth, cap);
            }
        }
        Ok(DeltaApplied { items: d.items.len(), pairs: d.pairs.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(seed: u64) -> Model {
        Model::new(Config { dim: 8, seed, snapshot_every: 1, snapshot_ms: 0, ..Config::default() }).unwrap()
    }

    #[test]
    fn a_delta_carries_pairs_popularity_and_factors_to_another_model() {
        let (a, b) = (model(1), model(2));
        a.share_items(1000);
        a.learn_many(&["u1", "u1", "u2", "u2"], &["lamp", "bulb", "lamp", "bulb"], &[3, 3, 3, 3], &[1.0, 2.0, 3.0, 4.0], &[]).unwrap();
        let before = a.items.row(a.items.ids().get("lamp").unwrap()).iter().map(|x| x.load()).collect::<Vec<_>>();
        let mut deltas = a.take_item_delta(1 << 20);
        assert_eq!(deltas.len(), 1);
        let delta = deltas.pop().unwrap();
        assert!(a.take_item_delta(1 << 20).is_empty(), "the outbox is empty after a take");
        b.learn_many(&["v1"], &["lamp"], &[0], &[1.0], &[]).unwrap();
        let lamp_b = b.items.ids().get("lamp").unwrap();
        let v0: Vec<f32> = b.items.row(lamp_b).iter().map(|x| x.load()).collect();
        let got = b.apply_item_delta(&delta).unwrap();
        assert_eq!(got.items, 2);
        assert!(got.pairs >= 2, "{got:?}");
        // Pairs: b now co-lists bulb with lamp although none of its users did.
        let bulb_b = b.items.ids().get("bulb").expect("bulb created by the delta");
        assert!(b.neighbors_of(lamp_b).iter().any(|&(r, w)| r == bulb_b && w > 0.0));
        // Popularity follows.
        assert!(b.item_weight.get(bulb_b as usize).load() > 0.0);
        // Factors moved by what a learned (quantised: within a step of the scale).
        let v1: Vec<f32> = b.items.row(lamp_b).iter().map(|x| x.load()).collect();
        let init = model(1);
        init.resolve_items(&["lamp"]);
        let start: Vec<f32> = init.items.row(0).iter().map(|x| x.load()).collect();
        let learned: Vec<f32> = before.iter().zip(&start).map(|(x, s)| x - s).collect();
        let moved: Vec<f32> = v1.iter().zip(&v0).map(|(x, y)| x - y).collect();
        let amax = learned.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(amax > 0.0);
        for (m, l) in moved.iter().zip(&learned) {
            assert!((m - l).abs() <= amax / 127.0 + 1e-6, "moved {m} learned {l}");
        }
        // What b applied is not in b's own outbox.
        b.share_items(10);
        b.apply_item_delta(&delta).unwrap();
        assert!(b.take_item_delta(1 << 20).is_empty());
    }

    #[test]
    fn a_replay_for_users_only_adds_nothing_to_items_and_shares_nothing() {
        let (a, b) = (model(1), model(2));
        a.share_items(1000);
        b.share_items(1000);
        let (users, items) = (["u1", "u1", "u1", "u2"], ["lamp", "bulb", "shade", "lamp"]);
        a.learn_many(&users, &items, &[3, 3, 3, 3], &[1.0, 2.0, 3.0, 4.0], &[]).unwrap();
        for d in a.take_item_delta(1 << 20) {
            b.apply_item_delta(&d).unwrap();
        }
        let items_of = |m: &Model| {
            let ids = m.items.ids();
            ["lamp", "bulb", "shade"].map(|x| {
                let r = ids.get(x).unwrap();
                (m.item_weight.get(r as usize).load(), m.item_bias.get(r as usize).load(),
                 m.items.row(r).iter().map(|v| v.load()).collect::<Vec<_>>(), m.neighbors_of(r))
            })
        };
        let before = items_of(&b);
        // b takes the users over and replays their events: for the users only, unshared.
        b.set_replay(false, false);
        b.learn_many(&users, &items, &[3, 3, 3, 3], &[1.0, 2.0, 3.0, 4.0], &[]).unwrap();
        b.set_replay(true, true);
        assert_eq!(items_of(&b), before, "the items are as the delta left them");
        assert!(b.take_item_delta(1 << 20).is_empty(), "nothing to share again");
        let u1 = b.users.ids().get("u1").expect("u1 learned");
        assert!(b.users.row(u1).iter().any(|x| x.load() != 0.0));
        // Normal learning again: items move and are shared.
        b.learn_many(&["u1"], &["bulb"], &[3], &[5.0], &[]).unwrap();
        assert_ne!(items_of(&b)[1].0, before[1].0);
        assert_eq!(b.take_item_delta(1 << 20).len(), 1);
        // Unshared but whole (a restart replaying its own events): items move, nothing is shared.
        b.set_replay(false, true);
        b.learn_many(&["u2"], &["shade"], &[3], &[6.0], &[]).unwrap();
        b.set_replay(true, true);
        assert!(b.take_item_delta(1 << 20).is_empty());
    }

    #[test]
    fn hostile_deltas_are_refused_whole() {
        let (a, b) = (model(1), model(2));
        a.share_items(100);
        a.learn_many(&["u", "u"], &["x", "y"], &[3, 3], &[1.0, 2.0], &[]).unwrap();
        let good = a.take_item_delta(1 << 20).pop().unwrap();
        b.apply_item_delta(&good).unwrap();
        let n = b.n_items();
        for cut in [0, 3, 5, 9, good.len() / 2, good.len() - 1] {
            assert!(b.apply_item_delta(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(b.apply_item_delta(&long).is_err());
        let mut huge = good[..6].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(b.apply_item_delta(&huge).is_err());
        let other_dim = Model::new(Config { dim: 4, ..Config::default() }).unwrap();
        assert!(other_dim.apply_item_delta(&good).is_err());
        // A NaN weight anywhere refuses the whole delta.
        let mut nan = good.clone();
        let p = 4 + 2 + 4 + 2 + 1 + 2 + 1 + 4 + 4; // the first item's weight: after magic, dim, ids ("x", "y"), n_items, id
        nan[p..p + 4].copy_from_slice(&f32::NAN.to_bits().to_le_bytes());
        assert!(b.apply_item_delta(&nan).is_err());
        // A step no learning makes (a factor scale or bias change beyond the bound) is refused.
        for (at, v) in [(p + 12, 2.0f32), (p + 8, 1e6f32)] {
            let mut big = good.clone();
            big[at..at + 4].copy_from_slice(&v.to_bits().to_le_bytes());
            assert!(b.apply_item_delta(&big).is_err(), "field at {at} = {v}");
        }
        assert_eq!(b.n_items(), n, "nothing was created by a refused delta");
    }

    #[test]
    fn the_outbox_is_bounded_and_counts_what_it_drops() {
        let a = model(1);
        a.share_items(3);
        let users: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
        let items: Vec<String> = (0..50).map(|i| format!("i{i}")).collect();
        a.learn_many(&users, &items, &[], &[], &[]).unwrap();
        assert!(a.item_delta_dropped() > 0);
        let d = a.take_item_delta(1 << 20);
        let b = model(2);
        assert!(d.iter().map(|d| b.apply_item_delta(d).unwrap().items).sum::<usize>() <= 3);
    }

    #[test]
    fn a_large_outbox_is_taken_in_deltas_of_bounded_size_that_add_up() {
        let (a, b, c) = (model(1), model(2), model(3));
        a.share_items(100_000);
        let n = 3000;
        let users: Vec<String> = (0..n).map(|i| format!("user-{}", i / 3)).collect();
        let items: Vec<String> = (0..n).map(|i| format!("item-with-a-longish-id-{}", i % 997)).collect();
        a.learn_many(&users, &items, &[], &[], &[]).unwrap();
        let whole = {
            let x = Model::new(a.cfg.clone()).unwrap();
            x.share_items(100_000);
            x.learn_many(&users, &items, &[], &[], &[]).unwrap();
            x.take_item_delta(usize::MAX)
        };
        assert_eq!(whole.len(), 1);
        let parts = a.take_item_delta(20_000);
        assert!(parts.len() > 3, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.len() <= 20_000));
        let got: (usize, usize) = parts.iter().map(|p| b.apply_item_delta(p).unwrap()).fold((0, 0), |s, d| (s.0 + d.items, s.1 + d.pairs));
        let one = c.apply_item_delta(&whole[0]).unwrap();
        assert_eq!(got, (one.items, one.pairs));
        assert_eq!(b.n_items(), c.n_items());
    }
}
