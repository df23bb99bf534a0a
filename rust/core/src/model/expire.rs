//! Bounded memory and erasure: users expire, items retire, context keys are admitted and
//! pruned, and a user can be forgotten.
//!
//! - **Users** carry their last activity (`last_seq`, the event count, and `active_ts`, the
//!   event time, or the model's clock for events without one). [`Model::expire`] evicts the
//!   users idle for `user_idle` seconds of event time before "now" (the newest event time
//!   seen, unless the caller gives one). The cap `max_users` evicts the least recently
//!   active users, after every learning call too, so memory stays bounded between two
//!   `expire` calls; the ids it evicts wait in a bounded buffer (at most [`EVICTED_CAP`],
//!   the oldest dropped and counted past it) until `expire` or [`Model::drain_evicted`]
//!   returns them. The cap finds its victims from a queue of the oldest users, rebuilt by a
//!   scan when it runs dry (one scan per `max_users / 64` evictions at most); a queued user
//!   that was active since is skipped, so the order is exact least-recently-active.
//! - **Items** without a positive event for `item_idle` seconds that are not in the
//!   catalogue (no text, not marked by [`Model::set_catalogue`]) are retired: removed from
//!   the id map, flagged dead (never a negative), dropped from every neighbour list, every
//!   user's recent and seen items and the new-item list, then their rows are freed. The
//!   scoring snapshot holds live items only, so a recommendation costs what the live items
//!   cost, however many rows were ever used.
//! - **Context keys** are admitted once seen `ctx_min_count` times (counted in a bounded
//!   candidate table, see [`crate::model::CTX_CANDIDATES`]); `expire` prunes the keys not
//!   seen for `ctx_idle` seconds and, when the table is over 90% of `max_context_keys`, the
//!   least recently seen down to 80%, so the cap never freezes the learning of new keys.
//! - **Forgetting** ([`Model::forget`]) removes users at once: id, factors (zeroed), state,
//!   history, session, intent, and their ids in the eviction buffer. The co-occurrence
//!   counts and item factors learned from their events stay: they hold no user id.
//!
//! Freed rows go to the id map's free list and are handed to new ids. Rows never move, so
//! a reader may be reading a row while it is freed or reused: every number in a row is an
//! atomic and every per-row state sits behind its own lock, so the reader sees old values,
//! zeros or the new owner's, never a torn or undefined one. A row is cleared *after* its
//! id is removed and *before* it joins the free list, so a new id never gets a row that is
//! still being cleared. What is not prevented: a learner that resolved a user (or item) in
//! another thread just before it was evicted may land that one event on the row's next
//! owner — the same kind of lost-or-misplaced small update the Hogwild learner accepts.

use super::*;

/// What one [`Model::expire`] call removed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Expired {
    /// Users evicted: by the cap during learning since the last drain, idle, then over the cap.
    pub users: Vec<String>,
    /// Items retired.
    pub items: Vec<String>,
    /// Context keys pruned.
    pub contexts: Vec<String>,
}

/// Row counts of the three tables, for memory accounting.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RowStats {
    pub users: usize,
    pub user_rows: usize,
    pub user_free: usize,
    pub items: usize,
    pub item_rows: usize,
    pub item_free: usize,
    pub contexts: usize,
    pub context_rows: usize,
    pub context_free: usize,
    pub context_candidates: usize,
    pub evicted_waiting: usize,
    pub evicted_dropped: u64,
}

/// The most rounds one cap enforcement takes (each evicts or rescans).
const CAP_ROUNDS: usize = 64;

impl Model {
    /// Evicts the least recently active users past `max_users` (after a learning call).
    /// Another thread already doing maintenance does it instead; this one goes on.
    pub(crate) fn enforce_user_cap(&self) {
        let cap = self.cfg.max_users;
        if cap == 0 || self.users.len() <= cap {
            return;
        }
        let Some(_g) = self.maint.try_lock() else { return };
        let gone = self.evict_over_cap();
        self.push_evicted(gone);
    }

    fn push_evicted(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        let mut q = self.evicted.lock();
        q.extend(ids);
        if q.len() > EVICTED_CAP {
            let d = q.len() - EVICTED_CAP;
            q.drain(..d);
            self.evicted_dropped.fetch_add(d as u64, Relaxed);
        }
    }

    /// Users evicted by the cap during learning since the last drain (and not returned by
    /// `expire` yet), oldest first.
    pub fn drain_evicted(&self) -> Vec<String> {
        self.evicted.lock().drain(..).collect()
    }

    /// Evicts the least recently active users until at most `max_users` remain (the
    /// maintenance lock is held).
    fn evict_over_cap(&self) -> Vec<String> {
        let cap = self.cfg.max_users;
        let mut out = Vec::new();
        if cap == 0 {
            return out;
        }
        let mut q = self.lru.lock();
        let mut rescanned = false;
        for _ in 0..CAP_ROUNDS {
            let live = self.users.len();
            if live <= cap {
                break;
            }
            let excess = live - cap;
            let mut victims = Vec::with_capacity(excess);
            while victims.len() < excess {
                let Some((seq, r)) = q.pop() else { break };
                // Active since the scan: no longer among the oldest.
                if self.user_state.get(r as usize).lock().last_seq == seq {
                    victims.push(r);
                }
            }
            let gone = self.evict_user_rows(&victims);
            if gone.is_empty() {
                if rescanned {
                    break;
                }
                self.scan_lru(&mut q, excess.max(cap / 64).max(1));
                rescanned = true;
                continue;
            }
            rescanned = false;
            out.extend(gone);
        }
        out
    }

    /// Fills `q` with the `want` least recently active users, most recent first.
    fn scan_lru(&self, q: &mut Vec<(u64, u32)>, want: usize) {
        let mask = self.users.ids().live_mask();
        let mut all: Vec<(u64, u32)> =
            mask.iter().enumerate().filter(|x| *x.1).map(|(r, _)| (self.user_state.get(r).lock().last_seq, r as u32)).collect();
        if all.len() > want {
            all.select_nth_unstable(want);
            all.truncate(want);
        }
        all.sort_unstable_by(|a, b| b.cmp(a));
        *q = all;
    }

    /// Removes the users of `rows` (live ones), resets their state, zeroes and frees their
    /// rows; returns their ids.
    fn evict_user_rows(&self, rows: &[u32]) -> Vec<String> {
        if rows.is_empty() {
            return Vec::new();
        }
        let removed = self.users.ids().remove_rows(rows);
        let rs: Vec<u32> = removed.iter().map(|x| x.1).collect();
        for &r in &rs {
            *self.user_state.get(r as usize).lock() = UserState::default();
        }
        self.users.release(&rs);
        removed.into_iter().map(|x| x.0).collect()
    }

    /// Applies idle expiry of users, the user cap, item retirement and context-key pruning
    /// at event time `now` (default: the newest event time seen), then rebuilds the scoring
    /// snapshot. Returns what was removed (the users include those the cap evicted during
    /// learning since the last drain).
    pub fn expire(&self, now: Option<f64>) -> Expired {
        let _g = self.maint.lock();
        let now = now.filter(|t| t.is_finite()).unwrap_or_else(|| self.clock());
        let mut users: Vec<String> = self.evicted.lock().drain(..).collect();
        if self.cfg.user_idle > 0.0 {
            let cutoff = now - self.cfg.user_idle;
            let mask = self.users.ids().live_mask();
            let idle: Vec<u32> = mask
                .iter()
                .enumerate()
                .filter(|x| *x.1)
                .map(|x| x.0 as u32)
                .filter(|&r| self.user_state.get(r as usize).lock().active_ts < cutoff)
                .collect();
            users.extend(self.evict_user_rows(&idle));
        }
        users.extend(self.evict_over_cap());
        let retired = self.retire_begin(now);
        let pruned = self.prune_begin(now);
        if !retired.is_empty() || !pruned.is_empty() {
            let irows: Vec<u32> = retired.iter().map(|x| x.1).collect();
            let crows: Vec<u32> = pruned.iter().map(|x| x.1).collect();
            self.purge_refs(&irows, &crows);
            self.retire_end(&irows);
            self.ctx.release(&crows);
        }
        self.refresh();
        Expired { users, items: retired.into_iter().map(|x| x.0).collect(), contexts: pruned.into_iter().map(|x| x.0).collect() }
    }

    /// Removes the idle items that are not in the catalogue from the id map and flags them
    /// dead; their rows are freed by [`Model::retire_end`] once nothing points at them.
    fn retire_begin(&self, now: f64) -> Vec<(String, u32)> {
        // `now` is finite (see `expire`), so a cutoff at or before the epoch retires nothing.
        if self.cfg.item_idle <= 0.0 || now - self.cfg.item_idle <= 0.0 {
            return Vec::new();
        }
        let cut = Self::secs(now - self.cfg.item_idle);
        let mask = self.items.ids().live_mask();
        let cands: Vec<u32> = mask
            .iter()
            .enumerate()
            .filter(|x| *x.1)
            .map(|x| x.0 as u32)
            .filter(|&r| {
                let i = r as usize;
                self.item_flags.get(i).load(Relaxed) & ITEM_PINNED == 0 && self.item_active.get(i).load(Relaxed) < cut && !self.text.has_text(r)
            })
            .collect();
        let removed = self.items.ids().remove_rows(&cands);
        for &(_, r) in &removed {
            if self.item_flags.get(r as usize).fetch_or(ITEM_DEAD, Relaxed) & ITEM_DEAD == 0 {
                self.items_dead.fetch_add(1, Relaxed);
            }
        }
        if !removed.is_empty() {
            self.item_gen.fetch_add(1, Relaxed);
            self.share_drop_rows(&removed.iter().map(|x| x.1).collect::<Vec<_>>());
        }
        removed
    }

    /// Clears retired item rows and frees them.
    fn retire_end(&self, rows: &[u32]) {
        for &r in rows {
            let i = r as usize;
            self.item_bias.get(i).store(0.0);
            self.item_weight.get(i).store(0.0);
            self.item_pop.get(i).store(0, Relaxed);
            *self.neighbors.get(i).lock() = NeighborList::default();
            if self.text.has_text(r) {
                self.text.set(r, "");
            }
        }
        self.items.release(rows);
    }

    /// Removes the context keys to prune from the id map (rows freed after the purge).
    fn prune_begin(&self, now: f64) -> Vec<(String, u32)> {
        let live = self.ctx.ids().live();
        let seen = |r: u32| f64::from_bits(self.ctx_seen.get(r as usize).load(Relaxed));
        let mut victims: Vec<u32> = Vec::new();
        if self.cfg.ctx_idle > 0.0 && now - self.cfg.ctx_idle > 0.0 {
            let cutoff = now - self.cfg.ctx_idle;
            victims.extend(live.iter().map(|x| x.0).filter(|&r| seen(r) < cutoff));
        }
        let max = self.cfg.max_context_keys;
        let remaining = live.len() - victims.len();
        if max > 0 && remaining * 10 > max * 9 {
            let target = max * 8 / 10;
            let chosen: hashbrown::HashSet<u32> = victims.iter().copied().collect();
            let mut rest: Vec<(f64, u32)> = live.iter().map(|x| x.0).filter(|r| !chosen.contains(r)).map(|r| (seen(r), r)).collect();
            rest.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            victims.extend(rest.iter().take(remaining.saturating_sub(target)).map(|x| x.1));
        }
        self.ctx.ids().remove_rows(&victims)
    }

    /// Drops every reference to the item rows and context rows about to be freed: neighbour
    /// lists, new items, users' recent and seen items, session intents.
    fn purge_refs(&self, items: &[u32], ctx: &[u32]) {
        let mut gone_i = vec![false; self.item_rows()];
        items.iter().for_each(|&r| gone_i.get_mut(r as usize).into_iter().for_each(|g| *g = true));
        let mut gone_c = vec![false; self.ctx.rows()];
        ctx.iter().for_each(|&r| gone_c.get_mut(r as usize).into_iter().for_each(|g| *g = true));
        let gi = |j: u32| gone_i.get(j as usize).copied().unwrap_or(false);
        let gc = |j: u32| gone_c.get(j as usize).copied().unwrap_or(false);
        if !items.is_empty() {
            for (r, &g) in gone_i.iter().enumerate() {
                if !g {
                    let mut nb = self.neighbors.get(r).lock();
                    if !nb.is_empty() {
                        nb.retain(|j| !gi(j));
                    }
                }
            }
            self.fresh.lock().retain(|x| !gi(x.0));
        }
        for u in 0..self.users.rows() {
            self.user_state.get(u).lock().purge(gi, gc);
        }
    }

    /// Removes users entirely (id, factors zeroed, state, history, session, intent, and
    /// their ids waiting in the eviction buffer); returns how many were known. What was
    /// learned from their events about items (co-occurrence, item factors) stays: it holds
    /// no user id.
    pub fn forget<S: AsRef<str>>(&self, users: &[S]) -> usize {
        let _g = self.maint.lock();
        let removed = self.users.ids().remove_ids(users);
        let rows: Vec<u32> = removed.iter().map(|x| x.1).collect();
        for &r in &rows {
            *self.user_state.get(r as usize).lock() = UserState::default();
        }
        self.users.release(&rows);
        let names: hashbrown::HashSet<&str> = users.iter().map(|s| s.as_ref()).collect();
        self.evicted.lock().retain(|u| !names.contains(u.as_str()));
        removed.len()
    }

    /// Marks items as in the catalogue (never retired) or not, creating unknown ones when
    /// marking them in.
    pub fn set_catalogue<S: AsRef<str>>(&self, items: &[S], in_catalogue: bool) {
        let rows: Vec<u32> = if in_catalogue {
            self.resolve_items(items)
        } else {
            self.items.ids().get_many(items).into_iter().filter(|&r| r != u32::MAX).collect()
        };
        for r in rows {
            let f = self.item_flags.get(r as usize);
            if in_catalogue {
                f.fetch_or(ITEM_PINNED, Relaxed);
            } else {
                f.fetch_and(!ITEM_PINNED, Relaxed);
            }
        }
    }

    /// Row counts of the tables.
    pub fn row_stats(&self) -> RowStats {
        RowStats {
            users: self.users.len(),
            user_rows: self.users.rows(),
            user_free: self.users.ids().n_free(),
            items: self.items.len(),
            item_rows: self.items.rows(),
            item_free: self.items.ids().n_free(),
            contexts: self.ctx.len(),
            context_rows: self.ctx.rows(),
            context_free: self.ctx.ids().n_free(),
            context_candidates: self.ctx_cand.lock().len(),
            evicted_waiting: self.evicted.lock().len(),
            evicted_dropped: self.evicted_dropped.load(Relaxed),
        }
    }

    // --- snapshots ------------------------------------------------------------------------

    /// Allocates rows `0..n` of the user table and its state (snapshot loading).
    pub(crate) fn ensure_users(&self, n: usize) {
        self.users.ensure(n);
        self.user_state.ensure(n);
    }
    /// Allocates rows `0..n` of the item table and its arrays (snapshot loading).
    pub(crate) fn ensure_items(&self, n: usize) {
        self.items.ensure(n);
        self.ensure_item_rows(n);
        self.item_hw.fetch_max(n, Relaxed);
    }
    /// Allocates rows `0..n` of the context table (snapshot loading).
    pub(crate) fn ensure_contexts(&self, n: usize) {
        self.ctx.ensure(n);
        self.ctx_seen.ensure(n);
    }
    /// Sets the ids of the three tables (`free[r]`: row `r` is free); free item rows are
    /// flagged dead. Snapshot loading, before the model is shared.
    pub(crate) fn restore_ids(&self, users: (Vec<String>, Vec<bool>), items: (Vec<String>, Vec<bool>), ctx: (Vec<String>, Vec<bool>)) -> Result<()> {
        let bad = |what: &str, e: String| crate::error::Error::Snapshot(format!("snapshot is corrupt: {what}: {e}"));
        self.users.ids().set_all(users.0, &users.1).map_err(|e| bad("user ids", e))?;
        for (r, &f) in items.1.iter().enumerate() {
            if f {
                self.item_flags.get(r).fetch_or(ITEM_DEAD, Relaxed);
                self.items_dead.fetch_add(1, Relaxed);
            }
        }
        self.items.ids().set_all(items.0, &items.1).map_err(|e| bad("item ids", e))?;
        self.ctx.ids().set_all(ctx.0, &ctx.1).map_err(|e| bad("context keys", e))?;
        self.item_gen.fetch_add(1, Relaxed);
        Ok(())
    }
    pub(crate) fn item_activity(&self, r: u32) -> (u32, bool) {
        (self.item_active.get(r as usize).load(Relaxed), self.item_flags.get(r as usize).load(Relaxed) & ITEM_PINNED != 0)
    }
    pub(crate) fn restore_item_activity(&self, r: u32, active: u32, pinned: bool) {
        self.item_active.get(r as usize).store(active, Relaxed);
        if pinned {
            self.item_flags.get(r as usize).fetch_or(ITEM_PINNED, Relaxed);
        }
    }
    pub(crate) fn ctx_seen_of(&self, r: u32) -> f64 {
        f64::from_bits(self.ctx_seen.get(r as usize).load(Relaxed))
    }
    pub(crate) fn restore_ctx_seen(&self, r: u32, t: f64) {
        self.ctx_seen.get(r as usize).store(t.to_bits(), Relaxed);
    }
    pub(crate) fn set_clock(&self, t: f64) {
        self.clock.store(if t.is_finite() { t } else { 0.0 }.to_bits(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> Config {
        Config { dim: 8, snapshot_every: 1, snapshot_ms: 0, ..Config::default() }
    }

    fn names(m: &Model, recs: &[(u32, f32)]) -> Vec<String> {
        recs.iter().map(|r| m.items().ids().id(r.0).unwrap_or_default()).collect()
    }

    #[test]
    fn idle_users_expire_relative_to_the_clock() {
        let m = Model::new(Config { user_idle: 100.0, ..cfg() }).unwrap();
        m.learn_many(&["old", "new"], &["a", "b"], &[], &[1000.0, 1150.0], &[]).unwrap();
        assert_eq!(m.clock(), 1150.0);
        let e = m.expire(None);
        assert_eq!(e.users, ["old"]);
        assert_eq!(m.n_users(), 1);
        assert!(m.users().ids().get("old").is_none());
        assert!(m.expire(Some(1200.0)).users.is_empty());
        assert_eq!(m.expire(Some(1251.0)).users, ["new"]);
    }

    #[test]
    fn the_cap_evicts_least_recently_active_during_learning_and_rows_are_reused() {
        let m = Model::new(Config { max_users: 3, ..cfg() }).unwrap();
        for u in ["u0", "u1", "u2"] {
            m.learn_one(u, "a", "view", None, None).unwrap();
        }
        m.learn_one("u0", "b", "view", None, None).unwrap(); // u1 is now the least recent
        m.learn_one("u3", "a", "view", None, None).unwrap();
        assert_eq!(m.n_users(), 3);
        assert_eq!(m.drain_evicted(), ["u1"]);
        m.learn_one("u4", "c", "view", None, None).unwrap();
        assert_eq!(m.expire(None).users, ["u2"]);
        assert_eq!(m.users().rows(), 4, "new users took the evicted rows");
        // The reused row starts clean: no history from its last owner.
        let st = m.user_state("u4").unwrap();
        assert_eq!(st.events, 1);
        assert_eq!(st.recent().len(), 1);
        assert_eq!(st.seen().len(), 1);
    }

    #[test]
    fn retired_items_leave_scoring_neighbours_and_histories() {
        let m = Model::new(Config { item_idle: 100.0, ..cfg() }).unwrap();
        m.set_item_text(&["cat"], &["catalogue item"]).unwrap();
        m.set_catalogue(&["flagged"], true);
        let mut ts = 0.0;
        for k in 0..20 {
            let u = format!("u{k}");
            for it in ["junk", "cat", "flagged", "live"] {
                ts += 1.0;
                m.learn_one(&u, it, "view", Some(ts), None).unwrap();
            }
        }
        m.learn_one("late", "live", "view", Some(500.0), None).unwrap();
        let e = m.expire(None);
        assert_eq!(e.items, ["junk"]);
        assert_eq!(m.n_items(), 3);
        let junk_row = (0..m.item_rows() as u32).find(|&r| !m.items().ids().is_live(r)).unwrap();
        for r in 0..m.item_rows() as u32 {
            assert!(m.neighbors_of(r).iter().all(|x| x.0 != junk_row));
        }
        assert!(m.user_state("u3").unwrap().seen().iter().all(|&i| i != junk_row));
        let u = m.users().ids().get("u1");
        let all = names(&m, &m.recommend_row(u, &Query { k: 10, ..Default::default() }).unwrap());
        assert!(!all.contains(&"junk".to_string()) && all.len() == 3, "{all:?}");
        assert_eq!(m.snapshot().n, 3);
        // A new item reuses the row, clean.
        m.learn_one("u1", "fresh", "view", Some(501.0), None).unwrap();
        assert_eq!(m.items().ids().get("fresh"), Some(junk_row));
        assert!(m.neighbors_of(junk_row).iter().all(|x| m.items().ids().is_live(x.0)));
    }

    #[test]
    fn context_values_are_admitted_after_a_few_sightings_and_pruned() {
        let m = Model::new(Config { ctx_min_count: 3, ctx_idle: 50.0, ..cfg() }).unwrap();
        for k in 0..1000 {
            m.learn_many_ctx(&["u"], &["a"], &[], &[k as f64 * 0.01], &[], &[vec![("segment", format!("junk{k}"))]]).unwrap();
        }
        assert_eq!(m.contexts().len(), 0, "values seen once never become keys");
        for _ in 0..2 {
            m.learn_many_ctx(&["u"], &["a"], &[], &[10.0], &[], &[vec![("device", "mobile")]]).unwrap();
        }
        assert_eq!(m.contexts().len(), 0);
        m.learn_many_ctx(&["u"], &["a"], &[], &[10.0], &[], &[vec![("device", "mobile")]]).unwrap();
        assert_eq!(m.contexts().ids().all(), ["device=mobile"]);
        // A column counts each occurrence.
        let v: Vec<Option<&str>> = vec![Some("rain"); 3];
        m.learn_many_cols(&["u"; 3], &["a"; 3], &[], &[], &[], &[("weather", v)]).unwrap();
        assert!(m.contexts().ids().get("weather=rain").is_some());
        m.learn_one("u", "a", "view", Some(100.0), None).unwrap();
        let e = m.expire(None);
        let mut pruned = e.contexts.clone();
        pruned.sort();
        assert_eq!(pruned, ["device=mobile", "weather=rain"]);
        assert_eq!(m.contexts().len(), 0);
        assert!(m.row_stats().context_candidates <= CTX_CANDIDATES);
    }

    #[test]
    fn search_words_of_the_catalogue_are_admitted_at_once_others_wait() {
        let m = Model::new(cfg()).unwrap();
        m.set_item_text(&["l1"], &["desk lamp"]).unwrap();
        m.search_many(&["u"], &["lamp xqzv"], &[]).unwrap();
        assert_eq!(m.contexts().ids().all(), ["intent=lamp"]);
    }

    #[test]
    fn a_full_context_table_is_pruned_so_new_keys_are_learned() {
        let m = Model::new(Config { ctx_min_count: 1, max_context_keys: 100, ctx_idle: 0.0, ..cfg() }).unwrap();
        for k in 0..150 {
            m.learn_many_ctx(&["u"], &["a"], &[], &[k as f64], &[], &[vec![("segment", format!("s{k}"))]]).unwrap();
        }
        assert_eq!(m.contexts().len(), 100);
        assert!(m.context_rows(&["segment=later"], true).is_empty(), "at the cap a new key waits");
        let e = m.expire(None);
        assert_eq!(e.contexts.len(), 20);
        assert!(e.contexts.contains(&"segment=s0".to_string()), "least recently seen first");
        assert_eq!(m.context_rows(&["segment=later"], true).len(), 1);
    }

    #[test]
    fn forget_removes_the_user_and_learning_goes_on() {
        let m = Model::new(cfg()).unwrap();
        m.learn_many(&["alice", "alice", "bob"], &["a", "b", "a"], &[], &[], &[]).unwrap();
        m.search_many(&["alice"], &["lamp"], &[]).unwrap();
        assert_eq!(m.forget(&["alice", "nobody"]), 1);
        assert!(m.user_state("alice").is_none());
        assert_eq!(m.n_users(), 1);
        let row = m.users().rows();
        m.learn_one("carol", "b", "view", None, None).unwrap();
        assert_eq!(m.users().rows(), row, "carol reuses alice's row");
        assert_eq!(m.user_state("carol").unwrap().events, 1);
        assert!(m.user_state("carol").unwrap().intent.is_none());
        m.learn_one("alice", "a", "view", None, None).unwrap();
        assert_eq!(m.user_state("alice").unwrap().events, 1, "a forgotten user comes back new");
    }

    /// Learners, recommenders, expiry and forgetting at once, with caps small enough that
    /// rows are reused all the time: no panic, sane lists, and it ends before the deadline.
    #[test]
    fn stress_learn_recommend_expire_concurrently() {
        let m = Arc::new(Model::new(Config { dim: 16, snapshot_ms: 1, max_users: 300, item_idle: 50.0, user_idle: 200.0, ctx_min_count: 2, max_context_keys: 50, ..Config::default() }).unwrap());
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut hs = Vec::new();
        for t in 0..2u64 {
            let m = m.clone();
            hs.push(std::thread::spawn(move || {
                let mut rng = Rng::new(t + 10);
                for b in 0..150 {
                    let users: Vec<String> = (0..100).map(|_| format!("u{}", rng.below(1000))).collect();
                    let items: Vec<String> = (0..100).map(|_| format!("i{}", rng.below(if b % 3 == 0 { 5000 } else { 200 }))).collect();
                    let ts: Vec<f64> = (0..100).map(|k| (b * 100 + k) as f64).collect();
                    let seg: Vec<Option<String>> = (0..100).map(|_| Some(format!("s{}", rng.below(80)))).collect();
                    m.learn_many_cols(&users, &items, &[], &ts, &[], &[("segment", seg)]).unwrap();
                }
            }));
        }
        let reader = {
            let m = m.clone();
            std::thread::spawn(move || {
                let mut served = 0;
                let mut rng = Rng::new(99);
                while Instant::now() < deadline && served < 3000 {
                    let u = m.users().ids().get(&format!("u{}", rng.below(1000)));
                    let r = m.recommend_row(u, &Query { k: 10, exclude_seen: true, ..Default::default() }).unwrap();
                    assert!(r.len() <= 10);
                    assert!(r.windows(2).all(|w| w[0].1 >= w[1].1 || w[1].1.is_nan()));
                    assert!(r.iter().all(|x| (x.0 as usize) < m.item_rows()));
                    served += 1;
                }
                served
            })
        };
        let maint = {
            let m = m.clone();
            std::thread::spawn(move || {
                let mut rounds = 0;
                while Instant::now() < deadline && rounds < 200 {
                    m.expire(None);
                    m.forget(&[format!("u{}", rounds % 1000)]);
                    let _ = crate::snapshot::to_bytes(&m);
                    rounds += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                rounds
            })
        };
        for h in hs {
            h.join().unwrap();
        }
        assert!(reader.join().unwrap() > 0);
        assert!(maint.join().unwrap() > 0);
        assert!(Instant::now() < deadline, "ran past the deadline: a lock is stuck");
        m.expire(None);
        assert!(m.n_users() <= 300, "{}", m.n_users());
        assert!(m.contexts().len() <= 50);
        let ids = m.users().ids().all();
        let uniq: hashbrown::HashSet<&String> = ids.iter().collect();
        assert_eq!(uniq.len(), ids.len());
        // A saved model with free rows loads and serves the same lists.
        let m2 = crate::snapshot::from_bytes(&crate::snapshot::to_bytes(&m)).unwrap();
        assert_eq!(m2.n_users(), m.n_users());
        assert_eq!(m2.n_items(), m.n_items());
    }
}
