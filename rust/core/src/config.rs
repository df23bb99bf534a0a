//! The learner's options, with their defaults, and their text form inside snapshots.

use crate::error::{Error, Result};

/// The event types of the v1 wire contract, in the order of [`Config::event_weights`].
pub const EVENT_TYPES: [&str; 7] = ["view", "add_to_cart", "remove_from_cart", "purchase", "search", "click", "impression"];

/// The most recent items a user's state can hold (the largest `window`).
pub const RECENT_CAP: usize = 32;

/// The largest event weight (in absolute value): larger steps would blow the factors up.
pub const MAX_WEIGHT: f32 = 1000.0;

/// The index of an event type name.
pub fn event_index(name: &str) -> Result<u8> {
    EVENT_TYPES.iter().position(|e| *e == name).map(|i| i as u8).ok_or_else(|| {
        Error::InvalidArgument(format!("unknown event type {name:?}; expected one of {}", EVENT_TYPES.join(", ")))
    })
}

/// The names of the scoring weights, in the order of [`Weights`]' fields.
pub const WEIGHT_NAMES: [&str; 6] = ["w_mf", "w_cooc", "w_pop", "w_text", "w_ctx", "w_intent"];

/// The largest `w_ctx`: the context factor `exp(w_ctx * a)` grows fast.
pub const MAX_W_CTX: f32 = 10.0;

/// The weights of the signals in a score, as in [`Config`] (see its fields). A request may
/// score with other weights than the model's ([`crate::model::Query::weights`]), so that
/// experiment variants that differ only in scoring share one model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    pub w_mf: f32,
    pub w_cooc: f32,
    pub w_pop: f32,
    pub w_text: f32,
    pub w_ctx: f32,
    pub w_intent: f32,
}

impl Weights {
    /// The weights as (name, value) pairs, in the order of [`WEIGHT_NAMES`].
    pub fn to_pairs(&self) -> [(&'static str, f32); 6] {
        [("w_mf", self.w_mf), ("w_cooc", self.w_cooc), ("w_pop", self.w_pop), ("w_text", self.w_text), ("w_ctx", self.w_ctx), ("w_intent", self.w_intent)]
    }

    /// Sets one weight by name. An unknown name or an invalid value is an `InvalidArgument`
    /// naming the weight, and leaves the weights unchanged.
    pub fn set(&mut self, name: &str, value: f32) -> Result<()> {
        Self::check_name(name)?;
        let mut next = *self;
        let w = match name {
            "w_mf" => &mut next.w_mf,
            "w_cooc" => &mut next.w_cooc,
            "w_pop" => &mut next.w_pop,
            "w_text" => &mut next.w_text,
            "w_ctx" => &mut next.w_ctx,
            _ => &mut next.w_intent, // the last name `check_name` lets through
        };
        *w = value;
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// Whether `name` is one of [`WEIGHT_NAMES`]; otherwise an `InvalidArgument` listing them.
    pub fn check_name(name: &str) -> Result<()> {
        if WEIGHT_NAMES.contains(&name) {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!("unknown weight {name:?}; known weights: {}", WEIGHT_NAMES.join(", "))))
    }

    /// Checks ranges as [`Config::validate`] does: every weight a finite number ≥ 0,
    /// `w_ctx` at most [`MAX_W_CTX`].
    pub fn validate(&self) -> Result<()> {
        for (n, v) in self.to_pairs() {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::InvalidArgument(format!("{n} must be a finite number ≥ 0, got {v}")));
            }
        }
        if self.w_ctx > MAX_W_CTX {
            return Err(Error::InvalidArgument(format!("w_ctx must be at most {MAX_W_CTX}, got {}", self.w_ctx)));
        }
        Ok(())
    }
}

/// Every option of the online learner. `Config::default()` is what `Recommender()` uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Width of the user and item factors.
    pub dim: usize,
    /// SGD learning rate of the factors.
    pub lr: f32,
    /// Learning-rate schedule: `lr_t = lr / sqrt(1 + lr_decay * t)` after `t` events (0 keeps it constant).
    pub lr_decay: f32,
    /// L2 penalty on the factors and biases touched by an update.
    pub reg: f32,
    /// Sampled negatives per positive event (BPR).
    pub negatives: usize,
    /// Scale of the random initial factors.
    pub init_std: f32,
    /// Weight of each event type, in the order of [`EVENT_TYPES`]; 0 learns nothing,
    /// a negative weight pushes the item down for that user.
    pub event_weights: [f32; 7],
    /// Recent items remembered per user: the co-occurrence window and the scoring context.
    pub window: usize,
    /// Co-occurring pairs are formed with this many of the user's most recent items.
    pub pair_window: usize,
    /// Seconds of silence that start a new session.
    pub session_gap: f64,
    /// Weight of a co-occurring pair whose items are in different sessions.
    pub cross_session_weight: f32,
    /// A pair's weight is multiplied by this for each position between its two items.
    pub pair_decay: f32,
    /// Weight of the pair counted backwards (later item → earlier item); 1 makes it symmetric.
    pub backward_weight: f32,
    /// Half-life of co-occurrence evidence, in events (0 keeps it forever).
    pub cooc_half_life: f64,
    /// Neighbours kept per item (at most 64); a full list replaces its weakest.
    pub max_neighbors: usize,
    /// Co-occurrence normalisation: `c(h,j) / (n_h^alpha * n_j^beta)`.
    pub cooc_alpha: f32,
    pub cooc_beta: f32,
    /// When scoring, the p-th most recent item of the user counts `recency_decay^p`.
    pub recency_decay: f32,
    /// Weights of the three signals in the final score: factors, co-occurrence, popularity.
    pub w_mf: f32,
    pub w_cooc: f32,
    pub w_pop: f32,
    /// Weight of the item-text similarity to the user's recent items (0 turns it off).
    pub w_text: f32,
    /// Recent items whose text similarity counts when scoring.
    pub text_window: usize,
    /// Strength of the context (device, hour, weather, ...) when scoring: each item's score
    /// is multiplied by `exp(w_ctx * a)`, `a` the item's context affinity `(Σ c)·v_i`
    /// centred on the items' mean (the factorisation machine's own logit; 0 turns context off).
    pub w_ctx: f32,
    /// Learning rate of the context embeddings, relative to `lr`.
    pub ctx_lr: f32,
    /// When a request's time says a new session has started, the user's history
    /// (co-occurrence and text) counts this much (1 ignores sessions), and the context
    /// factor `1 / new_session_weight` times as much (at most 5×; also for users without
    /// history).
    pub new_session_weight: f32,
    /// Weight of the session intent (the last search's words matched against item text).
    pub w_intent: f32,
    /// An item introduced by its metadata stays a candidate for exploration until its
    /// positive events weigh this much ...
    pub explore_until: f32,
    /// ... or for this many events after its introduction at most.
    pub explore_window: u64,
    /// Half-life of the trending popularity, in events.
    pub pop_half_life: f64,
    /// Seed of the initial factors and of the negative sampling.
    pub seed: u64,
    /// Events between two snapshots of the item matrix used for scoring.
    pub snapshot_every: u64,
    /// Milliseconds between two snapshots (0: by event count only, which is deterministic).
    pub snapshot_ms: u64,
    /// Start a new user's factors from the first item's factors (fold-in).
    pub fold_in: bool,
    /// Kernel level: "auto", "scalar", "avx2", "avx512", "neon".
    pub simd: String,
    /// A user without events for this many seconds of event time (relative to the newest
    /// event time the model has seen) is evicted by `expire` (0: never).
    pub user_idle: f64,
    /// The most users kept; past it the least recently active are evicted, during learning
    /// too (0: no limit).
    pub max_users: usize,
    /// An item without positive events for this many seconds of event time, and not in the
    /// catalogue (no text, not marked), is retired by `expire` (0: never).
    pub item_idle: f64,
    /// A new context value becomes a key after it was seen this many times (1: at once).
    pub ctx_min_count: u32,
    /// A context key not seen for this many seconds of event time is pruned by `expire`
    /// (0: never).
    pub ctx_idle: f64,
    /// The most context keys kept (0: no limit); `expire` prunes the least recently seen
    /// when the table is nearly full, so new keys can always be learned.
    pub max_context_keys: usize,
    /// Order each list with the learned second stage (see `crate::ranker`): the blend of
    /// the signals above proposes `ranker_candidates` items, the ranker orders them by
    /// their features with weights learned from the shop's own events. Off by default: it
    /// gains offline (next-event recall) but lost click-through in the closed-loop demo.
    pub ranker: bool,
    /// How many candidates the first stage proposes to the ranker.
    pub ranker_candidates: usize,
    /// The ranker's AdaGrad learning rate.
    pub ranker_lr: f32,
    /// How many users' last candidates are kept for the ranker to learn from (a bound on
    /// its memory: about `ranker_candidates × 80` bytes each).
    pub ranker_cache: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dim: 64,
            lr: 0.05,
            lr_decay: 0.0,
            reg: 0.002,
            negatives: 1,
            init_std: 0.1,
            event_weights: [1.0, 2.0, -0.5, 3.0, 0.0, 1.0, 0.0],
            window: 20,
            pair_window: 2,
            session_gap: 1800.0,
            cross_session_weight: 0.5,
            pair_decay: 0.9,
            backward_weight: 1.0,
            max_neighbors: 128,
            cooc_half_life: 100_000.0,
            cooc_alpha: 0.5,
            cooc_beta: 0.3,
            recency_decay: 0.6,
            w_mf: 0.02,
            w_cooc: 1.0,
            w_pop: 0.05,
            w_text: 0.3,
            text_window: 3,
            w_ctx: 0.4,
            ctx_lr: 0.2,
            w_intent: 4.0,
            new_session_weight: 0.2,
            explore_until: 5.0,
            explore_window: 100_000,
            pop_half_life: 20_000.0,
            seed: 42,
            snapshot_every: 1000,
            snapshot_ms: 100,
            fold_in: true,
            simd: "auto".to_string(),
            user_idle: 180.0 * 86_400.0,
            max_users: 2_000_000,
            item_idle: 90.0 * 86_400.0,
            ctx_min_count: 3,
            ctx_idle: 90.0 * 86_400.0,
            max_context_keys: 200_000,
            ranker: false,
            ranker_candidates: 100,
            ranker_lr: 0.2,
            ranker_cache: 4096,
        }
    }
}

macro_rules! fields {
    ($m:ident) => {
        $m!(dim, usize);
        $m!(lr, f32);
        $m!(lr_decay, f32);
        $m!(reg, f32);
        $m!(negatives, usize);
        $m!(init_std, f32);
        $m!(window, usize);
        $m!(pair_window, usize);
        $m!(session_gap, f64);
        $m!(cross_session_weight, f32);
        $m!(pair_decay, f32);
        $m!(backward_weight, f32);
        $m!(max_neighbors, usize);
        $m!(cooc_half_life, f64);
        $m!(cooc_alpha, f32);
        $m!(cooc_beta, f32);
        $m!(recency_decay, f32);
        $m!(w_mf, f32);
        $m!(w_cooc, f32);
        $m!(w_pop, f32);
        $m!(w_text, f32);
        $m!(text_window, usize);
        $m!(w_ctx, f32);
        $m!(ctx_lr, f32);
        $m!(w_intent, f32);
        $m!(new_session_weight, f32);
        $m!(explore_until, f32);
        $m!(explore_window, u64);
        $m!(pop_half_life, f64);
        $m!(seed, u64);
        $m!(snapshot_every, u64);
        $m!(snapshot_ms, u64);
        $m!(fold_in, bool);
        $m!(user_idle, f64);
        $m!(max_users, usize);
        $m!(item_idle, f64);
        $m!(ctx_min_count, u32);
        $m!(ctx_idle, f64);
        $m!(max_context_keys, usize);
        $m!(ranker, bool);
        $m!(ranker_candidates, usize);
        $m!(ranker_lr, f32);
        $m!(ranker_cache, usize);
    };
}

impl Config {
    /// The scoring weights of this configuration.
    pub fn weights(&self) -> Weights {
        Weights { w_mf: self.w_mf, w_cooc: self.w_cooc, w_pop: self.w_pop, w_text: self.w_text, w_ctx: self.w_ctx, w_intent: self.w_intent }
    }

    /// Names of the numeric and boolean options (what `set` takes besides `simd` and the event weights).
    pub fn names() -> Vec<&'static str> {
        let mut v = Vec::new();
        macro_rules! push {
            ($f:ident, $t:ty) => {
                v.push(stringify!($f));
            };
        }
        fields!(push);
        v
    }

    /// Sets one option from its text form; `weight_<event>` sets an event weight. On error
    /// the configuration is left unchanged.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let mut next = self.clone();
        next.set_unchecked(name, value)?;
        next.validate()?;
        *self = next;
        Ok(())
    }

    fn set_unchecked(&mut self, name: &str, value: &str) -> Result<()> {
        let bad = |what: &str| Error::InvalidArgument(format!("option {name}: {value:?} is not {what}"));
        macro_rules! set_field {
            ($f:ident, $t:ty) => {
                if name == stringify!($f) {
                    self.$f = value.trim().parse::<$t>().map_err(|_| bad(stringify!($t)))?;
                    return Ok(());
                }
            };
        }
        fields!(set_field);
        if name == "simd" {
            if crate::kernels::SimdLevel::parse(value).is_none() {
                return Err(bad("one of auto, scalar, avx2, avx512, neon"));
            }
            self.simd = value.to_string();
            return Ok(());
        }
        if let Some(ev) = name.strip_prefix("weight_") {
            let i = event_index(ev)? as usize;
            self.event_weights[i] = value.trim().parse::<f32>().map_err(|_| bad("a number"))?;
            return Ok(());
        }
        Err(Error::InvalidArgument(format!("unknown option {name:?}; known options: {}, simd, weight_<event>", Self::names().join(", "))))
    }

    /// Every option as (name, text) pairs, in a stable order.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        macro_rules! get {
            ($f:ident, $t:ty) => {
                v.push((stringify!($f).to_string(), self.$f.to_string()));
            };
        }
        fields!(get);
        v.push(("simd".into(), self.simd.clone()));
        for (e, w) in EVENT_TYPES.iter().zip(self.event_weights) {
            v.push((format!("weight_{e}"), w.to_string()));
        }
        v
    }

    /// Checks ranges; every violation is an `InvalidArgument` naming the option.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::InvalidArgument(m));
        if self.dim == 0 || self.dim > 4096 {
            return err(format!("dim must be between 1 and 4096, got {}", self.dim));
        }
        for (n, v) in [("lr", self.lr), ("reg", self.reg), ("init_std", self.init_std), ("lr_decay", self.lr_decay)] {
            if !(v.is_finite() && v >= 0.0) {
                return err(format!("{n} must be a finite number ≥ 0, got {v}"));
            }
        }
        for (n, v) in [("pair_decay", self.pair_decay), ("recency_decay", self.recency_decay), ("cross_session_weight", self.cross_session_weight), ("backward_weight", self.backward_weight)] {
            if !(0.0..=1.0).contains(&v) {
                return err(format!("{n} must be between 0 and 1, got {v}"));
            }
        }
        self.weights().validate()?;
        for (n, v) in [("ctx_lr", self.ctx_lr), ("new_session_weight", self.new_session_weight), ("explore_until", self.explore_until), ("cooc_alpha", self.cooc_alpha), ("cooc_beta", self.cooc_beta)] {
            if !(v.is_finite() && v >= 0.0) {
                return err(format!("{n} must be a finite number ≥ 0, got {v}"));
            }
        }
        if self.window > RECENT_CAP {
            return err(format!("window must be at most {}, got {}", RECENT_CAP, self.window));
        }
        if self.max_neighbors > crate::cooc::NBR_CAP {
            return err(format!("max_neighbors must be at most {}, got {}", crate::cooc::NBR_CAP, self.max_neighbors));
        }
        if self.negatives > 100 {
            return err(format!("negatives must be at most 100, got {}", self.negatives));
        }
        if self.max_neighbors == 0 {
            return err("max_neighbors must be at least 1".into());
        }
        if !(self.cooc_half_life >= 0.0 && self.cooc_half_life.is_finite()) {
            return err(format!("cooc_half_life must be a finite number ≥ 0, got {}", self.cooc_half_life));
        }
        if !(self.session_gap >= 0.0) || !(self.pop_half_life > 0.0) {
            return err("session_gap must be ≥ 0 and pop_half_life > 0".into());
        }
        for (n, v) in [("user_idle", self.user_idle), ("item_idle", self.item_idle), ("ctx_idle", self.ctx_idle)] {
            if !(v.is_finite() && v >= 0.0) {
                return err(format!("{n} must be a finite number of seconds ≥ 0 (0: never), got {v}"));
            }
        }
        if self.max_users > u32::MAX as usize / 2 || self.max_context_keys > u32::MAX as usize / 2 {
            return err("max_users and max_context_keys must be below 2^31 (0: no limit)".into());
        }
        if self.ranker_candidates > 2000 || self.ranker_cache > 1_000_000 {
            return err(format!("ranker_candidates must be at most 2000 and ranker_cache at most 1000000, got {} and {}", self.ranker_candidates, self.ranker_cache));
        }
        if !(self.ranker_lr.is_finite() && self.ranker_lr >= 0.0 && self.ranker_lr <= 10.0) {
            return err(format!("ranker_lr must be a number between 0 and 10, got {}", self.ranker_lr));
        }
        if self.event_weights.iter().any(|w| !(w.is_finite() && w.abs() <= MAX_WEIGHT)) {
            return err(format!("event weights must be finite numbers between -{0} and {0}", MAX_WEIGHT));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_through_set() {
        let mut c = Config::default();
        c.set("dim", "32").unwrap();
        c.set("weight_purchase", "7.5").unwrap();
        c.set("simd", "scalar").unwrap();
        let mut d = Config::default();
        for (k, v) in c.to_pairs() {
            d.set(&k, &v).unwrap();
        }
        assert_eq!(c, d);
    }

    #[test]
    fn bad_options_name_the_problem() {
        let mut c = Config::default();
        let e = c.set("dimm", "3").unwrap_err().to_string();
        assert!(e.contains("unknown option"), "{e}");
        let e = c.set("lr", "fast").unwrap_err().to_string();
        assert!(e.contains("lr"), "{e}");
        let e = c.set("dim", "0").unwrap_err().to_string();
        assert!(e.contains("dim must be"), "{e}");
        assert_eq!(c.dim, 64, "a rejected value leaves the option unchanged");
        assert!(event_index("like").is_err());
    }

    #[test]
    fn weights_are_the_configured_ones_and_validated_like_them() {
        let c = Config { w_ctx: 0.7, w_pop: 0.0, ..Config::default() };
        let w = c.weights();
        assert_eq!(w.to_pairs().map(|p| p.0), WEIGHT_NAMES);
        let from_pairs: Vec<(String, String)> = w.to_pairs().iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        let config_pairs: Vec<(String, String)> = c.to_pairs().into_iter().filter(|(n, _)| WEIGHT_NAMES.contains(&n.as_str())).collect();
        assert_eq!(from_pairs, config_pairs, "every weight is the option of the same name");
        // Each value Config rejects for a weight, Weights rejects with the same message.
        for name in WEIGHT_NAMES {
            for bad in [f32::NAN, f32::INFINITY, -1.0, 11.0] {
                let mut cfg = c.clone();
                let via_config = cfg.set(name, &bad.to_string()).err().map(|e| e.to_string());
                let mut w2 = w;
                let via_weights = w2.set(name, bad).err().map(|e| e.to_string());
                assert_eq!(via_config, via_weights, "{name} = {bad}");
                if bad != 11.0 || name == "w_ctx" {
                    assert!(via_weights.is_some_and(|e| e.contains(name)), "{name} = {bad}");
                    assert_eq!(w2, w, "a rejected value leaves the weights unchanged");
                }
            }
        }
        let mut w2 = w;
        w2.set("w_ctx", 0.0).unwrap();
        w2.set("w_ctx", 10.0).unwrap();
        assert_eq!(w2, Weights { w_ctx: 10.0, ..w });
        let e = w2.set("w_foo", 1.0).unwrap_err().to_string();
        assert!(e.contains("unknown weight \"w_foo\"") && e.contains("w_intent"), "{e}");
    }
}
