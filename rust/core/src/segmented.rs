//! Storage whose rows never move: the foundation of the lock-free tables.
//!
//! A [`Segmented`] keeps rows of `stride` elements in segments of doubling size (segment `s`
//! holds `BASE_ROWS << s` rows). A segment is allocated once, through a [`OnceLock`], and
//! never reallocated or freed while the table lives, so a `&[T]` to a row stays valid while
//! other threads add rows: growing only ever initialises a segment that was empty. 40
//! segments give room for more than 10^15 rows, far past any catalogue.
//!
//! Nothing here is `unsafe`: element types are atomics or locks, so concurrent readers and
//! writers of one row are ordinary, well-defined atomic operations.

use std::sync::OnceLock;

/// Rows in the first segment; segment `s` holds `BASE_ROWS << s` rows.
pub const BASE_ROWS: usize = 1024;
const SEGMENTS: usize = 40;

/// Rows of `stride` elements each, in segments that never move. See the module docs.
pub struct Segmented<T> {
    stride: usize,
    segments: Box<[OnceLock<Box<[T]>>]>,
}

/// The segment that holds `row`, and the row's index inside it.
#[inline]
fn locate(row: usize) -> (usize, usize) {
    let q = row / BASE_ROWS + 1;
    let seg = (usize::BITS - 1 - q.leading_zeros()) as usize;
    let first = BASE_ROWS * ((1usize << seg) - 1);
    (seg, row - first)
}

impl<T: Default> Segmented<T> {
    /// An empty table of rows with `stride` elements (stride ≥ 1).
    pub fn new(stride: usize) -> Self {
        let stride = stride.max(1);
        Self { stride, segments: (0..SEGMENTS).map(|_| OnceLock::new()).collect() }
    }

    /// Elements per row.
    #[inline]
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Makes sure that rows `0..rows` exist (new elements are `T::default()`). Safe to call
    /// from several threads at once: each segment is initialised exactly once.
    pub fn ensure(&self, rows: usize) {
        if rows == 0 {
            return;
        }
        let (last, _) = locate(rows - 1);
        for seg in 0..=last.min(SEGMENTS - 1) {
            self.segments[seg].get_or_init(|| {
                let n = (BASE_ROWS << seg) * self.stride;
                (0..n).map(|_| T::default()).collect()
            });
        }
    }

    /// The row, or `None` when its segment has not been allocated yet.
    #[inline]
    pub fn try_row(&self, row: usize) -> Option<&[T]> {
        let (seg, off) = locate(row);
        let s = self.segments.get(seg)?.get()?;
        s.get(off * self.stride..(off + 1) * self.stride)
    }

    /// The row. Rows are only handed out (as ids) after [`Segmented::ensure`], so a missing
    /// row is a logic error inside the core, never an input error.
    #[inline]
    pub fn row(&self, row: usize) -> &[T] {
        match self.try_row(row) {
            Some(r) => r,
            None => panic!("row {row} used before it was allocated"),
        }
    }

    /// The first element of a row (for tables with stride 1).
    #[inline]
    pub fn get(&self, row: usize) -> &T {
        &self.row(row)[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn locate_covers_rows_in_order() {
        let mut expected = (0usize, 0usize);
        for row in 0..BASE_ROWS * 20 {
            let got = locate(row);
            assert_eq!(got, expected, "row {row}");
            expected.1 += 1;
            if expected.1 == BASE_ROWS << expected.0 {
                expected = (expected.0 + 1, 0);
            }
        }
    }

    #[test]
    fn rows_do_not_move_when_the_table_grows() {
        let t: Segmented<AtomicU32> = Segmented::new(3);
        t.ensure(10);
        let p = t.row(5).as_ptr();
        t.row(5)[2].store(7, Ordering::Relaxed);
        t.ensure(BASE_ROWS * 50);
        assert_eq!(t.row(5).as_ptr(), p);
        assert_eq!(t.row(5)[2].load(Ordering::Relaxed), 7);
        assert_eq!(t.row(BASE_ROWS * 50 - 1).len(), 3);
        assert!(t.try_row(BASE_ROWS * 100).is_none());
    }
}
