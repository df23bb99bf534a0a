//! Users handed over between engines: when an engine takes over a partition, the users of
//! that partition come from the previous owner's last checkpoint (the one its position in
//! the positions bucket was written with), and the partition is replayed from there.

use super::*;

impl Model {
    /// Copies the users `ids` that `from` knows into this model: their factors and their
    /// state (recent and seen items, by item id: an item this model does not know yet is
    /// created; events, last time, session). A user this model knows already is replaced.
    /// The session's intent is not carried (its context rows are `from`'s). Returns how
    /// many users were copied; `InvalidArgument` if the factor dimensions differ.
    pub fn import_users<S: AsRef<str>>(&self, from: &Model, ids: &[S]) -> Result<usize> {
        if from.cfg.dim != self.cfg.dim {
            return invalid!("cannot take users of dimension {} into a model of dimension {}", from.cfg.dim, self.cfg.dim);
        }
        let mut known: Vec<&str> = Vec::with_capacity(ids.len());
        let mut states: Vec<(u32, UserState)> = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(r) = from.users.ids().get(id.as_ref()) {
                known.push(id.as_ref());
                states.push((r, from.user_state.get(r as usize).lock().clone()));
            }
        }
        if known.is_empty() {
            return Ok(0);
        }
        // Their items by id, resolved (created when new) in this model at once.
        let mut rows: Vec<u32> = states.iter().flat_map(|(_, s)| s.recent().iter().map(|x| x.0).chain(s.seen().iter().copied())).collect();
        rows.sort_unstable();
        rows.dedup();
        let names = from.items.ids().ids_of(&rows);
        let (live_rows, live_names): (Vec<u32>, Vec<String>) = rows.iter().zip(names).filter(|(_, n)| !n.is_empty()).map(|(&r, n)| (r, n)).unzip();
        let mine = self.resolve_items(&live_names);
        let map: hashbrown::HashMap<u32, u32> = live_rows.into_iter().zip(mine).collect();
        let urows = self.resolve_users(&known);
        let seq = self.events();
        let mut vals = vec![0f32; self.cfg.dim];
        for ((src, st), &dst) in states.iter().zip(&urows) {
            load_row(from.users.row(*src), &mut vals);
            store_row(self.users.row(dst), &vals);
            let mut ns = UserState { events: st.events, last_ts: st.last_ts, session: st.session, last_seq: seq, active_ts: st.active_ts, ..UserState::default() };
            let mut k = 0;
            for &(item, sess) in st.recent() {
                if let Some(&m) = map.get(&item) {
                    if k < RECENT_CAP {
                        ns.recent[k] = (m, sess);
                        k += 1;
                    }
                }
            }
            ns.n_recent = k as u32;
            ns.seen = st.seen().iter().filter_map(|i| map.get(i).copied()).collect();
            ns.seen.sort_unstable();
            ns.seen.dedup();
            *self.user_state.get(dst as usize).lock() = ns;
        }
        Ok(known.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_move_with_their_history_and_factors() {
        let cfg = || Config { dim: 8, snapshot_every: 1, snapshot_ms: 0, ..Config::default() };
        let (a, b) = (Model::new(cfg()).unwrap(), Model::new(Config { seed: 7, ..cfg() }).unwrap());
        a.learn_many(&["u", "u", "w"], &["lamp", "bulb", "desk"], &[3, 3, 3], &[1.0, 2.0, 3.0], &[]).unwrap();
        b.learn_many(&["x"], &["chair"], &[], &[], &[]).unwrap();
        assert_eq!(b.import_users(&a, &["u", "nobody"]).unwrap(), 1);
        let ub = b.users.ids().get("u").unwrap();
        let ua = a.users.ids().get("u").unwrap();
        let fa: Vec<f32> = a.users.row(ua).iter().map(|x| x.load()).collect();
        let fb: Vec<f32> = b.users.row(ub).iter().map(|x| x.load()).collect();
        assert_eq!(fa, fb);
        let st = b.user_state("u").unwrap();
        let names = b.items.ids().ids_of(&st.recent().iter().map(|x| x.0).collect::<Vec<_>>());
        assert_eq!(names, ["bulb", "lamp"]);
        assert_eq!(st.seen().len(), 2);
        assert_eq!(st.events, 2);
        assert!(b.users.ids().get("w").is_none(), "only the users asked for");
        let other = Model::new(Config { dim: 4, ..Config::default() }).unwrap();
        assert!(other.import_users(&a, &["u"]).is_err());
    }
}
