//! Bounded neighbour lists for the item-to-item co-occurrence signal.
//!
//! Each item keeps at most [`NBR_CAP`] neighbours with their accumulated pair weights, in
//! fixed arrays inline in the item's row: no allocation, no hashing, and an address known
//! from the item number alone, so the learner can prefetch it. When a list is full, a new
//! neighbour takes the place of the weakest one (the strong pairs, the ones that matter for
//! ranking, stay; the tail turns over as the stream moves on).

/// The most neighbours an item keeps.
pub const NBR_CAP: usize = 128;
/// Entries looked at to choose an eviction.
const EVICT_WINDOW: usize = 16;

/// Bytes from the start of a [`NeighborList`] that a lookup scans: the header and the ids.
pub const SCAN_BYTES: usize = 4 + 4 * NBR_CAP;

/// One item's neighbours. See the module docs. `repr(C)` keeps the header and the ids
/// first, in the lines the learner prefetches.
#[derive(Clone, Debug, PartialEq)]
#[repr(C)]
pub struct NeighborList {
    len: u16,
    /// Where the next eviction looks (rotates through the list).
    cursor: u16,
    ids: [u32; NBR_CAP],
    w: [f32; NBR_CAP],
}

impl Default for NeighborList {
    fn default() -> Self {
        NeighborList { len: 0, cursor: 0, ids: [0; NBR_CAP], w: [0.0; NBR_CAP] }
    }
}

/// The position of `id` in `ids`, 16 at a time: each block is a fixed-size compare and a
/// bit mask, which the compiler turns into vector compares (SSE2 and up).
#[inline]
fn find(ids: &[u32], id: u32) -> Option<usize> {
    let mut blocks = ids.chunks_exact(16);
    for (c, block) in blocks.by_ref().enumerate() {
        let block: &[u32; 16] = match block.try_into() {
            Ok(b) => b,
            Err(_) => break,
        };
        let mut mask = 0u32;
        for k in 0..16 {
            mask |= ((block[k] == id) as u32) << k;
        }
        if mask != 0 {
            return Some(c * 16 + mask.trailing_zeros() as usize);
        }
    }
    let base = ids.len() - blocks.remainder().len();
    blocks.remainder().iter().position(|&x| x == id).map(|p| base + p)
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
        // The weakest of a 16-entry window (one cache line of weights) gives way; the window
        // rotates, so every entry is looked at once per n/16 evictions. Strong pairs are
        // never the weakest of their window and stay.
        let start = (self.cursor as usize) % n;
        let end = (start + EVICT_WINDOW).min(n);
        let win = &self.w[start..end];
        let min = win.iter().fold(f32::INFINITY, |a, &b| a.min(b));
        let m = start + win.iter().position(|&x| x == min).unwrap_or(0);
        self.cursor = if end == n { 0 } else { end as u16 };
        self.ids[m] = id;
        self.w[m] = w;
    }

    /// Keeps the neighbours `keep` accepts (in order).
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        let n = self.len as usize;
        let mut k = 0;
        for j in 0..n {
            if keep(self.ids[j]) {
                self.ids[k] = self.ids[j];
                self.w[k] = self.w[j];
                k += 1;
            }
        }
        self.len = k as u16;
        self.cursor = 0;
    }

    /// Multiplies every weight by `f` (the forward-decay rescale).
    pub fn scale(&mut self, f: f32) {
        let n = self.len as usize;
        self.w[..n].iter_mut().for_each(|w| *w *= f);
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
        // The strongest entry survives any number of newcomers.
        for id in 100..500 {
            l.add(id, 1.0, 4);
        }
        assert!(l.iter().any(|e| e == (2, 13.0)));
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
