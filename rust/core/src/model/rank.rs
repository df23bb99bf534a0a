//! The second stage of [`Model::score_row`]: the candidates' features, their order by the
//! learned [`Ranker`], and the reason of each listed item. See [`crate::ranker`].

use super::*;
use crate::context::CONTEXT_FIELDS;
use crate::ranker::{Ranker, F, X_BLEND, X_BLEND_RANK, X_COOC, X_CTX, X_IDLE, X_INTENT, X_LOG_POP, X_MF, X_NEW, X_POP, X_SEEN, X_TEXT, X_COOC_LAST, X_TREND};

/// Why an item is in a list: the feature that counted most, and what it points at.
#[derive(Clone, Debug, PartialEq)]
pub struct Why {
    /// A name of [`crate::ranker::FEATURES`] (`cooc`, `mf`, `text`, `intent`, `pop`, `new`,
    /// `seen`, `ctx_<field>`).
    pub kind: &'static str,
    /// For `cooc` and `text`: the user's item it goes with (a row); else `u32::MAX`.
    pub item: u32,
    /// For `intent`: the search words; for `ctx_<field>`: the context key (`country=gb`).
    pub detail: String,
    /// Each feature's contribution to the ranker's score (`w_f × x_f`), in feature order.
    pub contributions: [f32; F],
}

/// What [`Model::rank`] needs of the request, gathered by `score_row`.
pub(super) struct Request<'a> {
    pub user: Option<u32>,
    pub recent: &'a [(u32, bool)],
    pub hist: f32,
    pub ctx: &'a [u32],
    pub intent: &'a [String],
    pub events: u32,
    pub new_session: bool,
    pub now: f64,
    pub weights: &'a Weights,
}

impl Model {
    /// The ranker's order of the first stage's candidates `cands` (row, blend score, best
    /// first), with each one's reason when `why` is given; remembers them for learning.
    pub(super) fn rank(&self, r: &Request, cands: &[(u32, f32)], sl: &Slots, why: Option<&mut Vec<Why>>) -> Vec<(u32, f32)> {
        let ranker = &self.ranker;
        let n = cands.len();
        if n == 0 {
            return Vec::new();
        }
        let (x, src) = self.features(r, cands, sl, why.is_some());
        let bucket = Ranker::bucket(r.events, r.new_session);
        let w = ranker.weights_of(bucket);
        let mut order: Vec<(usize, f32)> = (0..n).map(|i| (i, Ranker::score(&w, &x[i * F..(i + 1) * F]))).collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(cands[a.0].0.cmp(&cands[b.0].0)));
        if let Some(out) = why {
            out.clear();
            out.extend(order.iter().map(|&(i, _)| self.why_of(r, src.get(i).map_or(u32::MAX, |s| s.0), &x[i * F..(i + 1) * F], &w)));
        }
        if let Some(u) = r.user {
            let items: Vec<u32> = order.iter().map(|&(i, _)| cands[i].0).collect();
            let mut xs = Vec::with_capacity(n * F);
            for &(i, _) in &order {
                xs.extend_from_slice(&x[i * F..(i + 1) * F]);
            }
            ranker.remember(u, bucket, items, xs);
        }
        // Positive and finite, in the ranker's order (the sidecar multiplies scores).
        order.into_iter().map(|(i, s)| (cands[i].0, s.exp())).collect()
    }

    /// The reasons of a list in its order, without the ranker (the starting weights: the
    /// blend's share split over its signals); nothing is remembered for learning.
    pub(super) fn reasons_of(&self, r: &Request, list: &[(u32, f32)], sl: &Slots) -> Vec<Why> {
        let (x, src) = self.features(r, list, sl, true);
        let w = Ranker::new(0, 0.0).weights_of(0);
        (0..list.len()).map(|i| self.why_of(r, src.get(i).map_or(u32::MAX, |s| s.0), &x[i * F..(i + 1) * F], &w)).collect()
    }

    /// `cands.len() × F` features, row-major (see [`crate::ranker::FEATURES`]), and with
    /// `sources`, each candidate's recent item that gave it the most co-occurrence.
    fn features(&self, r: &Request, cands: &[(u32, f32)], sl: &Slots, sources: bool) -> (Vec<f32>, Vec<(u32, f32)>) {
        let cfg = &self.cfg;
        let n = cands.len();
        let dim = cfg.dim;
        let snap = sl.snap;
        let mut x = vec![0f32; n * F];
        let place: hashbrown::HashMap<u32, usize> = cands.iter().enumerate().map(|(i, c)| (c.0, i)).collect();
        let at = |row: u32| place.get(&row).copied();
        // The blend, relative to its best candidate, and its rank.
        let top = cands.iter().map(|c| c.1.abs()).fold(0f32, f32::max).max(1e-12);
        for (i, c) in cands.iter().enumerate() {
            x[i * F + X_BLEND] = if c.1.is_finite() { c.1 / top } else { 0.0 };
            x[i * F + X_BLEND_RANK] = 1.0 / ((1 + i) as f32).sqrt();
        }
        let mut col = vec![0f32; n];
        let mut src: Vec<(u32, f32)> = Vec::new();
        let put = |x: &mut [f32], f: usize, col: &mut [f32], max: f32| {
            if max > 0.0 {
                for (i, v) in col.iter_mut().enumerate() {
                    x[i * F + f] = *v / max;
                    *v = 0.0;
                }
            } else {
                col.iter_mut().for_each(|v| *v = 0.0);
            }
        };
        // Co-occurrence with the recent items, as the first stage computes it.
        if !r.recent.is_empty() {
            if sources {
                src = vec![(u32::MAX, 0f32); n];
            }
            let max = self.cooc_into(r.recent, &at, &mut col, sources.then_some(&mut src));
            put(&mut x, X_COOC, &mut col, max);
            // The last item alone: what the shopper just did says more than the rest.
            let max = self.cooc_into(&r.recent[..1], &at, &mut col, None);
            put(&mut x, X_COOC_LAST, &mut col, max);
            if self.cfg.text_window > 0 && !self.text.is_empty() {
                let mut wt = 1.0f32;
                let from: Vec<(u32, f32)> = r
                    .recent
                    .iter()
                    .take(cfg.text_window)
                    .map(|&(h, _)| {
                        let v = (h, wt);
                        wt *= cfg.recency_decay;
                        v
                    })
                    .collect();
                let max = self.text.add_similar_by(&from, &mut col, at);
                put(&mut x, X_TEXT, &mut col, max);
            }
        }
        if !r.intent.is_empty() {
            let max = self.text.add_query_by(r.intent, &mut col, at);
            put(&mut x, X_INTENT, &mut col, max);
        }
        // Factors: the user plus the context, z-scored over the candidates.
        let mut row = vec![0f32; dim];
        let mut iv = vec![0f32; dim];
        if let Some(u) = r.user.filter(|_| r.events > 0) {
            let mut uv = vec![0f32; dim];
            load_row(self.users.row(u), &mut uv);
            self.add_context_rows(r.ctx, &mut uv, &mut row);
            let mut sum = 0f64;
            for (i, c) in cands.iter().enumerate() {
                load_row(self.items.row(c.0), &mut iv);
                let s = kernels::dot(self.level, &uv, &iv) + self.item_bias.get(c.0 as usize).load();
                col[i] = if s.is_finite() { s } else { 0.0 };
                sum += col[i] as f64;
            }
            let mean = (sum / n as f64) as f32;
            let sd = (col.iter().map(|v| ((v - mean) as f64).powi(2)).sum::<f64>() / n as f64).sqrt().max(1e-6) as f32;
            for (i, v) in col.iter_mut().enumerate() {
                x[i * F + X_MF] = ((*v - mean) / sd).clamp(-4.0, 4.0);
                *v = 0.0;
            }
        }
        // Each context field on its own: Σ of its keys' vectors · the item, centred over
        // the candidates (a shift common to all of them changes no order).
        let mut fields: [Vec<u32>; CONTEXT_FIELDS.len()] = Default::default();
        for &c in r.ctx {
            if let Some(key) = self.ctx.ids().id(c) {
                let field = key.split('=').next().unwrap_or("");
                if let Some(f) = CONTEXT_FIELDS.iter().position(|&n| n == field) {
                    fields[f].push(c);
                }
            }
        }
        if fields.iter().any(|f| !f.is_empty()) {
            let mut cv = vec![0f32; dim];
            let ivs: Vec<Vec<f32>> = cands
                .iter()
                .map(|c| {
                    let mut v = vec![0f32; dim];
                    load_row(self.items.row(c.0), &mut v);
                    v
                })
                .collect();
            for (f, rows) in fields.iter().enumerate() {
                if rows.is_empty() {
                    continue;
                }
                cv.iter_mut().for_each(|v| *v = 0.0);
                self.add_context_rows(rows, &mut cv, &mut row);
                let mut sum = 0f32;
                for (i, v) in ivs.iter().enumerate() {
                    let a = kernels::dot(self.level, &cv, v);
                    col[i] = if a.is_finite() { a.clamp(-4.0, 4.0) } else { 0.0 };
                    sum += col[i];
                }
                let mean = sum / n as f32;
                for (i, v) in col.iter_mut().enumerate() {
                    x[i * F + X_CTX + f] = *v - mean;
                    *v = 0.0;
                }
            }
        }
        // Popularity, newness, idleness, and whether the shopper took it before.
        // Trend: trending popularity against the long-run weight (both relative to the
        // candidates' largest), in log.
        let long: Vec<f32> = cands.iter().map(|c| self.item_weight.get(c.0 as usize).load().max(0.0)).collect();
        let long_max = long.iter().copied().fold(0f32, f32::max).max(1e-12);
        let fresh: hashbrown::HashSet<u32> = snap.fresh.iter().copied().collect();
        let us = r.user.map(|u| self.user_state.get(u as usize).lock());
        for (i, c) in cands.iter().enumerate() {
            let pop = sl.of(c.0).and_then(|p| snap.pop.get(p)).copied().unwrap_or(0.0).max(0.0);
            x[i * F + X_POP] = pop;
            x[i * F + X_LOG_POP] = (pop + 1e-3).ln() / 7.0;
            x[i * F + X_TREND] = (((pop + 1e-3) / (long[i] / long_max + 1e-3)).ln() / 7.0).clamp(-1.0, 1.0);
            x[i * F + X_NEW] = if fresh.contains(&c.0) { 1.0 } else { 0.0 };
            let active = self.item_active.get(c.0 as usize).load(Relaxed) as f64;
            let idle_h = if r.now.is_finite() && active > 0.0 { ((r.now - active) / 3600.0).max(0.0) } else { 0.0 };
            x[i * F + X_IDLE] = ((1.0 + idle_h).ln() / 10.0) as f32;
            if let Some(us) = &us {
                x[i * F + X_SEEN] = if us.has_seen(c.0) { 1.0 } else { 0.0 };
            }
        }
        (x, src)
    }

    /// Accumulates the co-occurrence score with the recent items (the first stage's signal)
    /// into `col[at(row)]` for every neighbour with a place, and returns the largest; `src`
    /// gets, per place, the recent item that gave it the most.
    pub(super) fn cooc_into(&self, recent: &[(u32, bool)], at: &impl Fn(u32) -> Option<usize>, col: &mut [f32], mut src: Option<&mut Vec<(u32, f32)>>) -> f32 {
        let cfg = &self.cfg;
        let recency = if self.events() < self.adapt_until.load(Relaxed) { self.adapt_recency.load() } else { cfg.recency_decay };
        let mut rw = 1.0f32;
        let mut max = 0f32;
        for &(h, _) in recent {
            let nh = self.item_weight.get(h as usize).load().max(1e-6);
            let base = rw / nh.powf(cfg.cooc_alpha);
            rw *= recency;
            let nb = self.neighbors.get(h as usize).lock();
            for (j, c) in nb.iter() {
                if let Some(p) = at(j).filter(|&p| p < col.len()) {
                    let nj = self.item_weight.get(j as usize).load().max(1e-6);
                    let s = base * c / nj.powf(cfg.cooc_beta);
                    col[p] += s;
                    max = max.max(col[p]);
                    if let Some(src) = src.as_deref_mut() {
                        if s > src[p].1 {
                            src[p] = (h, s);
                        }
                    }
                }
            }
        }
        max
    }

    /// The reason of one candidate: the feature with the largest contribution, where the
    /// blend's own share is split over the signals it is made of.
    fn why_of(&self, r: &Request, source: u32, x: &[f32], w: &[f32; F]) -> Why {
        let mut contributions = [0f32; F];
        for f in 0..F {
            contributions[f] = w[f] * x[f];
        }
        // The blend's share, split in proportion to its fixed weights × the signals.
        let wt = r.weights;
        let parts = [(X_COOC, wt.w_cooc * r.hist), (X_TEXT, wt.w_text * r.hist), (X_INTENT, wt.w_intent), (X_POP, wt.w_pop), (X_MF, wt.w_mf * 10.0)];
        let total: f32 = parts.iter().map(|&(f, a)| (a * x[f]).max(0.0)).sum();
        let mut merit = contributions;
        merit[X_BLEND] = 0.0;
        merit[X_BLEND_RANK] = 0.0;
        if total > 0.0 {
            let share = (w[X_BLEND] * x[X_BLEND] + w[X_BLEND_RANK] * x[X_BLEND_RANK]).max(0.0);
            for &(f, a) in &parts {
                merit[f] += share * (a * x[f]).max(0.0) / total;
            }
        }
        // A new item is "new" whatever else it has going for it (it is there to be tried).
        let kind = if x[X_NEW] > 0.0 {
            X_NEW
        } else {
            let mut best = X_POP;
            for f in [X_COOC, X_TEXT, X_INTENT, X_MF, X_SEEN, X_POP].into_iter().chain(X_CTX..F) {
                if merit[f] > merit[best] {
                    best = f;
                }
            }
            if merit[best] <= 0.0 {
                X_POP
            } else {
                best
            }
        };
        let mut why = Why { kind: crate::ranker::FEATURES[kind], item: u32::MAX, detail: String::new(), contributions };
        match kind {
            X_COOC => why.item = source,
            X_TEXT => why.item = r.recent.first().map_or(u32::MAX, |h| h.0),
            X_INTENT => why.detail = r.intent.join(" "),
            f if f >= X_CTX => {
                let field = CONTEXT_FIELDS[f - X_CTX];
                why.detail = r
                    .ctx
                    .iter()
                    .filter_map(|&c| self.ctx.ids().id(c))
                    .filter(|k| k.split('=').next() == Some(field))
                    .min_by_key(|k| k.len())
                    .unwrap_or_default();
            }
            _ => {}
        }
        why
    }

    /// The learned second stage (its weights, for inspection).
    pub fn ranker(&self) -> &Ranker {
        &self.ranker
    }
}
