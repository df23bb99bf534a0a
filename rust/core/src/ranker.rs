//! The second stage of scoring: a pairwise ranker over each candidate's signals, learned
//! online from the shop's own events.
//!
//! The first stage (the fixed blend of [`crate::model::Model`]'s signals) proposes
//! candidates; each gets the features of [`FEATURES`]: every signal separately (its score
//! and the blend's rank), popularity, item age and idleness, whether the shopper took it
//! before, and the affinity of each context field on its own. The ranker scores
//! `(w_all + w_bucket) · x`, where the bucket is the shopper's state (how long the history
//! is, and whether this is a new session), so one shop can learn that co-occurrence decides
//! for a long history and the hour for a shopper's first visit, and another the opposite.
//!
//! Learning is test-then-learn: a request remembers its candidates and their features
//! (bounded, see below); when the same user's next positive event names one of them, every
//! candidate ranked above it is a pair (positive, negative) for a logistic pairwise step
//! (RankNet on the features) with AdaGrad step sizes and an L2 pull towards the starting
//! weights. The starting weights are 1 on the blend's score and 0 elsewhere, so a fresh
//! ranker orders exactly like the blend, and it only moves away where the shop's events say so.
//!
//! Concurrency: weights are relaxed atomics (Hogwild-style, like the factors); the last
//! candidates of a user sit in a direct-mapped cache of `ranker_cache` slots behind one
//! small mutex each (a colliding user replaces the slot: the cache is a bound, not a store).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

use crate::context::CONTEXT_FIELDS;
use crate::table::AtomicF32;

/// The features, in order.
pub const FEATURES: [&str; F] = [
    "blend",
    "blend_rank",
    "cooc",
    "mf",
    "text",
    "intent",
    "pop",
    "log_pop",
    "new",
    "idle",
    "seen",
    "cooc_last",
    "trend",
    "ctx_device",
    "ctx_hour",
    "ctx_weekday",
    "ctx_country",
    "ctx_region",
    "ctx_weather",
    "ctx_segment",
    "ctx_intent",
];
/// How many features.
pub const F: usize = 21;
pub const X_BLEND: usize = 0;
pub const X_BLEND_RANK: usize = 1;
pub const X_COOC: usize = 2;
pub const X_MF: usize = 3;
pub const X_TEXT: usize = 4;
pub const X_INTENT: usize = 5;
pub const X_POP: usize = 6;
pub const X_LOG_POP: usize = 7;
pub const X_NEW: usize = 8;
pub const X_IDLE: usize = 9;
pub const X_SEEN: usize = 10;
pub const X_COOC_LAST: usize = 11;
pub const X_TREND: usize = 12;
/// The first context field's feature; field `i` of [`CONTEXT_FIELDS`] is `X_CTX + i`.
pub const X_CTX: usize = 13;
const _: () = assert!(X_CTX + CONTEXT_FIELDS.len() == F);

/// Shopper states with weights of their own: history length (none, 1–2, 3–9, 10 and more
/// events) × new session or not.
pub const BUCKETS: usize = 8;
/// The names of the buckets, in order.
pub const BUCKET_NAMES: [&str; BUCKETS] =
    ["new:0", "new:1-2", "new:3-9", "new:10+", "session:0", "session:1-2", "session:3-9", "session:10+"];
/// AdaGrad's starting sum of squared gradients: the first steps are `lr × gradient`, so a
/// feature whose gradient is tiny (noise) moves little instead of as far as the others.
const G2_START: f32 = 1.0;
/// The L2 pull towards the starting weights, per step.
const L2: f32 = 1e-4;
/// The ranker's score is clamped to ±this before it is returned (as `exp`), so every
/// returned score is finite and positive.
pub const MAX_SCORE: f32 = 30.0;

/// The candidates of one user's last request, best first, with their features.
struct Cached {
    user: u32,
    bucket: u8,
    items: Vec<u32>,
    /// `items.len() × F` features, row-major.
    x: Vec<f32>,
}

/// The learned second stage. See the module docs.
pub struct Ranker {
    /// `(1 + BUCKETS) × F`: the shared weights, then each bucket's offsets.
    w: Vec<AtomicF32>,
    /// AdaGrad's sums of squared gradients, like `w`.
    g2: Vec<AtomicF32>,
    cache: Vec<Mutex<Option<Cached>>>,
    lr: f32,
    pairs: AtomicU64,
}

/// The starting value of weight `f` of block `b` (block 0 is the shared one).
fn start(b: usize, f: usize) -> f32 {
    if b == 0 && f == X_BLEND {
        1.0
    } else {
        0.0
    }
}

impl Ranker {
    /// A ranker at its starting weights, remembering the candidates of up to `cache` users.
    pub fn new(cache: usize, lr: f32) -> Self {
        let n = (1 + BUCKETS) * F;
        let w = (0..n)
            .map(|i| {
                let a = AtomicF32::default();
                a.store(start(i / F, i % F));
                a
            })
            .collect();
        let g2 = (0..n)
            .map(|_| {
                let a = AtomicF32::default();
                a.store(G2_START);
                a
            })
            .collect();
        Ranker { w, g2, cache: (0..cache).map(|_| Mutex::new(None)).collect(), lr, pairs: AtomicU64::new(0) }
    }

    /// The bucket of a shopper with `events` events, in a new session or not.
    pub fn bucket(events: u32, new_session: bool) -> u8 {
        let h = match events {
            0 => 0,
            1..=2 => 1,
            3..=9 => 2,
            _ => 3,
        };
        h + if new_session { 0 } else { 4 }
    }

    /// The effective weights of a bucket (shared + the bucket's offsets).
    pub fn weights_of(&self, bucket: u8) -> [f32; F] {
        let b = 1 + (bucket as usize).min(BUCKETS - 1);
        let mut out = [0f32; F];
        for (f, o) in out.iter_mut().enumerate() {
            *o = self.w[f].load() + self.w[b * F + f].load();
        }
        // New items are there to be tried: the ranker may lift them, never bury them
        // (exploration decides how much they are shown).
        out[X_NEW] = out[X_NEW].max(0.0);
        out
    }

    /// The score of the features `x` in `bucket` (clamped to ±[`MAX_SCORE`]).
    pub fn score(w: &[f32; F], x: &[f32]) -> f32 {
        let s: f32 = w.iter().zip(x).map(|(a, b)| a * b).sum();
        if s.is_finite() {
            s.clamp(-MAX_SCORE, MAX_SCORE)
        } else {
            -MAX_SCORE
        }
    }

    /// Remembers a user's candidates (best first) and their features for learning.
    pub fn remember(&self, user: u32, bucket: u8, items: Vec<u32>, x: Vec<f32>) {
        if self.cache.is_empty() || items.is_empty() {
            return;
        }
        debug_assert_eq!(items.len() * F, x.len());
        let slot = &self.cache[user as usize % self.cache.len()];
        *slot.lock() = Some(Cached { user, bucket, items, x });
    }

    /// Forgets what is remembered of `user` (an erased or evicted user).
    pub fn forget(&self, user: u32) {
        if self.cache.is_empty() {
            return;
        }
        let mut slot = self.cache[user as usize % self.cache.len()].lock();
        if slot.as_ref().is_some_and(|c| c.user == user) {
            *slot = None;
        }
    }

    /// Learns from a positive event of `user` on `item` against all the candidates of the
    /// user's last request (a softmax over them: the choice it beat them in), once per
    /// request. Returns whether the item was among the candidates.
    pub fn learn(&self, user: u32, item: u32, weight: f32) -> bool {
        if self.cache.is_empty() || !(weight > 0.0) {
            return false;
        }
        // A request's candidates answer one choice: the user's next positive event takes
        // them out (a later event is no answer to that request any more).
        let c = {
            let mut slot = self.cache[user as usize % self.cache.len()].lock();
            if !slot.as_ref().is_some_and(|c| c.user == user) {
                return false;
            }
            match slot.take() {
                Some(c) => c,
                None => return false,
            }
        };
        let Some(p) = c.items.iter().position(|&i| i == item) else {
            return false;
        };
        // Listwise: the shopper chose this one of the candidates; the step raises the
        // log-likelihood of that choice under a softmax of the scores, −∇ = x_chosen − E_p[x].
        let blk = 1 + (c.bucket as usize).min(BUCKETS - 1);
        let w = self.weights_of(c.bucket);
        let n = c.items.len();
        let scores: Vec<f32> = (0..n).map(|i| Self::score(&w, &c.x[i * F..(i + 1) * F])).collect();
        let top = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = scores.iter().map(|s| (s - top).exp()).collect();
        let z: f32 = e.iter().sum();
        if !(z > 0.0 && z.is_finite()) {
            return true;
        }
        let mut mean = [0f32; F];
        for (i, ei) in e.iter().enumerate() {
            let pi = ei / z;
            for (f, m) in mean.iter_mut().enumerate() {
                *m += pi * c.x[i * F + f];
            }
        }
        let scale = weight.min(3.0);
        let xp = &c.x[p * F..(p + 1) * F];
        for f in 0..F {
            let g = -scale * (xp[f] - mean[f]);
            for b in [0, blk] {
                let i = b * F + f;
                let wi = self.w[i].load();
                let grad = g + L2 * (wi - start(b, f));
                if grad == 0.0 || !grad.is_finite() {
                    continue;
                }
                let acc = self.g2[i].load() + grad * grad;
                self.g2[i].store(acc);
                self.w[i].store(wi - self.lr * grad / acc.sqrt());
            }
        }
        self.pairs.fetch_add(1, Relaxed);
        true
    }

    /// Choices learned from so far.
    pub fn pairs(&self) -> u64 {
        self.pairs.load(Relaxed)
    }

    /// The raw state for snapshots: the weights, then the AdaGrad sums.
    pub fn state(&self) -> Vec<f32> {
        self.w.iter().chain(&self.g2).map(|a| a.load()).collect()
    }

    /// Restores [`Ranker::state`]; false (and nothing changed) when it does not fit.
    pub fn set_state(&self, v: &[f32]) -> bool {
        let n = self.w.len();
        if v.len() != 2 * n || v.iter().any(|x| !x.is_finite()) {
            return false;
        }
        for (a, x) in self.w.iter().chain(&self.g2).zip(v) {
            a.store(*x);
        }
        true
    }

    /// Back to the starting weights (forgets what was learned).
    pub fn reset(&self) {
        for (i, a) in self.w.iter().enumerate() {
            a.store(start(i / F, i % F));
        }
        self.g2.iter().for_each(|a| a.store(G2_START));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(rows: &[[f32; 2]]) -> Vec<f32> {
        // blend and cooc only, the rest zero.
        let mut x = vec![0f32; rows.len() * F];
        for (i, r) in rows.iter().enumerate() {
            x[i * F + X_BLEND] = r[0];
            x[i * F + X_COOC] = r[1];
        }
        x
    }

    #[test]
    fn a_fresh_ranker_orders_like_the_blend() {
        let r = Ranker::new(4, 0.1);
        let w = r.weights_of(Ranker::bucket(5, false));
        let x = feats(&[[0.9, 0.0], [0.5, 1.0], [0.1, 0.2]]);
        let s: Vec<f32> = (0..3).map(|i| Ranker::score(&w, &x[i * F..(i + 1) * F])).collect();
        assert!(s[0] > s[1] && s[1] > s[2], "{s:?}");
    }

    #[test]
    fn positives_below_the_top_teach_the_ranker_to_lift_their_feature() {
        let r = Ranker::new(4, 0.2);
        let b = Ranker::bucket(5, false);
        for _ in 0..300 {
            // The blend puts item 10 first; the shopper always takes item 11, the one with
            // co-occurrence.
            r.remember(7, b, vec![10, 11, 12], feats(&[[0.9, 0.0], [0.5, 1.0], [0.1, 0.0]]));
            assert!(r.learn(7, 11, 1.0));
        }
        let w = r.weights_of(b);
        assert!(w[X_COOC] > 0.4, "{w:?}");
        let x = feats(&[[0.9, 0.0], [0.5, 1.0]]);
        assert!(Ranker::score(&w, &x[F..]) > Ranker::score(&w, &x[..F]));
        assert!(r.pairs() >= 300);
        // Another bucket shares the learned direction through the shared weights.
        assert!(r.weights_of(Ranker::bucket(0, true))[X_COOC] > 0.0);
    }

    #[test]
    fn unknown_users_items_and_colliding_slots_learn_nothing() {
        let r = Ranker::new(2, 0.1);
        r.remember(1, 0, vec![5, 6], feats(&[[1.0, 0.0], [0.5, 0.0]]));
        assert!(!r.learn(3, 5, 1.0), "user 3 shares the slot of user 1 but is not user 1");
        assert!(!r.learn(1, 6, 0.0), "no weight, no step");
        assert!(!r.learn(1, 99, 1.0), "an item not among the candidates");
        assert!(!r.learn(1, 6, 1.0), "the request's candidates answered one event already");
        r.remember(1, 0, vec![5, 6], feats(&[[1.0, 0.0], [0.5, 0.0]]));
        r.forget(1);
        assert!(!r.learn(1, 6, 1.0));
        let empty = Ranker::new(0, 0.1);
        empty.remember(1, 0, vec![5], feats(&[[1.0, 0.0]]));
        assert!(!empty.learn(1, 5, 1.0));
    }

    #[test]
    fn state_round_trips_and_rejects_what_does_not_fit() {
        let r = Ranker::new(4, 0.2);
        r.remember(1, 3, vec![1, 2], feats(&[[0.9, 0.0], [0.1, 1.0]]));
        r.learn(1, 2, 1.0);
        let st = r.state();
        let q = Ranker::new(4, 0.2);
        assert!(q.set_state(&st));
        assert_eq!(q.weights_of(3), r.weights_of(3));
        assert!(!q.set_state(&st[1..]));
        let mut bad = st.clone();
        bad[0] = f32::NAN;
        assert!(!q.set_state(&bad));
        q.reset();
        assert_eq!(q.weights_of(3), Ranker::new(1, 0.1).weights_of(3));
    }
}
