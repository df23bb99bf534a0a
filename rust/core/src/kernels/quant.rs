//! A quantised copy of an item table (int8 per value, one f32 scale per row) scanned first;
//! the best `candidates` rows of that approximate scan are rescored exactly in f32.
//!
//! Reading 1 byte per value instead of 4 is what makes it faster: the exact scan is bound by
//! memory bandwidth. The rescoring makes the returned scores exact; only the candidate set is
//! approximate (a row is missed if quantisation error pushes it below the candidate cut).
//!
//! Layout: rows in blocks of 16, dimensions in groups of 4; a block stores, group by group,
//! 16 rows × 4 bytes (64 bytes, one AVX-512 register), each byte `code + 128` (unsigned).
//! The query is quantised to int8 too, so a block's 16 dot products are integer
//! multiply-adds (`vpdpbusd` on AVX-512 VNNI) straight into 16 lanes, with no horizontal
//! sums. Every level computes the same integers, hence the same approximate scores.

use super::scan::{rows_of, split, topk_scan, Collector, Filter};
use super::{dot_scores, SimdLevel};
use crate::error::Result;
use crate::invalid;

/// Rows per block of the quantised scan (a multiple of 16).
const ROWS: usize = 256;
/// The largest dimension the int32 accumulators cannot overflow on (255 · 127 · 4 · 16384 < 2³¹).
const MAX_DIM: usize = 16384;

/// A fixed-size buffer aligned to 2 MiB and, on Linux, marked for transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`), as numpy does for its large arrays: with 4 KiB pages the
/// hardware prefetcher stops at every page boundary and the streaming scan loses bandwidth.
struct HugeBuf<T: Copy> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
}

// SAFETY: HugeBuf owns its allocation exclusively (like a Box<[T]>); T: Copy + Send/Sync
// makes sharing or moving it across threads as safe as for a Vec<T>.
unsafe impl<T: Copy + Send> Send for HugeBuf<T> {}
// SAFETY: see Send; `&HugeBuf` only gives out `&[T]`.
unsafe impl<T: Copy + Sync> Sync for HugeBuf<T> {}

const HUGE: usize = 2 << 20;

impl<T: Copy> HugeBuf<T> {
    fn layout(len: usize) -> std::alloc::Layout {
        let bytes = (len.max(1)).checked_mul(std::mem::size_of::<T>()).expect("buffer size overflows usize");
        std::alloc::Layout::from_size_align(bytes, HUGE.max(std::mem::align_of::<T>())).expect("valid layout")
    }

    fn new(len: usize, fill: T) -> Self {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size (len.max(1) elements of a non-zero-sized T:
        // only u8 and f32 are used).
        let raw = unsafe { std::alloc::alloc(layout) } as *mut T;
        let Some(ptr) = std::ptr::NonNull::new(raw) else { std::alloc::handle_alloc_error(layout) };
        #[cfg(target_os = "linux")]
        {
            extern "C" {
                fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: std::ffi::c_int) -> std::ffi::c_int;
            }
            const MADV_HUGEPAGE: std::ffi::c_int = 14;
            // SAFETY: the range is exactly our fresh allocation (2 MiB aligned, so page
            // aligned); MADV_HUGEPAGE is only a hint and never changes its contents. A failure
            // (e.g. THP disabled) is harmless and ignored.
            unsafe { madvise(raw as *mut std::ffi::c_void, layout.size(), MADV_HUGEPAGE) };
        }
        for i in 0..len.max(1) {
            // SAFETY: i < len.max(1), inside the allocation; writing initialises every element.
            unsafe { raw.add(i).write(fill) };
        }
        HugeBuf { ptr, len }
    }
}

impl<T: Copy> std::ops::Deref for HugeBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: ptr points to len initialised elements that we own and that live as long as self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> std::ops::DerefMut for HugeBuf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in Deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for HugeBuf<T> {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout; T: Copy needs no drop.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr() as *mut u8, Self::layout(self.len)) }
    }
}

impl<T: Copy + std::fmt::Debug> std::fmt::Debug for HugeBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HugeBuf(len {})", self.len)
    }
}

/// Int8 codes with a per-row scale: `row[d] ≈ scale · code[d]`, `scale = max|row| / 127`.
#[derive(Debug)]
pub struct QuantizedItems {
    n: usize,
    dim: usize,
    /// Groups of 4 dimensions (`dim` rounded up).
    groups: usize,
    codes: HugeBuf<u8>,
    /// One per row, padded to a multiple of 16 with zeros.
    scales: HugeBuf<f32>,
}

/// A query quantised to int8: `q ≈ scale · codes`, packed 4 codes per `i32` (one per group).
pub(crate) struct QQuery {
    packed: Vec<i32>,
    /// `scale` and `128 · Σ codes` (the offset the unsigned item bytes add).
    scale: f32,
    offset: i32,
}

impl QQuery {
    fn new(q: &[f32], groups: usize) -> Self {
        let amax = q.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if amax > 0.0 && amax.is_finite() { amax / 127.0 } else { 1.0 };
        let mut codes = vec![0i8; groups * 4];
        for (c, &x) in codes.iter_mut().zip(q) {
            // `as` saturates and maps NaN to 0: no input overflows.
            *c = (x / scale).round().clamp(-127.0, 127.0) as i8;
        }
        let offset = 128 * codes.iter().map(|&c| c as i32).sum::<i32>();
        let packed = codes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8])).collect();
        QQuery { packed, scale, offset }
    }
}

/// Plain-loop twin of the SIMD block kernels: `out[16 b + r]` for the `out.len() / 16` blocks
/// at the start of `codes` / `scales`, and `masks[b]` bit `r` set when it is above `thr`.
fn block_scores_scalar(codes: &[u8], scales: &[f32], groups: usize, q: &QQuery, thr: f32, out: &mut [f32], masks: &mut [u16]) {
    for (b, o) in out.chunks_exact_mut(16).enumerate() {
        let mut acc = [0i32; 16];
        let blk = &codes[b * groups * 64..(b + 1) * groups * 64];
        for (g, grp) in blk.chunks_exact(64).enumerate() {
            let qb = q.packed[g].to_le_bytes();
            for (r, a) in acc.iter_mut().enumerate() {
                for j in 0..4 {
                    *a += grp[r * 4 + j] as i32 * qb[j] as i8 as i32;
                }
            }
        }
        let mut m = 0u16;
        for r in 0..16 {
            o[r] = (acc[r] - q.offset) as f32 * scales[b * 16 + r] * q.scale;
            m |= ((o[r] > thr) as u16) << r;
        }
        masks[b] = m;
    }
}

#[allow(clippy::too_many_arguments)]
/// Approximate scores of whole blocks on the best kernel of `level` the CPU supports.
fn block_scores(level: SimdLevel, codes: &[u8], scales: &[f32], groups: usize, q: &QQuery, thr: f32, out: &mut [f32], masks: &mut [u16]) {
    let blocks = out.len() / 16;
    assert!(out.len() % 16 == 0 && codes.len() >= blocks * groups * 64 && scales.len() >= blocks * 16 && q.packed.len() == groups && masks.len() >= blocks);
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if level.supported() && std::arch::is_x86_feature_detected!("avx512vnni") => {
            // SAFETY: the CPU supports AVX-512F and VNNI (checked just above); shapes asserted above.
            unsafe { super::x86::block_scores_vnni(codes, scales, groups, &q.packed, q.scale, q.offset, thr, out, masks) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 | SimdLevel::Avx512 if SimdLevel::Avx2.supported() => {
            // SAFETY: the CPU supports AVX2 (checked by `supported`); shapes asserted above.
            unsafe { super::x86::block_scores_avx2(codes, scales, groups, &q.packed, q.scale, q.offset, thr, out, masks) }
        }
        _ => block_scores_scalar(codes, scales, groups, q, thr, out, masks),
    }
}

/// Asks the CPU to start loading `row` into cache (rescoring reads rows in random order).
#[inline]
fn prefetch_row(row: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in row.chunks(16) {
        // SAFETY: a prefetch is only a hint: it never faults or changes memory, and SSE (which
        // provides it) is part of the x86-64 baseline; the address is inside `row`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr() as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

impl QuantizedItems {
    /// Quantises `items` (`n × dim`, row-major, `dim <= 16384`). Non-finite values give
    /// meaningless (but safe) approximate scores for their rows.
    pub fn new(items: &[f32], dim: usize) -> Result<Self> {
        let n = rows_of(items, dim, dim)?;
        if dim > MAX_DIM {
            return invalid!("the quantised table supports dimensions up to {MAX_DIM}, got {dim}");
        }
        let groups = dim.div_ceil(4);
        let blocks = n.div_ceil(16);
        let mut codes = HugeBuf::new(blocks * groups * 64, 128u8);
        let mut scales = HugeBuf::new(blocks * 16, 0f32);
        for (r, row) in items.chunks_exact(dim).enumerate() {
            let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
            let s = if amax > 0.0 && amax.is_finite() { amax / 127.0 } else { 1.0 };
            let (b, rr) = (r / 16, r % 16);
            for (d, &x) in row.iter().enumerate() {
                // `as` saturates and maps NaN to 0, so no input overflows.
                let c = (x / s).round().clamp(-127.0, 127.0) as i32;
                codes[((b * groups + d / 4) * 16 + rr) * 4 + d % 4] = (c + 128) as u8;
            }
            scales[r] = s;
        }
        Ok(QuantizedItems { n, dim, groups, codes, scales })
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Bytes held by the codes and scales.
    pub fn nbytes(&self) -> usize {
        self.codes.len() + 4 * self.scales.len()
    }

    /// Approximate scores of rows `a..b` (`a` a multiple of 16) into `buf[..b - a]`, and
    /// per 16 rows a bit mask of the scores above `thr`.
    #[allow(clippy::too_many_arguments)]
    fn scores_range(&self, level: SimdLevel, q: &QQuery, a: usize, b: usize, thr: f32, buf: &mut [f32], masks: &mut [u16]) {
        let (b0, b1) = (a / 16, b.div_ceil(16));
        let g = self.groups;
        block_scores(level, &self.codes[b0 * g * 64..b1 * g * 64], &self.scales[b0 * 16..b1 * 16], g, q, thr, &mut buf[..(b1 - b0) * 16], masks);
    }

    /// The approximate (dequantised) score of every row `< out.len()` (for tests and recall checks).
    pub fn approx_scores(&self, level: SimdLevel, q: &[f32], out: &mut [f32]) -> Result<()> {
        if q.len() != self.dim || out.len() > self.n {
            return invalid!("approx_scores: query of {} values for dimension {}, {} outputs for {} rows", q.len(), self.dim, out.len(), self.n);
        }
        let qq = QQuery::new(q, self.groups);
        let mut buf = [0f32; ROWS];
        let mut masks = [0u16; ROWS / 16];
        for a in (0..out.len()).step_by(ROWS) {
            let b = (a + ROWS).min(out.len());
            self.scores_range(level, &qq, a, b, f32::INFINITY, &mut buf, &mut masks);
            out[a..b].copy_from_slice(&buf[..b - a]);
        }
        Ok(())
    }

    /// The best `k` rows for `q`: the best `max(candidates, k)` rows of the int8 scan
    /// (exclusions applied there), rescored exactly against `items` (the f32 table this was
    /// built from). An allow-list is scanned exactly (it is usually small).
    #[allow(clippy::too_many_arguments)]
    pub fn topk(&self, level: SimdLevel, items: &[f32], q: &[f32], k: usize, candidates: usize, filter: &Filter, threads: usize) -> Result<Vec<(u32, f32)>> {
        let dim = self.dim;
        if items.len() != self.n * dim {
            return invalid!("items has {} values, but the quantised table is {} × {dim}", items.len(), self.n);
        }
        if q.len() != dim {
            return invalid!("the query has {} values, expected {dim}", q.len());
        }
        filter.check(self.n)?;
        if filter.allow.is_some() {
            return topk_scan(level, items, dim, q, k, filter, 1);
        }
        let k = k.min(self.n);
        if k == 0 {
            return Ok(Vec::new());
        }
        let c = candidates.max(k).min(self.n);
        let qq = QQuery::new(q, self.groups);
        let scan = |a: usize, b: usize| {
            let mut col = Collector::new(c);
            let mut buf = [0f32; ROWS];
            let mut masks = [0u16; ROWS / 16];
            let mut i0 = a;
            while i0 < b {
                let nb = ROWS.min(b - i0);
                self.scores_range(level, &qq, i0, i0 + nb, col.threshold(), &mut buf, &mut masks);
                // The kernel compared every score with the threshold: visit only the hits.
                for (g, &m) in masks[..nb.div_ceil(16)].iter().enumerate() {
                    let mut m = m;
                    while m != 0 {
                        let j = g * 16 + m.trailing_zeros() as usize;
                        m &= m - 1;
                        if j >= nb {
                            break;
                        }
                        let (s, id) = (buf[j], (i0 + j) as u32);
                        if s > col.threshold() && !filter.excluded(id) {
                            col.push(id, s);
                        }
                    }
                }
                i0 += nb;
            }
            col
        };
        let ranges = split(self.n, threads, ROWS);
        let ids = if ranges.len() > 1 {
            use rayon::prelude::*;
            let parts: Vec<Collector> = ranges.into_par_iter().map(|(a, b)| scan(a, b)).collect();
            let mut all = Collector::new(c);
            for p in parts {
                all.absorb(p);
            }
            all.into_ids()
        } else {
            scan(0, self.n).into_ids()
        };
        // Exact rescoring, in increasing id order (ties to the lower id, and friendlier to memory).
        let mut col = Collector::new(k);
        let mut s = [0f32];
        const AHEAD: usize = 8;
        for (i, &id) in ids.iter().enumerate() {
            if let Some(&next) = ids.get(i + AHEAD) {
                prefetch_row(&items[next as usize * dim..(next as usize + 1) * dim]);
            }
            let r = id as usize;
            dot_scores(level, &items[r * dim..(r + 1) * dim], dim, q, &mut s);
            col.push(id, s[0]);
        }
        Ok(col.into_sorted())
    }
}

impl QuantizedItems {
    /// [`QuantizedItems::topk`] for each of the `queries.len() / dim` queries; `filters` holds
    /// one filter for all or one per query. Several queries run in parallel (one thread
    /// each); a single query splits its scan over `threads`.
    #[allow(clippy::too_many_arguments)]
    pub fn topk_many(&self, level: SimdLevel, items: &[f32], queries: &[f32], k: usize, candidates: usize, filters: &[Filter], threads: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        let dim = self.dim;
        if queries.len() % dim != 0 {
            return invalid!("queries have {} values, not a multiple of the dimension {dim}", queries.len());
        }
        let m = queries.len() / dim;
        if filters.len() != 1 && filters.len() != m {
            return invalid!("give one filter for all queries or one per query ({m}), not {}", filters.len());
        }
        let one = |i: usize, t: usize| {
            let f = if filters.len() == 1 { &filters[0] } else { &filters[i] };
            self.topk(level, items, &queries[i * dim..(i + 1) * dim], k, candidates, f, t)
        };
        if m == 1 || threads <= 1 {
            (0..m).map(|i| one(i, threads)).collect()
        } else {
            use rayon::prelude::*;
            (0..m).into_par_iter().map(|i| one(i, 1)).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::scalar;

    fn data(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn int8_kernels_agree_on_every_level_and_approximate_the_exact_scores() {
        let mut seed = 11;
        for &dim in &[1usize, 7, 8, 15, 16, 17, 31, 32, 33, 64, 65] {
            let n = 37 + dim;
            let items = data(n * dim, &mut seed);
            let q = data(dim, &mut seed);
            let qi = QuantizedItems::new(&items, dim).unwrap();
            let mut exact = vec![0f32; n];
            scalar::dot_scores(&items, dim, &q, &mut exact);
            let mut want = vec![0f32; n];
            qi.approx_scores(SimdLevel::Scalar, &q, &mut want).unwrap();
            for level in SimdLevel::available() {
                let mut got = vec![0f32; n];
                qi.approx_scores(level, &q, &mut got).unwrap();
                for r in 0..n {
                    // The same integers on every level, so the same floats.
                    assert_eq!(got[r], want[r], "{level:?} dim {dim} row {r}");
                    assert!((got[r] - exact[r]).abs() <= 0.01 * dim as f32, "{level:?} dim {dim}: {} vs {}", got[r], exact[r]);
                }
            }
        }
    }

    #[test]
    fn with_every_row_as_candidate_the_answer_is_exact() {
        let mut seed = 5;
        let (n, dim) = (777, 19);
        let items = data(n * dim, &mut seed);
        let qi = QuantizedItems::new(&items, dim).unwrap();
        let excl: Vec<u32> = (0..n as u32).step_by(5).collect();
        let f = Filter { exclude: &excl, allow: None };
        for level in SimdLevel::available() {
            for threads in [1, 2] {
                let q = data(dim, &mut seed);
                let want = topk_scan(level, &items, dim, &q, 10, &f, 1).unwrap();
                assert_eq!(qi.topk(level, &items, &q, 10, n, &f, threads).unwrap(), want);
                // A modest candidate count still finds the exact top-10 on this data.
                assert_eq!(qi.topk(level, &items, &q, 10, 100, &f, threads).unwrap(), want);
            }
        }
    }

    #[test]
    fn mismatched_tables_are_errors() {
        let items = vec![1f32; 40];
        let qi = QuantizedItems::new(&items, 4).unwrap();
        assert!(qi.topk(SimdLevel::Scalar, &items[..36], &[0.0; 4], 1, 5, &Filter::NONE, 1).is_err());
        assert!(qi.topk(SimdLevel::Scalar, &items, &[0.0; 3], 1, 5, &Filter::NONE, 1).is_err());
        assert!(QuantizedItems::new(&items, 3).is_err());
        assert!(QuantizedItems::new(&[f32::NAN, f32::INFINITY], 2).is_ok());
    }
}
