//! Bounded neighbour lists for the item-to-item co-occurrence signal.
//!
//! Each item keeps at most [`NBR_CAP`] neighbours with their accumulated pair weights, in
//! fixed arrays inline in the item's row: no allocation, no hashing, and an address known
//! from the item number alone, so the learner can prefetch it. When a list is full, a new
//! neighbour takes the place of the weakest one (the strong pairs, the ones that matter for
//! ranking, stay; the tail turns over as the stream moves on).

/// The most neighbours an item keeps.
pub const NBR_CAP: usize = 128;

/// One item's neighbours. See the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct NeighborList {
    len: u32,
    ids: [u32; NBR_CAP],
    w: [f32; NBR_CAP],
}

impl Default for NeighborList {
    fn default() -> Self {
        NeighborList { len: 0, ids: [0; NBR_CAP], w: [0.0; NBR_CAP] }
    }
}

/// The position of `id` in `ids`, scanning 16 at a time without early exit inside a block
/// (so the compiler can vectorise the compares).
#[inline]
fn find(ids: &[u32], id: u32) -> Option<usize> {
    for (c, chunk) in ids.chunks(16).enumerate() {
        let mut mask = 0u32;
        for (k, &x) in chunk.iter().enumerate() {
            mask |= ((x == id) as u32) << k;
        }
        if mask != 0 {
            return Some(c * 16 + mask.trailing_zeros() as usize);
        }
    }
    None
}

impl NeighborList {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `w` to the pair weight of `id`; a new neighbour of a full list (`cap` entries,
    /// at most [`NBR_CAP`]) replaces the weakest.
    #[inline]
    pub fn add(&mut self, id: u32, w: f32, cap: usize) {
        let n = self.len as usize;
        if let Some(p) = find(&self.ids[..n], id) {
            self.w[p] += w;
            return;
        }
        let cap = cap.clamp(1, NBR_CAP);
        if n < cap {
            self.ids[n] = id;
            self.w[n] = w;
            self.len += 1;
            return;
        }
        // Two branch-free passes (the compiler vectorises both): the minimum, then its place.
        let min = self.w[..n].iter().fold(f32::INFINITY, |a, &b| a.min(b));
        let m = self.w[..n].iter().position(|&x| x == min).unwrap_or(0);
        self.ids[m] = id;
        self.w[m] = w;
    }

    /// (neighbour, weight) pairs, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, f32)> + '_ {
        self.ids[..self.len as usize].iter().copied().zip(self.w[..self.len as usize].iter().copied())
    }

    /// Replaces the contents (snapshot loading); keeps the strongest `NBR_CAP` if given more.
    pub fn set(&mut self, mut pairs: Vec<(u32, f32)>) {
        if pairs.len() > NBR_CAP {
            pairs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            pairs.truncate(NBR_CAP);
        }
        *self = NeighborList::default();
        for (k, (id, w)) in pairs.into_iter().enumerate() {
            self.ids[k] = id;
            self.w[k] = w;
            self.len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulates_and_replaces_the_weakest_when_full() {
        let mut l = NeighborList::default();
        for id in 0..4 {
            l.add(id, 1.0 + id as f32, 4);
        }
        l.add(2, 10.0, 4);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![(0, 1.0), (1, 2.0), (2, 13.0), (3, 4.0)]);
        l.add(9, 0.5, 4);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![(9, 0.5), (1, 2.0), (2, 13.0), (3, 4.0)]);
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn find_matches_a_linear_search() {
        let ids: Vec<u32> = (0..NBR_CAP as u32).map(|i| i * 7 % 61).collect();
        for n in [0, 1, 15, 16, 17, 40, NBR_CAP] {
            for id in 0..70 {
                assert_eq!(find(&ids[..n], id), ids[..n].iter().position(|&x| x == id), "n {n} id {id}");
            }
        }
    }
}
