//! The online recommender: implicit-feedback matrix factorisation (BPR with sampled
//! negatives) and an item-to-item co-occurrence signal, both learned from each event the
//! moment it arrives, combined with a trending-popularity prior when scoring.
//!
//! Concurrency: any number of threads may call [`Model::learn_many`] and the scoring
//! methods at once.
//! - Factors and biases are [`AtomicF32`] rows in tables that never move (see
//!   [`crate::table`]); learners update them lock-free (Hogwild-style relaxed stores).
//! - Per-user state (recent items, seen set) and per-item neighbour lists sit behind one
//!   small `parking_lot::Mutex` each; a thread holds at most one user lock and one item
//!   lock, always user before item, so there is no lock-order cycle and no deadlock.
//! - Scoring reads an immutable snapshot of the item matrix published by an atomic pointer
//!   swap (`arc_swap`), rebuilt every `snapshot_every` events or `snapshot_ms` ms.
//!   The snapshot holds the live items only (retired and free rows are left out), so
//!   scoring costs what the live items cost; items added since are scored by co-occurrence
//!   and text at once, after the snapshot (next rebuild) by their factors too.
//! - Memory is bounded and users can be erased: see the `expire` submodule
//!   (`model/expire.rs`) for user expiry and the cap, item retirement, context admission and
//!   pruning, `forget`, and why reusing rows under concurrent readers stays sound.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use rayon::prelude::*;

use crate::config::{event_index, Config, Weights, MAX_WEIGHT, RECENT_CAP};
use crate::context::{keys_of_all, MAX_EVENT_CTX};
use crate::error::Result;
use crate::invalid;
use crate::kernels::{self, SimdLevel, TopK};
use crate::prefetch::{prefetch, prefetch_lines, prefetch_ptr};
use crate::segmented::Segmented;
use crate::table::{load_row, store_row, AtomicF32, EmbeddingTable};

/// What the learner remembers about one user. The recent items are inline, so the whole
/// state but the seen set sits in a few cache lines the learner can prefetch.
#[derive(Clone, Debug, PartialEq)]
pub struct UserState {
    /// Most recent first: (item row, session number); `n_recent` are valid.
    recent: [(u32, u32); RECENT_CAP],
    n_recent: u32,
    /// Items with a positive event, sorted (excluded from recommendations by default).
    seen: Vec<u32>,
    /// Positive events learned.
    pub events: u32,
    /// Time of the last event (seconds), NaN when no time was given.
    pub last_ts: f64,
    /// Current session number.
    pub session: u32,
    /// The session's intent: the last search, while its session lasts.
    pub intent: Option<Box<Intent>>,
    /// The event count at the user's last activity (its creation, an event, a search):
    /// the order in which the user cap evicts (least recently active first).
    pub last_seq: u64,
    /// Event time (seconds) of the last activity; the model's clock for events without a
    /// time. What idle expiry compares with `user_idle`.
    pub active_ts: f64,
}

/// What a shopper is looking for in this session (from a search).
#[derive(Clone, Debug, PartialEq)]
pub struct Intent {
    /// The search terms, as given.
    pub query: String,
    /// Context rows of the intent words (`intent=<word>`).
    pub rows: Vec<u32>,
    /// The session the search was made in; the intent ends with it.
    pub session: u32,
}

impl Default for UserState {
    fn default() -> Self {
        UserState { recent: [(0, 0); RECENT_CAP], n_recent: 0, seen: Vec::new(), events: 0, last_ts: f64::NAN, session: 0, intent: None, last_seq: 0, active_ts: 0.0 }
    }
}

impl UserState {
    /// Recent (item, session) pairs, most recent first.
    pub fn recent(&self) -> &[(u32, u32)] {
        &self.recent[..self.n_recent as usize]
    }

    /// Moves `item` to the front of the recent items, keeping at most `window`.
    pub fn push_recent(&mut self, item: u32, session: u32, window: usize) {
        let window = window.min(RECENT_CAP);
        if window == 0 {
            return;
        }
        let n = self.n_recent as usize;
        // The shift ends at the item's old place (the length stays), or drops the oldest
        // item once the window is full.
        let (end, len) = match self.recent[..n].iter().position(|r| r.0 == item) {
            Some(p) => (p, n),
            None => (n.min(window - 1), (n + 1).min(window)),
        };
        self.recent.copy_within(0..end, 1);
        self.recent[0] = (item, session);
        self.n_recent = len as u32;
    }
}

impl UserState {
    /// Starts a new session after `gap` seconds of silence (the session's intent ends with
    /// it) and records the event time.
    pub fn advance_session(&mut self, ts: f64, gap: f64) {
        if ts.is_finite() && self.last_ts.is_finite() && ts - self.last_ts > gap {
            self.session += 1;
        }
        if ts.is_finite() {
            self.last_ts = ts;
        }
        if self.intent.as_ref().is_some_and(|i| i.session != self.session) {
            self.intent = None;
        }
    }

    /// Items with a positive event, sorted.
    pub fn seen(&self) -> &[u32] {
        &self.seen
    }

    /// Whether the user had a positive event on `item`.
    pub fn has_seen(&self, item: u32) -> bool {
        self.seen.binary_search(&item).is_ok()
    }

    /// Records a positive event on `item`.
    pub fn see(&mut self, item: u32) {
        if let Err(p) = self.seen.binary_search(&item) {
            self.seen.insert(p, item);
        }
    }

    /// Records an activity at event count `seq` and event time `ts` (NaN: the clock `now`).
    #[inline]
    pub fn touch(&mut self, seq: u64, ts: f64, now: f64) {
        self.last_seq = self.last_seq.max(seq);
        let t = if ts.is_finite() { ts } else { now };
        if t > self.active_ts {
            self.active_ts = t;
        }
    }

    /// Drops the items `gone` says are gone from the recent and seen items, and context
    /// rows `ctx_gone` says are gone from the intent (rows about to be reused).
    pub fn purge(&mut self, gone: impl Fn(u32) -> bool, ctx_gone: impl Fn(u32) -> bool) {
        let mut k = 0;
        for j in 0..self.n_recent as usize {
            if !gone(self.recent[j].0) {
                self.recent[k] = self.recent[j];
                k += 1;
            }
        }
        self.n_recent = k as u32;
        self.seen.retain(|&i| !gone(i));
        if let Some(it) = self.intent.as_mut() {
            it.rows.retain(|&c| !ctx_gone(c));
        }
    }
}

pub use crate::cooc::NeighborList;

mod expire;
pub use expire::{Expired, RowStats};
mod rank;
pub use rank::Why;
mod delta;
mod handover;
pub use delta::{DeltaApplied, MAX_DELTA_ID, MAX_DELTA_ROWS};

/// The immutable item matrix that scoring reads. See the module docs.
pub struct ItemSnapshot {
    /// Items scored: the live items when the snapshot was built.
    pub n: usize,
    /// The item row of each place in the snapshot (places `0..n`).
    pub rows: Vec<u32>,
    /// The place of each item row `0..slot.len()` (`u32::MAX`: retired or free, not scored).
    pub slot: Vec<u32>,
    /// The item-set generation the snapshot was built from.
    gen: u64,
    /// Item factors in bfloat16 (half the bytes to scan), row-major.
    pub vecs: Vec<u16>,
    /// Euclidean norm of each item's factors.
    pub norms: Vec<f32>,
    pub bias: Vec<f32>,
    /// Trending popularity, scaled so that the maximum is 1.
    pub pop: Vec<f32>,
    /// Item rows by trending popularity, best first (at most 1,000).
    pub popular: Vec<u32>,
    /// Items introduced by their metadata that are still new (candidates for exploration).
    pub fresh: Vec<u32>,
    events: u64,
    built: Instant,
}

/// The context rows of one event (`NO_CTX` pads).
pub type CtxRows = [u32; MAX_EVENT_CTX];
/// Padding of [`CtxRows`].
pub const NO_CTX: u32 = u32::MAX;

/// One event, with rows already resolved.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub user: u32,
    pub item: u32,
    pub kind: u8,
    pub weight: f32,
    pub ts: f64,
    /// Context rows of the event ([`NO_CTX`] pads).
    pub ctx: CtxRows,
}

/// Options of one scoring call.
#[derive(Default, Clone, Debug)]
pub struct Query<'a> {
    pub k: usize,
    pub exclude: &'a [u32],
    pub allow: Option<&'a [u32]>,
    pub exclude_seen: bool,
    /// Context rows of the request (from [`Model::context_rows`]).
    pub ctx: &'a [u32],
    /// Intent words of the request; `None` uses the session's intent (the last search).
    pub intent: Option<&'a str>,
    /// Slots at the end of the list given to new items (exploration); 0 gives none.
    pub explore: usize,
    /// The time of the request (seconds), when known: after `session_gap` seconds of
    /// silence a new session starts, and the history counts `new_session_weight` times.
    pub ts: Option<f64>,
    /// Scoring weights for this request instead of the model's (an experiment variant
    /// that scores differently); `None` scores with the configured ones.
    pub weights: Option<Weights>,
}

/// A small, fast random generator (SplitMix64); one per learning call.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, n).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 32) * n as u64 >> 32) as usize
    }
    /// Uniform in [-1, 1).
    #[inline]
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

const RING: usize = 4096;
/// Trending and new items added to the ranker's candidates (each) when the blend left them out.
const EXTRA_CANDIDATES: usize = 20;
/// Bound of the exponent of the context factor (e^20 keeps every score finite).
const MAX_CTX_EXP: f32 = 20.0;
/// The default of the `max_context_keys` option: the most context values the model keeps
/// (an embedding each); past it, new values are ignored like unknown ones until `expire`
/// prunes the least recently seen, so free text cannot grow it forever.
pub const MAX_CONTEXT_KEYS: usize = 200_000;
/// Context values waiting for admission (seen fewer than `ctx_min_count` times) that are
/// counted at once; when the table is full every count is halved and those at zero are
/// dropped, so a value seen once among many others is forgotten.
pub const CTX_CANDIDATES: usize = 65_536;
/// The most evicted user ids kept for [`Model::drain_evicted`] between two drains (the
/// oldest are dropped past it, and counted).
pub const EVICTED_CAP: usize = 1_000_000;
/// Item flag: in the catalogue (never retired).
const ITEM_PINNED: u8 = 1;
/// Item flag: retired or free (not sampled as a negative, not scored).
const ITEM_DEAD: u8 = 2;
/// Items whose text a new item's starting vector is averaged from.
const COLD_START_NEIGHBORS: usize = 10;
/// The most new items kept as exploration candidates.
const MAX_FRESH: usize = 1000;
/// How many events ahead [`Model::learn_events`] prefetches.
const PREFETCH_DISTANCE: usize = 8;
/// How many events ahead the neighbour lists of the coming pairs are prefetched.
const PREFETCH_NEAR: usize = 3;
/// Prefetches what adding a pair to a locked neighbour list reads: the lock, the header and
/// the ids (the weights are read for one entry, or one eviction window).
#[inline(always)]
fn prefetch_neighbors(l: &Mutex<NeighborList>) {
    let base = l as *const Mutex<NeighborList> as *const u8;
    for off in (0..crate::cooc::SCAN_BYTES + 8).step_by(64) {
        prefetch_ptr(base.wrapping_add(off));
    }
}

/// Events per chunk of [`Model::learn_events`] (negatives are drawn per chunk).
const CHUNK: usize = 1024;

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The online recommender. See the module docs.
pub struct Model {
    cfg: Config,
    level: SimdLevel,
    users: EmbeddingTable,
    items: EmbeddingTable,
    user_state: Segmented<Mutex<UserState>>,
    neighbors: Segmented<Mutex<NeighborList>>,
    item_bias: Segmented<AtomicF32>,
    /// Weighted count of positive events per item (co-occurrence normalisation).
    item_weight: Segmented<AtomicF32>,
    /// Trending popularity per item: (f32 value bits << 32) | tick, decayed lazily.
    item_pop: Segmented<AtomicU64>,
    /// Event time (whole seconds) of each item's last positive event or creation.
    item_active: Segmented<AtomicU32>,
    /// [`ITEM_PINNED`], [`ITEM_DEAD`].
    item_flags: Segmented<AtomicU8>,
    /// Item rows with [`ITEM_DEAD`] set (0: no flag needs a look when sampling).
    items_dead: AtomicUsize,
    /// Item rows ever allocated (live, retired and free).
    item_hw: AtomicUsize,
    /// Bumped whenever rows change owner (an item retired, a free row reused): the snapshot's cue.
    item_gen: AtomicU64,
    /// The newest event time seen (f64 bits, seconds): "now" for idle expiry.
    clock: AtomicU64,
    /// Users evicted by the cap during learning, for [`Model::drain_evicted`].
    evicted: Mutex<VecDeque<String>>,
    evicted_dropped: AtomicU64,
    /// The least recently active users (last_seq, row), most recent first, from the last
    /// scan: the cap evicts from its end, skipping users active since.
    lru: Mutex<Vec<(u64, u32)>>,
    /// Serialises maintenance (expiry, the cap, forgetting).
    maint: Mutex<()>,
    /// Clock (f64 bits) when each context key was last seen in learning.
    ctx_seen: Segmented<AtomicU64>,
    /// Context values seen but not admitted yet, with their counts.
    ctx_cand: Mutex<hashbrown::HashMap<Box<str>, u32>>,
    /// Recent positive items, for popularity-proportional negatives.
    ring: Box<[AtomicU64]>,
    ring_head: AtomicUsize,
    events: AtomicU64,
    /// Adaptation after a detected drift: until `events` reaches `adapt_until`, the
    /// learning rate is multiplied by `adapt_lr` and scoring uses `adapt_recency`.
    adapt_until: AtomicU64,
    adapt_lr: AtomicF32,
    adapt_recency: AtomicF32,
    adaptations: AtomicU64,
    /// Forward-decay base of the co-occurrence weights (see `cooc_growth`).
    cooc_base: AtomicU64,
    rescale_lock: Mutex<()>,
    snap: ArcSwap<ItemSnapshot>,
    snap_lock: Mutex<()>,
    text: crate::text::TextIndex,
    /// Context embeddings (`field=value` rows), zero until learned.
    ctx: EmbeddingTable,
    /// Items introduced by their metadata while the shop runs, with the event count at
    /// their introduction, oldest first, until they are no longer new.
    fresh: Mutex<Vec<(u32, u64)>>,
    /// The learned second stage of scoring (see [`crate::ranker`]).
    ranker: crate::ranker::Ranker,
    /// What learning did to items since the last [`Model::take_item_delta`] (None: not
    /// shared), and whether it is gathered at all (read without the lock by learning).
    share: Mutex<Option<delta::Outbox>>,
    share_on: std::sync::atomic::AtomicBool,
    /// Events are learned for their users only (see [`Model::set_replay`]).
    items_frozen: std::sync::atomic::AtomicBool,
}

impl Model {
    /// A new, empty model. Fails with `InvalidArgument` on an invalid configuration.
    pub fn new(cfg: Config) -> Result<Model> {
        cfg.validate()?;
        let level = match SimdLevel::parse(&cfg.simd) {
            Some(l) if l.supported() => l,
            Some(l) => return invalid!("SIMD level {} is not supported by this CPU", l.name()),
            None => return invalid!("unknown SIMD level {:?}", cfg.simd),
        };
        let dim = cfg.dim;
        Ok(Model {
            level,
            users: EmbeddingTable::new(dim),
            items: EmbeddingTable::new(dim),
            user_state: Segmented::new(1),
            neighbors: Segmented::new(1),
            item_bias: Segmented::new(1),
            item_weight: Segmented::new(1),
            item_pop: Segmented::new(1),
            item_active: Segmented::new(1),
            item_flags: Segmented::new(1),
            items_dead: AtomicUsize::new(0),
            item_hw: AtomicUsize::new(0),
            item_gen: AtomicU64::new(0),
            clock: AtomicU64::new(0f64.to_bits()),
            evicted: Mutex::new(VecDeque::new()),
            evicted_dropped: AtomicU64::new(0),
            lru: Mutex::new(Vec::new()),
            maint: Mutex::new(()),
            ctx_seen: Segmented::new(1),
            ctx_cand: Mutex::new(hashbrown::HashMap::new()),
            ring: (0..RING).map(|_| AtomicU64::new(u64::MAX)).collect(),
            ring_head: AtomicUsize::new(0),
            events: AtomicU64::new(0),
            adapt_until: AtomicU64::new(0),
            adapt_lr: AtomicF32::default(),
            adapt_recency: AtomicF32::default(),
            adaptations: AtomicU64::new(0),
            cooc_base: AtomicU64::new(0),
            rescale_lock: Mutex::new(()),
            snap: ArcSwap::from_pointee(ItemSnapshot::empty()),
            snap_lock: Mutex::new(()),
            text: crate::text::TextIndex::default(),
            ctx: EmbeddingTable::new(dim),
            fresh: Mutex::new(Vec::new()),
            ranker: crate::ranker::Ranker::new(if cfg.ranker { cfg.ranker_cache } else { 0 }, cfg.ranker_lr),
            share: Mutex::new(None),
            share_on: std::sync::atomic::AtomicBool::new(false),
            items_frozen: std::sync::atomic::AtomicBool::new(false),
            cfg,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn simd_level(&self) -> SimdLevel {
        self.level
    }

    pub fn users(&self) -> &EmbeddingTable {
        &self.users
    }

    pub fn items(&self) -> &EmbeddingTable {
        &self.items
    }

    /// The context embeddings (`field=value` keys).
    pub fn contexts(&self) -> &EmbeddingTable {
        &self.ctx
    }

    /// Context rows of `field=value` keys (see [`crate::context`]); with `create`, unseen
    /// keys get new rows (zero vectors), otherwise they are left out.
    ///
    /// With `create` (learning), each key counts as seen once; see [`Model::admit_context`].
    pub fn context_rows<S: AsRef<str>>(&self, keys: &[S], create: bool) -> Vec<u32> {
        if create {
            self.admit_context(keys, 1)
        } else {
            self.ctx.ids().get_many(keys).into_iter().filter(|&r| r != u32::MAX).collect()
        }
    }

    /// Rows of context keys seen `times` times in learning (in key order, the ones without a
    /// row left out). A known key is marked seen now; an unknown one is counted in a bounded
    /// candidate table and becomes a key (a zero vector) once seen `ctx_min_count` times (an
    /// intent word that some item's text holds: at once), while
    /// the table holds fewer than `max_context_keys`: a random free-text value seen once
    /// never gets a row, a real one repeated a few times does.
    pub fn admit_context<S: AsRef<str>>(&self, keys: &[S], times: u32) -> Vec<u32> {
        let rows = self.ctx.ids().get_many(keys);
        let now = self.clock.load(Relaxed);
        let mut out: Vec<u32> = Vec::with_capacity(keys.len());
        let mut admit: Vec<&str> = Vec::new();
        for (k, &r) in keys.iter().zip(&rows) {
            if r != u32::MAX {
                let c = self.ctx_seen.get(r as usize);
                if c.load(Relaxed) != now {
                    c.store(now, Relaxed);
                }
            } else {
                admit.push(k.as_ref());
            }
        }
        let min = self.cfg.ctx_min_count.max(1);
        if !admit.is_empty() && min > times {
            let mut cand = self.ctx_cand.lock();
            admit.retain(|k| {
                // A search word the catalogue's text uses is no random text: admitted at once.
                if k.strip_prefix("intent=").is_some_and(|w| self.text.has_word(w)) {
                    return true;
                }
                if let Some(c) = cand.get_mut(*k) {
                    *c = c.saturating_add(times);
                    if *c >= min {
                        cand.remove(*k);
                        return true;
                    }
                    return false;
                }
                if cand.len() >= CTX_CANDIDATES {
                    cand.retain(|_, c| {
                        *c /= 2;
                        *c > 0
                    });
                    if cand.len() >= CTX_CANDIDATES {
                        cand.clear();
                    }
                }
                cand.insert((*k).into(), times);
                false
            });
        }
        let max = self.cfg.max_context_keys;
        let created: Vec<u32> = if !admit.is_empty() && (max == 0 || self.ctx.len() < max) {
            self.ctx.resolve_many(&admit, |r, row| {
                self.ctx_seen.ensure(r as usize + 1);
                self.ctx_seen.get(r as usize).store(now, Relaxed);
                row.iter().for_each(|a| a.store(0.0));
            })
        } else {
            Vec::new()
        };
        let mut created = created.into_iter();
        let admitted: hashbrown::HashSet<&str> = admit.iter().copied().collect();
        for (k, &r) in keys.iter().zip(&rows) {
            if r != u32::MAX {
                out.push(r);
            } else if admitted.contains(k.as_ref()) {
                if let Some(c) = created.next() {
                    out.push(c);
                }
            }
        }
        out
    }

    /// Context rows of each event from its (field, value) pairs, creating unseen keys.
    pub fn event_context<F: AsRef<str>, V: AsRef<str>>(&self, pairs: &[Vec<(F, V)>]) -> Vec<CtxRows> {
        pairs
            .iter()
            .map(|p| {
                let keys = keys_of_all(p);
                let mut out = [NO_CTX; MAX_EVENT_CTX];
                for (o, r) in out.iter_mut().zip(self.context_rows(&keys, true)) {
                    *o = r;
                }
                out
            })
            .collect()
    }

    /// Users held now.
    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    /// Live items (retired ones not counted).
    pub fn n_items(&self) -> usize {
        self.items.len()
    }

    /// Item rows ever allocated (live, retired and free): the bound of every item row.
    pub fn item_rows(&self) -> usize {
        self.item_hw.load(Relaxed)
    }

    /// The newest event time seen (seconds; 0 before any event with a time).
    pub fn clock(&self) -> f64 {
        f64::from_bits(self.clock.load(Relaxed))
    }

    /// Moves the clock forward to `ts` (never back). Times past year 5000 are ignored.
    fn advance_clock(&self, ts: f64) {
        if !(ts.is_finite() && (0.0..1e11).contains(&ts)) {
            return;
        }
        let mut cur = self.clock.load(Relaxed);
        while f64::from_bits(cur) < ts {
            match self.clock.compare_exchange_weak(cur, ts.to_bits(), Relaxed, Relaxed) {
                Ok(_) => return,
                Err(c) => cur = c,
            }
        }
    }

    /// Event time as the whole seconds kept per item.
    fn secs(ts: f64) -> u32 {
        if ts.is_finite() { ts.clamp(0.0, u32::MAX as f64) as u32 } else { 0 }
    }

    /// Events learned so far.
    pub fn events(&self) -> u64 {
        self.events.load(Relaxed)
    }

    fn init_row(&self, table: u64, row: u32, values: &[AtomicF32]) {
        let mut rng = Rng::new(self.cfg.seed ^ (table << 56) ^ (row as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let a = self.cfg.init_std * 3f32.sqrt();
        for v in values {
            v.store(rng.unit() * a);
        }
    }

    /// Rows of user ids, creating new users.
    ///
    /// A new user may get the row of an evicted one: its state is reset and its factors
    /// initialised before its id becomes visible (under the id map's write lock).
    pub fn resolve_users<S: AsRef<str>>(&self, ids: &[S]) -> Vec<u32> {
        let seq = self.events();
        let now = self.clock();
        self.users.resolve_many(ids, |r, row| {
            self.user_state.ensure(r as usize + 1);
            *self.user_state.get(r as usize).lock() = UserState { last_seq: seq, active_ts: now, ..UserState::default() };
            self.init_row(1, r, row);
        })
    }

    /// Rows of item ids, creating new items.
    ///
    /// A new item may get the row of a retired one: its state is reset first.
    pub fn resolve_items<S: AsRef<str>>(&self, ids: &[S]) -> Vec<u32> {
        let now = Self::secs(self.clock());
        let mut reused = false;
        let rows = self.items.resolve_many(ids, |r, row| {
            let n = r as usize + 1;
            self.ensure_item_rows(n);
            let i = r as usize;
            self.item_bias.get(i).store(0.0);
            self.item_weight.get(i).store(0.0);
            self.item_pop.get(i).store(0, Relaxed);
            self.item_active.get(i).store(now, Relaxed);
            if self.item_flags.get(i).swap(0, Relaxed) & ITEM_DEAD != 0 {
                self.items_dead.fetch_sub(1, Relaxed);
            }
            let mut nb = self.neighbors.get(i).lock();
            if !nb.is_empty() {
                *nb = NeighborList::default();
            }
            drop(nb);
            self.init_row(2, r, row);
            // A reused row changes the snapshot's item set; one added at the end does not.
            reused |= (r as usize) < self.item_hw.fetch_max(n, Relaxed);
        });
        if reused {
            self.item_gen.fetch_add(1, Relaxed);
        }
        rows
    }

    /// Allocates the per-item arrays for rows `0..n`.
    fn ensure_item_rows(&self, n: usize) {
        self.neighbors.ensure(n);
        self.item_bias.ensure(n);
        self.item_weight.ensure(n);
        self.item_pop.ensure(n);
        self.item_active.ensure(n);
        self.item_flags.ensure(n);
    }

    /// Resolves ids and event names into events. `events`, `ts`, `weights` may be empty
    /// (defaults: "view", no time, the event type's weight) or as long as `users`.
    pub fn prepare<S: AsRef<str>, T: AsRef<str>>(
        &self,
        users: &[S],
        items: &[T],
        events: &[u8],
        ts: &[f64],
        weights: &[f32],
    ) -> Result<Vec<Event>> {
        let n = users.len();
        if items.len() != n {
            return invalid!("users and items differ in length ({} and {})", n, items.len());
        }
        for (name, len) in [("events", events.len()), ("ts", ts.len()), ("weights", weights.len())] {
            if len != 0 && len != n {
                return invalid!("{name} has length {len}, expected {n} (the length of users) or none");
            }
        }
        if let Some(&k) = events.iter().find(|&&k| k as usize >= crate::config::EVENT_TYPES.len()) {
            return invalid!("unknown event type code {k}");
        }
        if let Some(w) = weights.iter().find(|w| !(w.is_finite() && w.abs() <= MAX_WEIGHT)) {
            return invalid!("weights must be finite numbers between -{MAX_WEIGHT} and {MAX_WEIGHT}, got {w}");
        }
        // New users and items start at the clock before this batch; their events then move
        // their activity to the events' own times.
        let urows = self.resolve_users(users);
        let irows = self.resolve_items(items);
        if let Some(t) = ts.iter().copied().filter(|t| t.is_finite() && *t < 1e11).reduce(f64::max) {
            self.advance_clock(t);
        }
        Ok((0..n)
            .map(|j| {
                let kind = events.get(j).copied().unwrap_or(0);
                Event {
                    user: urows[j],
                    item: irows[j],
                    kind,
                    weight: weights.get(j).copied().unwrap_or(self.cfg.event_weights[kind as usize]),
                    ts: ts.get(j).copied().unwrap_or(f64::NAN),
                    ctx: [NO_CTX; MAX_EVENT_CTX],
                }
            })
            .collect())
    }

    /// Learns from string ids (the convenience form of [`Model::learn_events`]).
    pub fn learn_many<S: AsRef<str>, T: AsRef<str>>(
        &self,
        users: &[S],
        items: &[T],
        events: &[u8],
        ts: &[f64],
        weights: &[f32],
    ) -> Result<()> {
        let evs = self.prepare(users, items, events, ts, weights)?;
        self.learn_events(&evs);
        self.enforce_user_cap();
        Ok(())
    }

    /// [`Model::learn_many`] with each event's context as (field, value) pairs (one list
    /// per event, or none at all). Unknown fields and values a field cannot take are ignored.
    #[allow(clippy::too_many_arguments)]
    pub fn learn_many_ctx<S: AsRef<str>, T: AsRef<str>, F: AsRef<str>, V: AsRef<str>>(
        &self,
        users: &[S],
        items: &[T],
        events: &[u8],
        ts: &[f64],
        weights: &[f32],
        ctx: &[Vec<(F, V)>],
    ) -> Result<()> {
        if !ctx.is_empty() && ctx.len() != users.len() {
            return invalid!("context has length {}, expected {} (the length of users) or none", ctx.len(), users.len());
        }
        let mut evs = self.prepare(users, items, events, ts, weights)?;
        for (e, c) in evs.iter_mut().zip(self.event_context(ctx)) {
            e.ctx = c;
        }
        self.learn_events(&evs);
        self.enforce_user_cap();
        Ok(())
    }

    /// [`Model::learn_many_ctx`] with the context as columns: (field, one value or None per
    /// event). Each distinct value is normalised and resolved once.
    #[allow(clippy::too_many_arguments)]
    pub fn learn_many_cols<S: AsRef<str>, T: AsRef<str>, F: AsRef<str>, V: AsRef<str>>(
        &self,
        users: &[S],
        items: &[T],
        events: &[u8],
        ts: &[f64],
        weights: &[f32],
        cols: &[(F, Vec<Option<V>>)],
    ) -> Result<()> {
        let n = users.len();
        if let Some((f, c)) = cols.iter().find(|(_, c)| c.len() != n) {
            return invalid!("context {:?} has {} values, expected {n} (one per event)", f.as_ref(), c.len());
        }
        let mut evs = self.prepare(users, items, events, ts, weights)?;
        let mut fill = vec![0usize; n];
        for (f, col) in cols {
            // Each distinct value is counted as often as it occurs (admission), then resolved once.
            let mut counts: hashbrown::HashMap<&str, u32> = hashbrown::HashMap::new();
            for v in col.iter().flatten() {
                *counts.entry(v.as_ref()).or_insert(0) += 1;
            }
            let mut cache: hashbrown::HashMap<&str, Vec<u32>> = hashbrown::HashMap::new();
            for (j, v) in col.iter().enumerate() {
                let Some(v) = v else { continue };
                let rows = cache.entry(v.as_ref()).or_insert_with(|| {
                    let mut keys = Vec::new();
                    crate::context::keys_of(f.as_ref(), v.as_ref(), &mut keys);
                    self.admit_context(&keys, counts.get(v.as_ref()).copied().unwrap_or(1))
                });
                for &r in rows.iter() {
                    if fill[j] < MAX_EVENT_CTX && !evs[j].ctx[..fill[j]].contains(&r) {
                        evs[j].ctx[fill[j]] = r;
                        fill[j] += 1;
                    }
                }
            }
        }
        self.learn_events(&evs);
        self.enforce_user_cap();
        Ok(())
    }

    /// Search events: each query becomes its user's session intent (until the session
    /// ends), which moves matching items up and is learned as context of the session's
    /// next events. Counts as events learned. `ts` may be empty.
    pub fn search_many<S: AsRef<str>, Q: AsRef<str>>(&self, users: &[S], queries: &[Q], ts: &[f64]) -> Result<()> {
        if queries.len() != users.len() || (!ts.is_empty() && ts.len() != users.len()) {
            return invalid!("users, queries and ts differ in length ({}, {}, {})", users.len(), queries.len(), ts.len());
        }
        let rows = self.resolve_users(users);
        if let Some(t) = ts.iter().copied().filter(|t| t.is_finite() && *t < 1e11).reduce(f64::max) {
            self.advance_clock(t);
        }
        let (seq, now) = (self.events(), self.clock());
        for (j, (&u, q)) in rows.iter().zip(queries).enumerate() {
            let q = q.as_ref();
            let keys = keys_of_all(&[("intent", q)]);
            let crow = self.context_rows(&keys, true);
            let mut us = self.user_state.get(u as usize).lock();
            let t = ts.get(j).copied().unwrap_or(f64::NAN);
            us.touch(seq, t, now);
            us.advance_session(t, self.cfg.session_gap);
            us.intent = (!keys.is_empty()).then(|| Box::new(Intent { query: q.chars().take(256).collect(), rows: crow, session: us.session }));
        }
        self.events.fetch_add(users.len() as u64, Relaxed);
        self.enforce_user_cap();
        Ok(())
    }

    /// Learns from one event with string ids and an event-type name.
    pub fn learn_one(&self, user: &str, item: &str, event: &str, ts: Option<f64>, weight: Option<f32>) -> Result<()> {
        let kind = event_index(event)?;
        let w: Vec<f32> = weight.into_iter().collect();
        let t: Vec<f64> = ts.into_iter().collect();
        self.learn_many(&[user], &[item], &[kind], &t, &w)
    }

    /// Learns from resolved events, in order.
    pub fn learn_events(&self, evs: &[Event]) {
        let start = self.events.fetch_add(evs.len() as u64, Relaxed);
        let mut rng = Rng::new(self.cfg.seed ^ start.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED);
        let mut scratch = Scratch::new(self.cfg.dim);
        scratch.now = self.clock();
        if self.share_on.load(Relaxed) {
            scratch.share = Some(delta::Outbox::new(usize::MAX));
        }
        scratch.users_only = self.items_frozen.load(Relaxed);
        let nneg = self.cfg.negatives;
        let mut negs: Vec<u32> = Vec::new();
        for (c, chunk) in evs.chunks(CHUNK).enumerate() {
            // Negatives are drawn for a whole chunk first, so their rows can be prefetched
            // like the event's own.
            let n_items = self.item_rows();
            negs.clear();
            for e in chunk {
                for n in 0..nneg {
                    negs.push(self.sample_negative(e.item, n_items, n, &mut rng).unwrap_or(u32::MAX));
                }
            }
            for (j, e) in chunk.iter().enumerate() {
                // Events touch rows at random: ask for the rows of an event a few steps
                // ahead while this one is learned, so their cache misses overlap.
                if let Some(ahead) = chunk.get(j + PREFETCH_DISTANCE) {
                    let a = j + PREFETCH_DISTANCE;
                    self.prefetch(ahead, &negs[a * nneg..(a + 1) * nneg]);
                }
                if let Some(ahead) = chunk.get(j + PREFETCH_NEAR) {
                    self.prefetch_pairs(ahead);
                }
                let t = start + (c * CHUNK + j) as u64;
                self.learn_event(e, t, &negs[j * nneg..(j + 1) * nneg], &mut scratch);
            }
        }
        if let Some(mut local) = scratch.share.take() {
            self.share_merge(&mut local);
        }
    }

    /// Second stage: the neighbour lists of the items the event will pair with. Their
    /// numbers are in the user's state, prefetched earlier; a busy user lock skips the hint.
    #[inline]
    fn prefetch_pairs(&self, e: &Event) {
        if let Some(us) = self.user_state.get(e.user as usize).try_lock() {
            for &(h, _) in us.recent().iter().take(self.cfg.pair_window) {
                prefetch_neighbors(self.neighbors.get(h as usize));
            }
            // The start of the sorted seen list (the whole list for most users); no search
            // here, which would wait on each miss in turn.
            let seen = us.seen();
            for k in (0..seen.len().min(48)).step_by(16) {
                prefetch_ptr(seen.as_ptr().wrapping_add(k) as *const u8);
            }
        }
    }

    /// Prefetch hints for the memory an event will touch.
    #[inline]
    fn prefetch(&self, e: &Event, negs: &[u32]) {
        let (u, i) = (e.user as usize, e.item as usize);
        let urow = self.users.row(e.user);
        let irow = self.items.row(e.item);
        for off in (0..urow.len()).step_by(16) {
            prefetch(&urow[off]);
            prefetch(&irow[off]);
        }
        for &j in negs.iter().filter(|&&j| j != u32::MAX) {
            let jrow = self.items.row(j);
            for off in (0..jrow.len()).step_by(16) {
                prefetch(&jrow[off]);
            }
            prefetch(self.item_bias.get(j as usize));
        }
        prefetch_lines(self.user_state.get(u));
        prefetch_neighbors(self.neighbors.get(i));
        prefetch(self.item_pop.get(i));
        prefetch(self.item_active.get(i));
        prefetch(self.item_weight.get(i));
        prefetch(self.item_bias.get(i));
    }

    fn learn_event(&self, e: &Event, t: u64, negs: &[u32], s: &mut Scratch) {
        let w = e.weight;
        if w == 0.0 {
            return;
        }
        let cfg = &self.cfg;
        s.recent.clear();
        s.ctx.clear();
        s.ctx.extend(e.ctx.iter().copied().filter(|&c| c != NO_CTX));
        let new_user;
        {
            let mut us = self.user_state.get(e.user as usize).lock();
            us.touch(t, e.ts, s.now);
            new_user = us.events == 0;
            if w > 0.0 {
                us.advance_session(e.ts, cfg.session_gap);
                let session = us.session;
                if let Some(it) = &us.intent {
                    // The session's search is context of what the shopper does next.
                    for &r in &it.rows {
                        if !s.ctx.contains(&r) {
                            s.ctx.push(r);
                        }
                    }
                }
                s.recent.extend(us.recent().iter().take(cfg.pair_window).map(|&(h, sess)| (h, sess == session)));
                us.push_recent(e.item, session, cfg.window);
                us.see(e.item);
                us.events += 1;
            }
        }
        let mut lr = if cfg.lr_decay > 0.0 { cfg.lr / (1.0 + cfg.lr_decay * t as f32).sqrt() } else { cfg.lr };
        if t < self.adapt_until.load(Relaxed) {
            lr *= self.adapt_lr.load();
        }
        if w < 0.0 {
            self.push_down(e.user, e.item, -w * lr, s);
            return;
        }
        if new_user && cfg.fold_in {
            // Fold-in: a new user starts where the first item is, so the very next
            // recommendation already points at that item's neighbourhood.
            for (u, v) in self.users.row(e.user).iter().zip(self.items.row(e.item)) {
                u.store(v.load());
            }
        }
        self.bpr_step(e.user, e.item, w, lr, negs, s);
        // Test-then-learn for the second stage: against what the last request ranked above it.
        if cfg.ranker {
            self.ranker.learn(e.user, e.item, w);
        }
        if s.users_only {
            return; // what the event does to items arrived as another model's delta
        }
        // Co-occurrence: pairs with the user's recent items, weighted by distance and session.
        // Forward decay: a pair learned now weighs growth(t) times one learned at the last
        // rescale, which is the same as every older pair fading with the half-life.
        let growth = self.cooc_growth(t);
        let mut decay = w * growth;
        let back = cfg.backward_weight;
        {
            let mut mine = self.neighbors.get(e.item as usize).lock();
            for &(h, same) in &s.recent {
                if h == e.item {
                    continue;
                }
                let pw = decay * if same { 1.0 } else { cfg.cross_session_weight };
                decay *= cfg.pair_decay;
                if pw <= 0.0 {
                    continue;
                }
                if back > 0.0 {
                    mine.add(h, pw * back, cfg.max_neighbors);
                }
                s.pairs.push((h, pw));
            }
        }
        for &(h, pw) in &s.pairs {
            self.neighbors.get(h as usize).lock().add(e.item, pw, cfg.max_neighbors);
        }
        self.item_weight.get(e.item as usize).fetch_add(w * growth);
        self.bump_pop(e.item, w, t);
        let act = self.item_active.get(e.item as usize);
        let now = Self::secs(if e.ts.is_finite() { e.ts } else { s.now });
        if act.load(Relaxed) < now {
            act.store(now, Relaxed);
        }
        if let Some(ob) = s.share.as_mut() {
            // Shared before forward decay: the receiver applies its own growth.
            for &(h, pw) in &s.pairs {
                let raw = pw / growth;
                ob.pair(h, e.item, raw);
                if back > 0.0 {
                    ob.pair(e.item, h, raw * back);
                }
            }
            ob.positive(e.item, w, now);
        }
        s.pairs.clear();
        let h = self.ring_head.fetch_add(1, Relaxed);
        self.ring[h % RING].store(e.item as u64, Relaxed);
    }

    /// One BPR step for (user, item) against sampled negatives.
    fn bpr_step(&self, u: u32, i: u32, w: f32, lr: f32, negs: &[u32], s: &mut Scratch) {
        let cfg = &self.cfg;
        let (urow, irow) = (self.users.row(u), self.items.row(i));
        load_row(urow, &mut s.u);
        load_row(irow, &mut s.i);
        s.du.iter_mut().for_each(|x| *x = 0.0);
        // Factorisation machine over (user, context..., item): items are ranked by
        // (u + Σ c)·v_i, so the query vector is the user plus the event's context.
        let has_ctx = !s.ctx.is_empty() && cfg.ctx_lr > 0.0;
        s.q.copy_from_slice(&s.u);
        if has_ctx {
            self.add_context_rows(&s.ctx, &mut s.q, &mut s.c);
        }
        let bi = self.item_bias.get(i as usize);
        let mut gi = 0.0f32;
        for &j in negs {
            if j == u32::MAX || j == i {
                continue;
            }
            let jrow = self.items.row(j);
            load_row(jrow, &mut s.j);
            let bj = self.item_bias.get(j as usize);
            // Four partial sums: independent chains the compiler can vectorise.
            let mut acc = [0f32; 4];
            let (u4, i4, j4) = (s.q.chunks_exact(4), s.i.chunks_exact(4), s.j.chunks_exact(4));
            let tail: f32 = u4.remainder().iter().zip(i4.remainder()).zip(j4.remainder()).map(|((u, i), j)| u * (i - j)).sum();
            for ((u, i), j) in u4.zip(i4).zip(j4) {
                for l in 0..4 {
                    acc[l] += u[l] * (i[l] - j[l]);
                }
            }
            let x = bi.load() - bj.load() + (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail;
            let g = w * sigmoid(-x);
            gi += g;
            // New values are computed in plain arrays (vectorised), then stored.
            let (reg, u) = (cfg.reg, &s.q);
            if s.share.is_some() {
                s.old.copy_from_slice(&s.j);
            }
            for ((du, j), (i, u)) in s.du.iter_mut().zip(s.j.iter_mut()).zip(s.i.iter().zip(u)) {
                *du += g * (i - *j);
                *j += lr * (-g * u - reg * *j);
            }
            if s.users_only {
                continue;
            }
            store_row(jrow, &s.j);
            let dbj = lr * (-g - cfg.reg * bj.load());
            bj.store(bj.load() + dbj);
            if let Some(ob) = s.share.as_mut() {
                ob.moved(j, &s.old, &s.j, dbj);
            }
        }
        if gi == 0.0 {
            return;
        }
        let reg = cfg.reg;
        if !s.users_only {
            if s.share.is_some() {
                s.old.copy_from_slice(&s.i);
            }
            for (i, u) in s.i.iter_mut().zip(&s.q) {
                *i += lr * (gi * u - reg * *i);
            }
            store_row(irow, &s.i);
            let dbi = lr * (gi - cfg.reg * bi.load());
            bi.store(bi.load() + dbi);
            if let Some(ob) = s.share.as_mut() {
                ob.moved(i, &s.old, &s.i, dbi);
            }
        }
        for (u, du) in s.u.iter_mut().zip(&s.du) {
            *u += lr * (du - reg * *u);
        }
        store_row(urow, &s.u);
        if has_ctx {
            // A context row has the user's gradient (both add to the query vector).
            let lc = lr * cfg.ctx_lr;
            for &c in &s.ctx {
                let row = self.ctx.row(c);
                load_row(row, &mut s.c);
                for (c, du) in s.c.iter_mut().zip(&s.du) {
                    *c += lc * (du - reg * *c);
                }
                store_row(row, &s.c);
            }
        }
    }

    /// Lowers the score of (user, item): the step for a negative-weight event.
    fn push_down(&self, u: u32, i: u32, step: f32, s: &mut Scratch) {
        let (urow, irow) = (self.users.row(u), self.items.row(i));
        load_row(urow, &mut s.u);
        load_row(irow, &mut s.i);
        let x: f32 = s.u.iter().zip(&s.i).map(|(a, b)| a * b).sum();
        let g = step * sigmoid(x);
        for (d, a) in urow.iter().enumerate() {
            a.store(s.u[d] - g * s.i[d]);
        }
        if s.users_only {
            return;
        }
        for (d, a) in irow.iter().enumerate() {
            a.store(s.i[d] - g * s.u[d]);
        }
        if let Some(ob) = s.share.as_mut() {
            s.old.copy_from_slice(&s.i);
            s.i.iter_mut().zip(&s.u).for_each(|(x, u)| *x -= g * u);
            ob.moved(i, &s.old, &s.i, 0.0);
        }
    }

    /// A negative item: alternately uniform and popularity-proportional (from the ring of
    /// recent positives), never the positive itself.
    fn sample_negative(&self, pos: u32, n_items: usize, n: usize, rng: &mut Rng) -> Option<u32> {
        if n_items < 2 {
            return None;
        }
        for _ in 0..4 {
            let j = if n % 2 == 1 {
                let r = self.ring[rng.below(RING)].load(Relaxed);
                if r == u64::MAX { rng.below(n_items) as u32 } else { r as u32 }
            } else {
                rng.below(n_items) as u32
            };
            // Retired and free rows are no negatives (checked only when there are any).
            if j != pos && (self.items_dead.load(Relaxed) == 0 || self.item_flags.get(j as usize).load(Relaxed) & ITEM_DEAD == 0) {
                return Some(j);
            }
        }
        None
    }

    fn pop_tick(t: u64) -> u32 {
        (t >> 6) as u32
    }

    fn decay_factor(&self, ticks: u32) -> f32 {
        if ticks == 0 {
            return 1.0;
        }
        (-(ticks as f64) * 64.0 * std::f64::consts::LN_2 / self.cfg.pop_half_life).exp() as f32
    }

    fn bump_pop(&self, item: u32, w: f32, t: u64) {
        let cell = self.item_pop.get(item as usize);
        let now = Self::pop_tick(t);
        let mut cur = cell.load(Relaxed);
        loop {
            let (v, tick) = (f32::from_bits((cur >> 32) as u32), cur as u32);
            let v = v * self.decay_factor(now.saturating_sub(tick)) + w;
            let new = ((v.to_bits() as u64) << 32) | now.max(tick) as u64;
            match cell.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(c) => cur = c,
            }
        }
    }

    fn pop_now(&self, item: u32, now: u32) -> f32 {
        let cur = self.item_pop.get(item as usize).load(Relaxed);
        let (v, tick) = (f32::from_bits((cur >> 32) as u32), cur as u32);
        v * self.decay_factor(now.saturating_sub(tick))
    }

    /// Adapts to a detected drift for the next `events` events: the learning rate is
    /// multiplied by `lr_boost` and scoring weighs the user's recent items by
    /// `recency_decay^p` (a smaller value forgets older context faster).
    pub fn adapt(&self, lr_boost: f32, recency_decay: f32, events: u64) -> Result<()> {
        if !(lr_boost.is_finite() && lr_boost > 0.0) {
            return invalid!("lr_boost must be a finite number > 0, got {lr_boost}");
        }
        if !(0.0..=1.0).contains(&recency_decay) {
            return invalid!("recency_decay must be between 0 and 1, got {recency_decay}");
        }
        self.adapt_lr.store(lr_boost);
        self.adapt_recency.store(recency_decay);
        self.adapt_until.store(self.events() + events, Relaxed);
        self.adaptations.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Whether an adaptation is in force, and how many were started.
    pub fn adaptation(&self) -> (bool, u64) {
        (self.events() < self.adapt_until.load(Relaxed), self.adaptations.load(Relaxed))
    }

    /// The weight multiplier of co-occurrence learned at event `t` (1 without decay); when
    /// it gets large, every stored weight is scaled down once and the base moves to `t`.
    fn cooc_growth(&self, t: u64) -> f32 {
        let hl = self.cfg.cooc_half_life;
        if hl <= 0.0 {
            return 1.0;
        }
        let base = self.cooc_base.load(Relaxed);
        let g = (t.saturating_sub(base) as f64 * std::f64::consts::LN_2 / hl).exp();
        if g > 1e9 {
            if let Some(_guard) = self.rescale_lock.try_lock() {
                if self.cooc_base.load(Relaxed) == base {
                    let inv = (1.0 / g) as f32;
                    for r in 0..self.item_rows() {
                        self.neighbors.get(r).lock().scale(inv);
                        let cell = self.item_weight.get(r);
                        cell.store(cell.load() * inv);
                    }
                    self.cooc_base.store(t, Relaxed);
                    return 1.0;
                }
            }
        }
        g as f32
    }

    /// Rebuilds the scoring snapshot now.
    pub fn refresh(&self) {
        let _g = self.snap_lock.lock();
        self.snap.store(Arc::new(self.build_snapshot()));
    }

    fn build_snapshot(&self) -> ItemSnapshot {
        let events = self.events();
        let gen = self.item_gen.load(Relaxed);
        let now = Self::pop_tick(events);
        // Only live items are scored: retired and free rows cost nothing when recommending.
        let live = self.items.ids().live_mask();
        let rows: Vec<u32> = live.iter().enumerate().filter(|x| *x.1).map(|x| x.0 as u32).collect();
        let mut slot = vec![u32::MAX; live.len()];
        for (k, &r) in rows.iter().enumerate() {
            slot[r as usize] = k as u32;
        }
        let n = rows.len();
        let dim = self.cfg.dim.max(1);
        let mut full = vec![0f32; n * dim];
        for (chunk, &r) in full.chunks_exact_mut(dim).zip(&rows) {
            load_row(self.items.row(r), chunk);
        }
        let norms: Vec<f32> = full.chunks_exact(dim).map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt()).collect();
        let vecs: Vec<u16> = full.iter().map(|&x| kernels::bf16::to_bf16(x)).collect();
        let bias: Vec<f32> = rows.iter().map(|&r| self.item_bias.get(r as usize).load()).collect();
        let mut pop: Vec<f32> = rows.iter().map(|&r| self.pop_now(r, now)).collect();
        let max = pop.iter().cloned().fold(0.0f32, f32::max);
        if max > 0.0 {
            pop.iter_mut().for_each(|p| *p /= max);
        }
        let popular = kernels::topk_of_scores(&pop, 1000.min(n)).into_iter().filter(|x| x.1 > 0.0).map(|x| rows[x.0 as usize]).collect();
        let fresh = self.update_fresh(events);
        ItemSnapshot { n, rows, slot, gen, vecs, norms, bias, pop, popular, fresh, events, built: Instant::now() }
    }

    /// Drops the new items whose positive events now weigh `explore_until` (decayed like
    /// the co-occurrence) or that were introduced more than `explore_window` events ago,
    /// keeps the newest [`MAX_FRESH`]; returns them newest first.
    fn update_fresh(&self, events: u64) -> Vec<u32> {
        let hl = self.cfg.cooc_half_life;
        let growth = if hl > 0.0 { (events.saturating_sub(self.cooc_base()) as f64 * std::f64::consts::LN_2 / hl).exp() as f32 } else { 1.0 };
        let limit = self.cfg.explore_until * growth;
        let window = self.cfg.explore_window;
        let mut f = self.fresh.lock();
        f.retain(|&(r, since)| self.item_weight.get(r as usize).load() < limit && events.saturating_sub(since) <= window);
        if f.len() > MAX_FRESH {
            let cut = f.len() - MAX_FRESH;
            f.drain(..cut);
        }
        f.iter().rev().map(|x| x.0).collect()
    }

    /// The current scoring snapshot, rebuilt first when it is due.
    pub fn snapshot(&self) -> Arc<ItemSnapshot> {
        let cur = self.snap.load_full();
        let since = self.events().saturating_sub(cur.events);
        // Items added at the end are scored at once (see `Slots`); reused or retired rows
        // change the set (the generation), which a deterministic model (`snapshot_ms` 0)
        // picks up at once, others within `snapshot_ms`.
        let changed = cur.gen != self.item_gen.load(Relaxed);
        let due = (since > 0 || changed || cur.slot.len() != self.item_rows())
            && ((changed && self.cfg.snapshot_ms == 0)
                || since >= self.cfg.snapshot_every
                || cur.n == 0
                || (self.cfg.snapshot_ms > 0 && cur.built.elapsed().as_millis() as u64 >= self.cfg.snapshot_ms));
        if !due {
            return cur;
        }
        // One thread rebuilds; the others keep reading the current snapshot.
        if let Some(_g) = self.snap_lock.try_lock() {
            let fresh = Arc::new(self.build_snapshot());
            self.snap.store(fresh.clone());
            return fresh;
        }
        cur
    }

    /// The user's state (a copy), if the user is known.
    pub fn user_state(&self, user: &str) -> Option<UserState> {
        let u = self.users.ids().get(user)?;
        Some(self.user_state.get(u as usize).lock().clone())
    }

    /// The weights a query scores with: its own (checked as the configuration's are), or
    /// the configured ones.
    fn weights_of(&self, q: &Query) -> Result<Weights> {
        match q.weights {
            Some(w) => w.validate().map(|()| w),
            None => Ok(self.cfg.weights()),
        }
    }

    /// Top-k items for a user row (`None`: an unknown user, served trending popularity).
    /// Fails with `InvalidArgument` when the query's weights are out of range.
    pub fn recommend_row(&self, user: Option<u32>, q: &Query) -> Result<Vec<(u32, f32)>> {
        let w = self.weights_of(q)?;
        Ok(self.score_row(user, q, &w))
    }

    /// [`Model::recommend_row`] with the weights `w` (checked).
    fn score_row(&self, user: Option<u32>, q: &Query, w: &Weights) -> Vec<(u32, f32)> {
        self.score_full(user, q, w, None)
    }

    /// [`Model::recommend_row`] with the reason of each listed item, in list order.
    pub fn recommend_row_why(&self, user: Option<u32>, q: &Query) -> Result<(Vec<(u32, f32)>, Vec<Why>)> {
        let w = self.weights_of(q)?;
        let mut why = Vec::new();
        let top = self.score_full(user, q, &w, Some(&mut why));
        Ok((top, why))
    }

    /// Scores every item for `user` and returns the top `q.k`: the first stage (the blend
    /// of the signals, with the weights `w`), then the ranker's order of its candidates
    /// when the ranker is on; `why` gets each listed item's reason.
    fn score_full(&self, user: Option<u32>, q: &Query, w: &Weights, mut why: Option<&mut Vec<Why>>) -> Vec<(u32, f32)> {
        let snap = self.snapshot();
        // Scores are kept per place: the snapshot's live items, then the rows added at the
        // end since it was built (so a new item counts at once for co-occurrence and text).
        let sl = Slots::new(&snap, self.item_rows());
        let n = sl.len();
        if n == 0 || q.k == 0 {
            return Vec::new();
        }
        // No list is longer than the catalogue (a huge k must not size buffers).
        let q = &Query { k: q.k.min(n), ..q.clone() };
        let cfg = &self.cfg;
        let mut recent: Vec<(u32, bool)> = Vec::new();
        let mut seen: Vec<u32> = Vec::new();
        let mut has_history = false;
        let mut hist = 1.0f32;
        let mut events = 0u32;
        let mut ctx: Vec<u32> = q.ctx.to_vec();
        let mut intent: Vec<String> = Vec::new();
        if let Some(text) = q.intent {
            intent = crate::text::tokenize(text);
            intent.truncate(crate::context::MAX_INTENT_WORDS);
            let keys: Vec<String> = intent.iter().map(|w| format!("intent={w}")).collect();
            ctx.extend(self.context_rows(&keys, false));
        }
        if let Some(u) = user {
            let us = self.user_state.get(u as usize).lock();
            has_history = us.events > 0;
            events = us.events;
            if let Some(t) = q.ts {
                if t.is_finite() && us.last_ts.is_finite() && t - us.last_ts > cfg.session_gap {
                    hist = cfg.new_session_weight;
                }
            }
            recent.extend(us.recent().iter().map(|r| (r.0, true)));
            if q.exclude_seen {
                seen.extend_from_slice(us.seen());
            }
            // A request in a new session does not carry the last session's search.
            if let (None, Some(it), false) = (q.intent, &us.intent, hist < 1.0) {
                intent = crate::text::tokenize(&it.query);
                intent.truncate(crate::context::MAX_INTENT_WORDS);
                ctx.extend_from_slice(&it.rows);
            }
        }
        ctx.sort_unstable();
        ctx.dedup();
        SCORES.with(|cell| {
            let mut bufs = cell.borrow_mut();
            let (scores, tmp) = &mut *bufs;
            scores.clear();
            scores.resize(n, 0.0);
            // Popularity prior (and the whole answer for a user without history).
            let wp = if has_history { w.w_pop } else { 1.0 };
            for (s, p) in scores.iter_mut().zip(&snap.pop) {
                *s = wp * p;
            }
            if has_history {
                if w.w_cooc > 0.0 {
                    self.add_cooc(&recent, hist, w.w_cooc, &sl, scores, tmp);
                }
                if w.w_text > 0.0 && cfg.text_window > 0 {
                    self.add_text(&recent, hist, w.w_text, &sl, scores, tmp);
                }
            }
            if !intent.is_empty() && w.w_intent > 0.0 {
                self.add_intent(&intent, w.w_intent, &sl, scores, tmp);
            }
            if !ctx.is_empty() && w.w_ctx > 0.0 && snap.n > 0 {
                // Where the shopper's recent items say little (a new session, or no
                // history), the context says more: the inverse of the history's weight.
                let wb = if hist < 1.0 || !has_history { (1.0 / cfg.new_session_weight.max(0.2)).max(1.0) } else { 1.0 };
                self.apply_context(&ctx, &snap, w.w_ctx, wb, scores, tmp);
            }
            if has_history {
                if let Some(u) = user {
                    if w.w_mf > 0.0 && snap.n > 0 {
                        self.add_mf(u, &ctx, &snap, w.w_mf, scores, tmp);
                    }
                }
            }
            for &s in seen.iter().chain(q.exclude) {
                if let Some(x) = sl.of(s).and_then(|p| scores.get_mut(p)) {
                    *x = f32::NEG_INFINITY;
                }
            }
            let ranking = cfg.ranker && cfg.ranker_candidates > 0;
            let k1 = if ranking { q.k.max(cfg.ranker_candidates).min(n) } else { q.k };
            let mut top = if let Some(allow) = q.allow {
                let mut t = TopK::new(k1);
                for &a in allow {
                    if let Some(&s) = sl.of(a).and_then(|p| scores.get(p)) {
                        if s > f32::NEG_INFINITY {
                            t.push(a, s);
                        }
                    }
                }
                t.into_sorted()
            } else {
                let mut t = kernels::topk_of_scores(scores, k1);
                t.iter_mut().for_each(|x| x.0 = sl.row(x.0 as usize));
                t
            };
            // Candidates only if there is anything to rank (an excluded item scores −∞).
            top.retain(|t| t.1 > f32::NEG_INFINITY);
            let mut reasons: Vec<Why> = Vec::new();
            if ranking && !top.is_empty() {
                // The trending and the new items the blend left out are candidates too.
                let allowed: Option<hashbrown::HashSet<u32>> = q.allow.map(|a| a.iter().copied().collect());
                let mut listed: hashbrown::HashSet<u32> = top.iter().map(|t| t.0).collect();
                for &r in snap.popular.iter().take(EXTRA_CANDIDATES).chain(snap.fresh.iter().take(EXTRA_CANDIDATES)) {
                    if listed.contains(&r) || allowed.as_ref().is_some_and(|a| !a.contains(&r)) {
                        continue;
                    }
                    if let Some(&s) = sl.of(r).and_then(|p| scores.get(p)) {
                        if s > f32::NEG_INFINITY {
                            top.push((r, s));
                            listed.insert(r);
                        }
                    }
                }
                let now = q.ts.filter(|t| t.is_finite()).unwrap_or_else(|| self.clock());
                let req = rank::Request { user, recent: &recent, hist, ctx: &ctx, intent: &intent, events, new_session: hist < 1.0 || !has_history, now, weights: w };
                top = self.rank(&req, &top, &sl, why.is_some().then_some(&mut reasons));
                top.truncate(q.k);
                reasons.truncate(q.k);
            }
            if !ranking && why.is_some() && !top.is_empty() {
                // No second stage: the reasons come from the blend's own signals.
                top.truncate(q.k);
                let now = q.ts.filter(|t| t.is_finite()).unwrap_or_else(|| self.clock());
                let req = rank::Request { user, recent: &recent, hist, ctx: &ctx, intent: &intent, events, new_session: hist < 1.0 || !has_history, now, weights: w };
                reasons = self.reasons_of(&req, &top, &sl);
            }
            let mut by: hashbrown::HashMap<u32, Why> = top.iter().zip(std::mem::take(&mut reasons)).map(|(t, r)| (t.0, r)).collect();
            if q.explore > 0 && !snap.fresh.is_empty() {
                explore(&mut top, &snap.fresh, |r| sl.of(r).and_then(|p| scores.get(p)).copied(), q);
            }
            if let Some(out) = why.as_deref_mut() {
                // Reasons in list order (exploration may have changed it); an item with no
                // reason from the ranker is there as new, or by the blend.
                let fresh: hashbrown::HashSet<u32> = snap.fresh.iter().copied().collect();
                out.clear();
                out.extend(top.iter().map(|t| {
                    by.remove(&t.0).unwrap_or_else(|| Why {
                        kind: if fresh.contains(&t.0) { "new" } else if has_history { "blend" } else { "pop" },
                        item: u32::MAX,
                        detail: String::new(),
                        contributions: [0.0; crate::ranker::F],
                    })
                }));
            }
            top
        })
    }

    /// Multiplies each score by `exp(w_ctx * boost * a)`, `a` the item's context affinity
    /// `(Σ c)·v_i` centred on the items' mean (clamped to ±4): the context re-weighs what
    /// the shopper's history and popularity propose, as `P(i | ctx) ∝ P(i) · lift(i, ctx)`.
    fn apply_context(&self, ctx: &[u32], snap: &ItemSnapshot, w_ctx: f32, boost: f32, scores: &mut [f32], tmp: &mut Vec<f32>) {
        if !self.context_z(ctx, snap, tmp) {
            return;
        }
        let w = w_ctx * boost;
        for (s, z) in scores.iter_mut().zip(tmp.iter()) {
            *s *= (w * z).clamp(-MAX_CTX_EXP, MAX_CTX_EXP).exp();
        }
    }

    /// The context affinity of every snapshot item, centred on the mean and clamped to ±4,
    /// into `out`; false when the context vectors are all zero (nothing learned yet).
    fn context_z(&self, ctx: &[u32], snap: &ItemSnapshot, out: &mut Vec<f32>) -> bool {
        let dim = self.cfg.dim;
        let mut qv = vec![0f32; dim];
        self.add_context_rows(ctx, &mut qv, &mut vec![0f32; dim]);
        if qv.iter().all(|&x| x == 0.0) {
            return false;
        }
        out.clear();
        out.resize(snap.n, 0.0);
        kernels::bf16::dot_scores_bf16(self.level, &snap.vecs, dim, &qv, out);
        let nn = snap.n as f64;
        let mean = out.iter().map(|&t| t as f64).sum::<f64>() / nn;
        let m = mean as f32;
        out.iter_mut().for_each(|t| *t = (*t - m).clamp(-4.0, 4.0));
        true
    }

    /// Adds the vectors of the context rows `ctx` to `out` (`row` is scratch of the same width).
    fn add_context_rows(&self, ctx: &[u32], out: &mut [f32], row: &mut [f32]) {
        for &c in ctx {
            load_row(self.ctx.row(c), row);
            out.iter_mut().zip(row.iter()).for_each(|(q, r)| *q += r);
        }
    }

    /// Adds `w_intent * match / max(match)`: the TF-IDF match of the intent words (the
    /// session's last search, or the request's intent) with each item's text.
    fn add_intent(&self, words: &[String], w_intent: f32, sl: &Slots, scores: &mut [f32], tmp: &mut Vec<f32>) {
        tmp.clear();
        tmp.resize(scores.len(), 0.0);
        let max = self.text.add_query_by(words, tmp, |r| sl.of(r));
        if max > 0.0 {
            let a = w_intent / max;
            for (s, t) in scores.iter_mut().zip(tmp.iter()) {
                *s += a * t;
            }
        }
    }

    /// Each context key with its `top` items by affinity (`c·v_i` centred on the items'
    /// mean, positive only; the log-factor scoring applies before `w_ctx`), for serving
    /// context without the core (the sidecar's re-rank).
    pub fn context_affinities(&self, top: usize) -> Vec<(String, Vec<(u32, f32)>)> {
        let snap = self.snapshot();
        let keys = self.ctx.ids().live();
        let mut tmp = Vec::new();
        let mut out = Vec::new();
        for (r, key) in keys {
            if snap.n == 0 || !self.context_z(&[r], &snap, &mut tmp) {
                continue;
            }
            let best: Vec<(u32, f32)> =
                kernels::topk_of_scores(&tmp, top.min(snap.n)).into_iter().filter(|x| x.1 > 0.0).map(|x| (snap.rows[x.0 as usize], x.1)).collect();
            if !best.is_empty() {
                out.push((key, best));
            }
        }
        out
    }

    /// Items introduced by their metadata that are still new, newest first.
    pub fn fresh_items(&self) -> Vec<u32> {
        self.update_fresh(self.events())
    }

    /// Adds `w_mf * z((u + Σ c)·v_i + b_i)` (a z-score over the snapshot's items).
    fn add_mf(&self, u: u32, ctx: &[u32], snap: &ItemSnapshot, w_mf: f32, scores: &mut [f32], tmp: &mut Vec<f32>) {
        let dim = self.cfg.dim;
        let mut uv = vec![0f32; dim];
        load_row(self.users.row(u), &mut uv);
        // The factorisation machine's score: the user plus the context.
        self.add_context_rows(ctx, &mut uv, &mut vec![0f32; dim]);
        tmp.clear();
        tmp.resize(snap.n, 0.0);
        kernels::bf16::dot_scores_bf16(self.level, &snap.vecs, dim, &uv, tmp);
        let mut sum = 0f64;
        let mut sq = 0f64;
        for (t, b) in tmp.iter_mut().zip(&snap.bias) {
            *t += b;
            sum += *t as f64;
            sq += (*t as f64) * (*t as f64);
        }
        let nn = snap.n as f64;
        let mean = sum / nn;
        let sd = ((sq / nn - mean * mean).max(1e-12)).sqrt();
        let a = (w_mf as f64 / sd) as f32;
        let m = mean as f32;
        for (s, t) in scores.iter_mut().zip(tmp.iter()) {
            *s += a * (t - m);
        }
    }

    /// Adds `scale * w_cooc * cooc / max(cooc)` from the user's recent items.
    fn add_cooc(&self, recent: &[(u32, bool)], scale: f32, w_cooc: f32, sl: &Slots, scores: &mut [f32], tmp: &mut Vec<f32>) {
        tmp.clear();
        tmp.resize(scores.len(), 0.0);
        let max = self.cooc_into(recent, &|j| sl.of(j), tmp, None);
        if max > 0.0 {
            let a = scale * w_cooc / max;
            for (s, t) in scores.iter_mut().zip(tmp.iter()) {
                *s += a * t;
            }
        }
    }

    /// Adds `scale * w_text * text / max(text)`: the item-text similarity to the user's
    /// most recent items, weighted by recency.
    fn add_text(&self, recent: &[(u32, bool)], scale: f32, w_text: f32, sl: &Slots, scores: &mut [f32], tmp: &mut Vec<f32>) {
        if self.text.is_empty() {
            return;
        }
        tmp.clear();
        tmp.resize(scores.len(), 0.0);
        let mut w = 1.0f32;
        let from: Vec<(u32, f32)> = recent
            .iter()
            .take(self.cfg.text_window)
            .map(|&(h, _)| {
                let x = (h, w);
                w *= self.cfg.recency_decay;
                x
            })
            .collect();
        let max = self.text.add_similar_by(&from, tmp, |r| sl.of(r));
        if max > 0.0 {
            let a = scale * w_text / max;
            for (s, t) in scores.iter_mut().zip(tmp.iter()) {
                *s += a * t;
            }
        }
    }

    /// Sets the text (title, description) of items, creating the ones not seen yet; a new
    /// item can then be recommended from its text before anyone interacted with it.
    pub fn set_item_text<S: AsRef<str>, T: AsRef<str>>(&self, items: &[S], texts: &[T]) -> Result<()> {
        if items.len() != texts.len() {
            return invalid!("items and texts differ in length ({} and {})", items.len(), texts.len());
        }
        let rows = self.resolve_items(items);
        let had_text: Vec<bool> = rows.iter().map(|&r| !self.text.words_of(r).is_empty()).collect();
        for (r, t) in rows.iter().zip(texts) {
            self.text.set(*r, t.as_ref());
        }
        // Cold start: an item introduced now (no text before, nobody has taken it) while the
        // shop is running starts where the items with the most similar text are (factors
        // and bias), and is marked for exploration. The catalogue loaded before the first
        // event is the shop, not news; a later update of an item's text changes nothing.
        let events = self.events();
        if events == 0 {
            return Ok(());
        }
        let learned = |j: u32| self.item_weight.get(j as usize).load() > 0.0;
        let mut fresh_new = Vec::new();
        for (k, &r) in rows.iter().enumerate() {
            if had_text[k] || learned(r) || self.text.words_of(r).is_empty() || fresh_new.contains(&(r, events)) {
                continue;
            }
            fresh_new.push((r, events));
            let near = self.text.similar_to(r, COLD_START_NEIGHBORS, learned);
            let total: f32 = near.iter().map(|n| n.1).sum();
            if total <= 0.0 {
                continue;
            }
            let dim = self.cfg.dim;
            let (mut v, mut row) = (vec![0f32; dim], vec![0f32; dim]);
            let mut b = 0f32;
            for &(j, w) in &near {
                load_row(self.items.row(j), &mut row);
                v.iter_mut().zip(&row).for_each(|(v, x)| *v += w / total * x);
                b += w / total * self.item_bias.get(j as usize).load();
            }
            store_row(self.items.row(r), &v);
            self.item_bias.get(r as usize).store(b);
        }
        if !fresh_new.is_empty() {
            let mut f = self.fresh.lock();
            f.retain(|x| !fresh_new.iter().any(|y| y.0 == x.0));
            f.extend(fresh_new);
        }
        Ok(())
    }

    /// The words of an item's text, as indexed.
    pub fn item_words(&self, item: u32) -> Vec<String> {
        self.text.words_of(item)
    }

    /// Top-k for many user rows at once, in parallel. Fails like [`Model::recommend_row`].
    pub fn recommend_rows(&self, users: &[Option<u32>], q: &Query) -> Result<Vec<Vec<(u32, f32)>>> {
        let w = self.weights_of(q)?;
        Ok(users.par_iter().map(|u| self.score_row(*u, q, &w)).collect())
    }

    /// [`Model::recommend_rows`] with each listed item's reason.
    pub fn recommend_rows_why(&self, users: &[Option<u32>], q: &Query) -> Result<Vec<(Vec<(u32, f32)>, Vec<Why>)>> {
        let w = self.weights_of(q)?;
        Ok(users
            .par_iter()
            .map(|u| {
                let mut why = Vec::new();
                let top = self.score_full(*u, q, &w, Some(&mut why));
                (top, why)
            })
            .collect())
    }

    /// Items most like `item`: co-occurrence neighbours (`w_cooc`) blended with factor
    /// cosine (`w_mf`), with the configured weights or `weights` (checked as the
    /// configuration's are: out of range is an `InvalidArgument`).
    pub fn similar_row(&self, item: u32, k: usize, weights: Option<Weights>) -> Result<Vec<(u32, f32)>> {
        let w = self.weights_of(&Query { weights, ..Default::default() })?;
        let snap = self.snapshot();
        let sl = Slots::new(&snap, self.item_rows());
        let mut scores = vec![0f32; sl.len()];
        let cfg = &self.cfg;
        if let Some(p) = sl.of(item).filter(|&p| p < snap.n && w.w_mf > 0.0) {
            let dim = cfg.dim;
            let v: Vec<f32> = snap.vecs[p * dim..(p + 1) * dim].iter().map(|&h| kernels::bf16::from_bf16(h)).collect();
            let mut tmp = vec![0f32; snap.n];
            kernels::bf16::dot_scores_bf16(self.level, &snap.vecs, dim, &v, &mut tmp);
            let nv = snap.norms[p].max(1e-12);
            for (r, t) in tmp.iter().enumerate() {
                scores[r] = w.w_mf * t / (nv * snap.norms[r].max(1e-12));
            }
        }
        let mut tmp = Vec::new();
        self.add_cooc(&[(item, true)], 1.0, w.w_cooc, &sl, &mut scores, &mut tmp);
        if let Some(s) = sl.of(item).and_then(|p| scores.get_mut(p)) {
            *s = f32::NEG_INFINITY;
        }
        let mut top = kernels::topk_of_scores(&scores, k);
        top.iter_mut().for_each(|x| x.0 = sl.row(x.0 as usize));
        Ok(top)
    }

    /// The neighbour list of an item (a copy).
    pub fn neighbors_of(&self, item: u32) -> Vec<(u32, f32)> {
        self.neighbors.get(item as usize).lock().iter().collect()
    }

    // --- access for snapshots -----------------------------------------------------------

    pub(crate) fn item_bias_of(&self, r: u32) -> f32 {
        self.item_bias.get(r as usize).load()
    }
    pub(crate) fn item_weight_of(&self, r: u32) -> f32 {
        self.item_weight.get(r as usize).load()
    }
    pub(crate) fn item_pop_raw(&self, r: u32) -> u64 {
        self.item_pop.get(r as usize).load(Relaxed)
    }
    pub(crate) fn user_state_of(&self, r: u32) -> UserState {
        self.user_state.get(r as usize).lock().clone()
    }

    /// Restores one item's state (snapshot loading, before the model is shared).
    pub(crate) fn restore_item(&self, r: u32, bias: f32, weight: f32, pop: u64, nb: Vec<(u32, f32)>) {
        self.item_bias.get(r as usize).store(bias);
        self.item_weight.get(r as usize).store(weight);
        self.item_pop.get(r as usize).store(pop, Relaxed);
        self.neighbors.get(r as usize).lock().set(nb);
    }
    pub(crate) fn restore_user(&self, r: u32, st: UserState) {
        *self.user_state.get(r as usize).lock() = st;
    }
    pub(crate) fn cooc_base(&self) -> u64 {
        self.cooc_base.load(Relaxed)
    }
    pub(crate) fn set_cooc_base(&self, b: u64) {
        self.cooc_base.store(b, Relaxed);
    }
    pub(crate) fn set_events(&self, n: u64) {
        self.events.store(n, Relaxed);
    }
    /// Exploration candidates with the event count at their introduction, oldest first.
    pub(crate) fn fresh_raw(&self) -> Vec<(u32, u64)> {
        self.fresh.lock().clone()
    }
    /// Sets an item's text without the cold-start step (snapshot loading).
    pub(crate) fn restore_text(&self, r: u32, text: &str) {
        self.text.set(r, text);
    }
    pub(crate) fn set_fresh(&self, f: Vec<(u32, u64)>) {
        *self.fresh.lock() = f;
    }
}

/// Where each item row's score is kept in one scoring call: the snapshot's places
/// `0..snap.n`, then `extra` places for rows added at the end since the snapshot was built.
struct Slots<'a> {
    snap: &'a ItemSnapshot,
    extra: usize,
}

impl<'a> Slots<'a> {
    fn new(snap: &'a ItemSnapshot, rows_now: usize) -> Self {
        Slots { snap, extra: rows_now.saturating_sub(snap.slot.len()) }
    }
    /// Places in all.
    fn len(&self) -> usize {
        self.snap.n + self.extra
    }
    /// The place of an item row (`None`: retired, free, or reused since the snapshot).
    #[inline]
    fn of(&self, row: u32) -> Option<usize> {
        let (r, base) = (row as usize, self.snap.slot.len());
        if r < base {
            let p = self.snap.slot[r];
            (p != u32::MAX).then_some(p as usize)
        } else {
            (r - base < self.extra).then(|| self.snap.n + r - base)
        }
    }
    /// The item row of a place.
    #[inline]
    fn row(&self, p: usize) -> u32 {
        if p < self.snap.n {
            self.snap.rows[p]
        } else {
            (self.snap.slot.len() + p - self.snap.n) as u32
        }
    }
}

impl ItemSnapshot {
    fn empty() -> Self {
        ItemSnapshot { n: 0, rows: Vec::new(), slot: Vec::new(), gen: u64::MAX, vecs: Vec::new(), norms: Vec::new(), bias: Vec::new(), pop: Vec::new(), popular: Vec::new(), fresh: Vec::new(), events: 0, built: Instant::now() }
    }
}

/// Gives the last slots of `top` (at most `q.explore`) to the best-scored new items not in
/// it already (exploration), skipping excluded, seen and not-allowed items.
fn explore(top: &mut Vec<(u32, f32)>, fresh: &[u32], score: impl Fn(u32) -> Option<f32>, q: &Query) {
    let is_fresh: hashbrown::HashSet<u32> = fresh.iter().copied().collect();
    let have = top.iter().filter(|t| is_fresh.contains(&t.0)).count();
    let want = q.explore.min(q.k).saturating_sub(have);
    if want == 0 {
        return;
    }
    let allowed: Option<hashbrown::HashSet<u32>> = q.allow.map(|a| a.iter().copied().collect());
    let listed: hashbrown::HashSet<u32> = top.iter().map(|t| t.0).collect();
    let mut cands: Vec<(u32, f32)> = fresh
        .iter()
        .filter_map(|&f| score(f).map(|s| (f, s)))
        .filter(|&(f, s)| s > f32::NEG_INFINITY && !listed.contains(&f) && allowed.as_ref().is_none_or(|a| a.contains(&f)))
        .collect();
    cands.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    cands.truncate(want);
    // Make room from the end of the list, never removing a new item it already holds.
    let mut excess = (top.len() + cands.len()).saturating_sub(q.k);
    let mut p = top.len();
    while excess > 0 && p > 0 {
        p -= 1;
        if !is_fresh.contains(&top[p].0) {
            top.remove(p);
            excess -= 1;
        }
    }
    top.extend(cands);
}

thread_local! {
    static SCORES: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

struct Scratch {
    u: Vec<f32>,
    i: Vec<f32>,
    j: Vec<f32>,
    du: Vec<f32>,
    /// The query vector: the user plus the event's context.
    q: Vec<f32>,
    c: Vec<f32>,
    ctx: Vec<u32>,
    recent: Vec<(u32, bool)>,
    pairs: Vec<(u32, f32)>,
    /// The clock when the learning call started.
    now: f64,
    /// A row's factors before a step (when item knowledge is shared).
    old: Vec<f32>,
    /// What this call did to items, merged into the model's outbox at its end.
    share: Option<delta::Outbox>,
    /// Learn for the users only: no item row, bias, popularity or co-occurrence changes.
    users_only: bool,
}

impl Scratch {
    fn new(dim: usize) -> Self {
        let z = || vec![0.0; dim];
        Scratch { u: z(), i: z(), j: z(), du: z(), q: z(), c: z(), ctx: Vec::new(), recent: Vec::new(), pairs: Vec::new(), now: 0.0, old: z(), share: None, users_only: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        let cfg = Config { dim: 8, snapshot_every: 1, snapshot_ms: 0, ..Config::default() };
        Model::new(cfg).unwrap()
    }

    #[test]
    fn learns_co_occurrence_and_personalises_after_one_event() {
        let m = model();
        for s in 0..50 {
            let u = format!("u{s}");
            m.learn_many(&[u.as_str(), u.as_str()], &["a", "b"], &[], &[], &[]).unwrap();
            m.learn_many(&[u.as_str(), u.as_str()], &["c", "d"], &[], &[], &[]).unwrap();
        }
        // Make "d" the most popular item overall.
        for s in 0..200 {
            m.learn_one(&format!("p{s}"), "d", "view", None, None).unwrap();
        }
        m.learn_one("new", "a", "view", None, None).unwrap();
        let u = m.users().ids().get("new");
        let recs = m.recommend_row(u, &Query { k: 1, exclude_seen: true, ..Default::default() }).unwrap();
        assert_eq!(m.items().ids().id(recs[0].0).as_deref(), Some("b"));
        // An unknown user gets the popular list.
        let pop = m.recommend_row(None, &Query { k: 1, ..Default::default() }).unwrap();
        assert_eq!(m.items().ids().id(pop[0].0).as_deref(), Some("d"));
    }

    #[test]
    fn exclusions_and_allow_lists_apply() {
        let m = model();
        m.learn_many(&["u", "u", "v", "v", "v"], &["a", "b", "a", "b", "c"], &[], &[], &[]).unwrap();
        let a = m.items().ids().get("a").unwrap();
        let c = m.items().ids().get("c").unwrap();
        let u = m.users().ids().get("u");
        let recs = m.recommend_row(u, &Query { k: 10, exclude_seen: true, exclude: &[c], allow: None, ..Default::default() }).unwrap();
        assert!(recs.is_empty(), "{recs:?}");
        let recs = m.recommend_row(u, &Query { k: 10, exclude_seen: false, exclude: &[], allow: Some(&[a]), ..Default::default() }).unwrap();
        assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), vec![a]);
    }

    #[test]
    fn recent_items_move_to_the_front_within_the_window() {
        let mut st = UserState::default();
        for i in [1, 2, 3, 2, 4, 5] {
            st.push_recent(i, 0, 4);
        }
        assert_eq!(st.recent().iter().map(|r| r.0).collect::<Vec<_>>(), vec![5, 4, 2, 3]);
        st.push_recent(3, 1, 4);
        assert_eq!(st.recent().iter().map(|r| r.0).collect::<Vec<_>>(), vec![3, 5, 4, 2]);
        assert_eq!(st.recent()[0], (3, 1));
        st.push_recent(3, 2, 4);
        assert_eq!(st.recent().len(), 4);
        assert_eq!(st.recent()[0], (3, 2));
    }

    #[test]
    fn bpr_moves_the_positive_above_negatives() {
        let cfg = Config { dim: 16, snapshot_every: 1, snapshot_ms: 0, w_cooc: 0.0, w_pop: 0.0, w_mf: 1.0, ..Config::default() };
        let m = Model::new(cfg).unwrap();
        let items: Vec<String> = (0..50).map(|i| format!("i{i}")).collect();
        // Two user groups with disjoint tastes.
        for round in 0..40 {
            for g in 0..2 {
                for u in 0..10 {
                    let user = format!("g{g}u{u}");
                    let item = &items[g * 25 + (round + u) % 25];
                    m.learn_one(&user, item, "purchase", None, None).unwrap();
                }
            }
        }
        m.refresh();
        let u = m.users().ids().get("g0u0");
        let recs = m.recommend_row(u, &Query { k: 10, exclude_seen: false, ..Default::default() }).unwrap();
        let in_group = recs.iter().filter(|r| m.items().ids().id(r.0).unwrap()[1..].parse::<usize>().unwrap() < 25).count();
        assert!(in_group >= 8, "{recs:?}");
    }

    fn names(m: &Model, recs: &[(u32, f32)]) -> Vec<String> {
        recs.iter().map(|r| m.items().ids().id(r.0).unwrap()).collect()
    }

    #[test]
    fn context_learned_online_reorders_the_list() {
        // Everyone buys "m*" items on mobile and "d*" items on desktop.
        let m = Model::new(Config { dim: 16, snapshot_every: 1, snapshot_ms: 0, ..Config::default() }).unwrap();
        let mut rng = Rng::new(3);
        for _ in 0..4000 {
            let u = format!("u{}", rng.below(200));
            let mobile = rng.below(2) == 0;
            let item = format!("{}{}", if mobile { "m" } else { "d" }, rng.below(20));
            let ctx = vec![vec![("device", if mobile { "mobile" } else { "desktop" })]];
            m.learn_many_ctx(&[u.as_str()], &[item.as_str()], &[], &[], &[], &ctx).unwrap();
        }
        m.refresh();
        for (dev, prefix) in [("mobile", 'm'), ("desktop", 'd')] {
            let ctx = m.context_rows(&[format!("device={dev}")], false);
            let recs = m.recommend_row(None, &Query { k: 10, ctx: &ctx, ..Default::default() }).unwrap();
            let hits = names(&m, &recs).iter().filter(|n| n.starts_with(prefix)).count();
            assert!(hits >= 9, "{dev}: {:?}", names(&m, &recs));
        }
        // Unknown context values are not learned yet: they change nothing.
        assert!(m.context_rows(&["device=toaster"], false).is_empty());
    }

    #[test]
    fn a_search_moves_matching_items_up_for_the_session() {
        let m = Model::new(Config { dim: 8, snapshot_every: 1, snapshot_ms: 0, ..Config::default() }).unwrap();
        m.set_item_text(&["lamp1", "lamp2", "mug1", "mug2", "sofa"], &["desk lamp", "floor lamp", "tea mug", "coffee mug", "sofa"]).unwrap();
        for s in 0..30 {
            let u = format!("p{s}");
            m.learn_many(&[u.as_str(), u.as_str()], &["mug1", "mug2"], &[], &[], &[]).unwrap();
        }
        m.learn_one("me", "sofa", "view", Some(1000.0), None).unwrap();
        let q = Query { k: 2, exclude_seen: true, ..Default::default() };
        let me = m.users().ids().get("me");
        assert!(names(&m, &m.recommend_row(me, &q).unwrap()).iter().all(|n| n.starts_with("mug")));
        m.search_many(&["me"], &["Lamp"], &[1010.0]).unwrap();
        let mut top = names(&m, &m.recommend_row(me, &q).unwrap());
        top.sort();
        assert_eq!(top, ["lamp1", "lamp2"]);
        // A request's own intent wins over the session's.
        let recs = m.recommend_row(me, &Query { k: 1, exclude_seen: true, intent: Some("coffee"), ..Default::default() }).unwrap();
        assert_eq!(names(&m, &recs), ["mug2"]);
        // The intent is context of the session's next event, and ends with the session.
        m.learn_one("me", "lamp1", "view", Some(1020.0), None).unwrap();
        assert!(m.user_state("me").unwrap().intent.is_some());
        m.learn_one("me", "mug1", "view", Some(1020.0 + 4000.0), None).unwrap();
        assert!(m.user_state("me").unwrap().intent.is_none());
    }

    #[test]
    fn a_new_item_starts_from_its_text_and_is_explored() {
        let m = Model::new(Config { dim: 8, snapshot_every: 1, snapshot_ms: 0, ..Config::default() }).unwrap();
        m.set_item_text(&["lamp1", "lamp2", "mug1"], &["brass desk lamp", "brass floor lamp", "tea mug"]).unwrap();
        let fillers: Vec<String> = (0..20).map(|k| format!("filler{k}")).collect();
        m.set_item_text(&fillers, &fillers).unwrap();
        let mut rng = Rng::new(1);
        for k in 0..300 {
            let u = format!("u{}", rng.below(40));
            m.learn_one(&u, ["lamp1", "lamp2", "mug1"][k % 3], "view", None, None).unwrap();
        }
        m.set_item_text(&["lamp3"], &["brass table lamp"]).unwrap();
        let row = |id: &str| {
            let mut v = vec![0f32; 8];
            load_row(m.items().row(m.items().ids().get(id).unwrap()), &mut v);
            v
        };
        let (l1, l2, l3) = (row("lamp1"), row("lamp2"), row("lamp3"));
        for d in 0..8 {
            let (lo, hi) = (l1[d].min(l2[d]), l1[d].max(l2[d]));
            assert!(l3[d] >= lo - 1e-6 && l3[d] <= hi + 1e-6, "dim {d}: {l3:?} not between the two lamps");
        }
        m.refresh();
        let fresh = m.fresh_items();
        assert!(names(&m, &fresh.iter().map(|&f| (f, 0.0)).collect::<Vec<_>>()).contains(&"lamp3".to_string()));
        let u = m.users().ids().get("u1");
        let recs = m.recommend_row(u, &Query { k: 2, exclude_seen: false, explore: 1, ..Default::default() }).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(names(&m, &recs)[1], "lamp3");
        // Enough positive events and it is no longer new.
        for k in 0..10 {
            m.learn_one(&format!("u{k}"), "lamp3", "view", None, None).unwrap();
        }
        m.refresh();
        let l3 = m.items().ids().get("lamp3").unwrap();
        assert!(!m.fresh_items().contains(&l3));
        assert!(m.fresh_items().is_empty(), "the catalogue loaded before the first event is not news");
    }

    /// A model where every signal scores: factors, co-occurrence, popularity, item text,
    /// context ("m*" items sell on mobile, "d*" on desktop) and a search's intent.
    fn every_signal(cfg: Config) -> Model {
        let m = Model::new(Config { dim: 8, snapshot_every: 50, snapshot_ms: 0, ctx_min_count: 1, ..cfg }).unwrap();
        let items: Vec<String> = (0..40).map(|j| format!("{}{j}", if j % 2 == 0 { "m" } else { "d" })).collect();
        let finish = ["brass", "oak", "steel", "glass", "linen", "walnut", "copper", "marble", "velvet", "wicker"];
        let texts: Vec<String> = (0..40).map(|j| format!("{} {}", finish[j % 10], if j % 3 == 0 { "lamp" } else { "mug" })).collect();
        m.set_item_text(&items, &texts).unwrap();
        let mut rng = Rng::new(7);
        for t in 0..3000 {
            let u = format!("u{}", rng.below(60));
            let mobile = rng.below(4) != 0;
            let item = format!("{}{}", if mobile { "m" } else { "d" }, 2 * rng.below(20) + usize::from(!mobile));
            let ctx = vec![vec![("device", if mobile { "mobile" } else { "desktop" })]];
            m.learn_many_ctx(&[u.as_str()], &[item.as_str()], &[(t % 4) as u8], &[t as f64], &[], &ctx).unwrap();
        }
        m.search_many(&["u1"], &["lamp"], &[3000.0]).unwrap();
        m.refresh();
        m
    }

    fn bits(recs: &[(u32, f32)]) -> Vec<(u32, u32)> {
        recs.iter().map(|r| (r.0, r.1.to_bits())).collect()
    }

    /// Queries of every kind for `every_signal`'s model (`ctx` rows from `context_rows`).
    fn queries<'a>(ctx: &'a [u32]) -> Vec<Query<'a>> {
        vec![
            Query { k: 10, ..Default::default() },
            Query { k: 10, exclude_seen: true, ctx, ..Default::default() },
            Query { k: 10, ctx, intent: Some("mug"), ts: Some(1e9), explore: 2, ..Default::default() },
        ]
    }

    #[test]
    fn query_weights_default_to_the_configured_ones() {
        let m = every_signal(Config::default());
        let ctx = m.context_rows(&["device=mobile"], false);
        assert_eq!(ctx.len(), 1);
        let users: Vec<Option<u32>> = ["u1", "u2", "u3", "nobody"].iter().map(|u| m.users().ids().get(u)).collect();
        let same = Some(m.config().weights());
        for q in queries(&ctx) {
            let explicit = Query { weights: same, ..q.clone() };
            for &u in &users {
                assert_eq!(bits(&m.recommend_row(u, &q).unwrap()), bits(&m.recommend_row(u, &explicit).unwrap()));
            }
            let many: Vec<_> = m.recommend_rows(&users, &q).unwrap().iter().map(|l| bits(l)).collect();
            let one: Vec<_> = users.iter().map(|&u| bits(&m.recommend_row(u, &explicit).unwrap())).collect();
            assert_eq!(many, one);
        }
        for item in ["m0", "d1", "m2"] {
            let r = m.items().ids().get(item).unwrap();
            assert_eq!(bits(&m.similar_row(r, 5, None).unwrap()), bits(&m.similar_row(r, 5, same).unwrap()));
        }
    }

    #[test]
    fn a_weight_override_scores_like_a_model_configured_with_it() {
        // The weights do not enter learning: two models fed the same events with the same
        // seed hold the same state, whatever their weights, and the override on one must
        // answer what the other, configured with it, answers.
        for (name, value) in [("w_ctx", 0.0), ("w_ctx", 2.0), ("w_pop", 50.0), ("w_mf", 0.0), ("w_mf", 1.0), ("w_cooc", 0.0), ("w_text", 2.0), ("w_intent", 0.0)] {
            let base = every_signal(Config::default());
            let mut cfg = Config::default();
            cfg.set(name, &value.to_string()).unwrap();
            let twin = every_signal(cfg);
            let mut w = base.config().weights();
            w.set(name, value).unwrap();
            let ctx = base.context_rows(&["device=mobile"], false);
            assert_eq!(ctx, twin.context_rows(&["device=mobile"], false));
            let users: Vec<Option<u32>> = ["u1", "u2", "u5", "nobody"].iter().map(|u| base.users().ids().get(u)).collect();
            let mut changed = false;
            for q in queries(&ctx) {
                let over = Query { weights: Some(w), ..q.clone() };
                for &u in &users {
                    let got = bits(&base.recommend_row(u, &over).unwrap());
                    assert_eq!(got, bits(&twin.recommend_row(u, &q).unwrap()), "{name} = {value}");
                    changed |= got != bits(&base.recommend_row(u, &q).unwrap());
                }
                let many: Vec<_> = base.recommend_rows(&users, &over).unwrap().iter().map(|l| bits(l)).collect();
                let want: Vec<_> = twin.recommend_rows(&users, &q).unwrap().iter().map(|l| bits(l)).collect();
                assert_eq!(many, want, "{name} = {value}");
            }
            assert!(changed, "{name} = {value} changes some answer");
            for item in ["m0", "d1", "m2"] {
                let r = base.items().ids().get(item).unwrap();
                assert_eq!(bits(&base.similar_row(r, 5, Some(w)).unwrap()), bits(&twin.similar_row(r, 5, None).unwrap()));
            }
        }
    }

    #[test]
    fn without_context_weight_the_context_changes_nothing_for_a_new_user() {
        // (A known user's factor term is the user plus the context, with any `w_ctx`.)
        let m = every_signal(Config::default());
        let mobile = m.context_rows(&["device=mobile"], false);
        let desktop = m.context_rows(&["device=desktop"], false);
        let q = |ctx, weights| Query { k: 10, ctx, weights, ..Default::default() };
        let no_ctx = Some(Weights { w_ctx: 0.0, ..m.config().weights() });
        assert_ne!(m.recommend_row(None, &q(&mobile, None)).unwrap(), m.recommend_row(None, &q(&desktop, None)).unwrap());
        let plain = m.recommend_row(None, &q(&[], None)).unwrap();
        assert_eq!(m.recommend_row(None, &q(&mobile, no_ctx)).unwrap(), plain);
        assert_eq!(m.recommend_row(None, &q(&desktop, no_ctx)).unwrap(), plain);
    }

    #[test]
    fn invalid_query_weights_are_an_error() {
        let m = every_signal(Config::default());
        let w = m.config().weights();
        let u = m.users().ids().get("u1");
        for bad in [Weights { w_ctx: 10.5, ..w }, Weights { w_ctx: f32::NAN, ..w }, Weights { w_mf: -0.1, ..w }, Weights { w_pop: f32::INFINITY, ..w }, Weights { w_intent: f32::NAN, ..w }] {
            let q = Query { k: 5, weights: Some(bad), ..Default::default() };
            assert!(matches!(m.recommend_row(u, &q), Err(crate::Error::InvalidArgument(_))), "{bad:?}");
            assert!(matches!(m.recommend_rows(&[u, None], &q), Err(crate::Error::InvalidArgument(_))), "{bad:?}");
            let r = m.items().ids().get("m0").unwrap();
            assert!(matches!(m.similar_row(r, 5, Some(bad)), Err(crate::Error::InvalidArgument(_))), "{bad:?}");
        }
        let e = m.recommend_row(u, &Query { k: 5, weights: Some(Weights { w_ctx: 11.0, ..w }), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("w_ctx must be at most 10"), "{e}");
    }

    #[test]
    fn context_keys_are_capped() {
        let m = Model::new(Config { dim: 1, ctx_min_count: 1, ..Config::default() }).unwrap();
        for chunk in 0..21 {
            let keys: Vec<String> = (0..10_000).map(|k| format!("intent=w{chunk}x{k}")).collect();
            m.context_rows(&keys, true);
        }
        assert_eq!(m.contexts().len(), MAX_CONTEXT_KEYS);
        assert!(m.context_rows(&["intent=later"], true).is_empty(), "past the cap a new value is ignored");
        assert_eq!(m.context_rows(&["intent=w0x1"], true).len(), 1, "known values still resolve");
    }

    #[test]
    fn exploration_keeps_new_items_already_listed_and_new_items_age_out() {
        let m = Model::new(Config { dim: 4, snapshot_every: 1, snapshot_ms: 0, explore_window: 50, ..Config::default() }).unwrap();
        for k in 0..40 {
            m.learn_one(&format!("u{k}"), ["a", "b"][k % 2], "view", None, None).unwrap();
        }
        m.set_item_text(&["f1", "c"], &["first new", "second new"]).unwrap();
        for k in 0..3 {
            m.learn_one(&format!("v{k}"), "f1", "view", None, None).unwrap();
        }
        m.refresh();
        let q = |explore| Query { k: 3, explore, ..Default::default() };
        assert_eq!(names(&m, &m.recommend_row(None, &q(0)).unwrap()), ["a", "b", "f1"]);
        let two = names(&m, &m.recommend_row(None, &q(2)).unwrap());
        assert_eq!(two, ["a", "f1", "c"], "a new item in the list stays; the next one takes the last other slot");
        for k in 0..60 {
            m.learn_one(&format!("w{k}"), "a", "view", None, None).unwrap();
        }
        assert!(m.fresh_items().is_empty(), "past explore_window events an item is no longer new");
    }

    #[test]
    fn concurrent_learners_and_readers_make_progress() {
        let m = Arc::new(Model::new(Config { dim: 16, snapshot_ms: 1, ..Config::default() }).unwrap());
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        let mut hs = Vec::new();
        for t in 0..3 {
            let m = m.clone();
            hs.push(std::thread::spawn(move || {
                let mut rng = Rng::new(t);
                for _ in 0..200 {
                    let users: Vec<String> = (0..100).map(|_| format!("u{}", rng.below(500))).collect();
                    let items: Vec<String> = (0..100).map(|_| format!("i{}", rng.below(2000))).collect();
                    m.learn_many(&users, &items, &[], &[], &[]).unwrap();
                }
            }));
        }
        let reader = {
            let m = m.clone();
            std::thread::spawn(move || {
                let mut served = 0;
                while Instant::now() < deadline && served < 2000 {
                    let u = m.users().ids().get("u1");
                    let r = m.recommend_row(u, &Query { k: 10, exclude_seen: true, ..Default::default() }).unwrap();
                    assert!(r.len() <= 10);
                    assert!(r.windows(2).all(|w| w[0].1 >= w[1].1));
                    served += 1;
                }
                served
            })
        };
        for h in hs {
            h.join().unwrap();
        }
        assert!(reader.join().unwrap() > 0);
        assert!(Instant::now() < deadline, "ran past the deadline: a lock is stuck");
        assert_eq!(m.events(), 3 * 200 * 100);
    }
}
