//! Fused scan + top-K: score item rows against one or many queries and keep the best `k`
//! without materialising all scores.
//!
//! * One query: rows are scored in blocks of [`ROWS`] into a buffer that stays in L1, 16
//!   rows at a time on AVX2 / AVX-512 (their sums reduced together and compared with the
//!   current k-th best in registers, so a block with no candidate costs one mask test);
//!   only the few rows that beat the threshold are looked at further (exclusions are checked
//!   there, by binary search in a sorted id list). [`ScanKernel::Rows`], one dot product per
//!   row, is kept as the reference.
//! * Many queries: a block of [`NB`] items is transposed once (dimension-major, in L1) and
//!   every tile of [`QT`] queries is multiplied against it with a register-blocked kernel
//!   that also compares against each query's threshold in registers; the item matrix is read
//!   from memory once per batch. Item ranges are spread over rayon threads, each with its
//!   own collectors, merged at the end.
//! * Allow-lists: only the allowed rows are scored.
//!
//! Ties go to the lower id: every collector sees ids in increasing order and only admits a
//! score strictly above its k-th best, and merges sort by (score desc, id asc).

use std::cmp::Ordering;

use rayon::prelude::*;

use super::tile::{NB, QT};
use super::{dot_scores, scalar, SimdLevel};
use crate::error::Result;
use crate::invalid;

/// Rows per block of the single-query scan (a 1 KiB score buffer).
const ROWS: usize = 256;

/// Which rows a query may return: `exclude` ids never, and if `allow` is given, only those.
/// Both lists are sorted ascending without duplicates ([`Filter::check`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter<'a> {
    pub exclude: &'a [u32],
    pub allow: Option<&'a [u32]>,
}

impl Filter<'_> {
    /// No exclusions, no allow-list.
    pub const NONE: Filter<'static> = Filter { exclude: &[], allow: None };

    /// Errors unless both lists are strictly increasing and the allow-list holds only rows `< n`.
    pub fn check(&self, n: usize) -> Result<()> {
        if !self.exclude.windows(2).all(|w| w[0] < w[1]) {
            return invalid!("exclude must be sorted ascending without duplicates");
        }
        if let Some(a) = self.allow {
            if !a.windows(2).all(|w| w[0] < w[1]) {
                return invalid!("allow must be sorted ascending without duplicates");
            }
            if let Some(&last) = a.last() {
                if last as usize >= n {
                    return invalid!("allow holds row {last}, but there are only {n} items");
                }
            }
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn excluded(&self, id: u32) -> bool {
        !self.exclude.is_empty() && self.exclude.binary_search(&id).is_ok()
    }
}

/// Better first: higher score, then lower id.
#[inline]
fn better(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Keeps the best `k` of a stream of (id, score) fed in increasing id order: candidates
/// strictly above the threshold go to a buffer; when it holds `2k + 32`, a selection keeps
/// the best `k` and raises the threshold to the k-th best score.
pub(crate) struct Collector {
    k: usize,
    cap: usize,
    thr: f32,
    buf: Vec<(f32, u32)>,
}

impl Collector {
    pub(crate) fn new(k: usize) -> Self {
        let cap = 2 * k + 32;
        Collector { k, cap, thr: if k == 0 { f32::INFINITY } else { f32::NEG_INFINITY }, buf: Vec::with_capacity(cap.min(1024)) }
    }

    /// The score a new (higher-id) candidate must strictly beat. NaN and −∞ never do.
    #[inline]
    pub(crate) fn threshold(&self) -> f32 {
        self.thr
    }

    /// Offers a candidate; callers usually test `s > threshold()` first (cheaper inline).
    #[inline]
    pub(crate) fn push(&mut self, id: u32, s: f32) {
        if s > self.thr {
            self.buf.push((s, id));
            if self.buf.len() >= self.cap {
                self.compact();
            }
        }
    }

    #[cold]
    pub(crate) fn compact(&mut self) {
        if self.k > 0 && self.buf.len() > self.k {
            self.buf.select_nth_unstable_by(self.k - 1, better);
            self.buf.truncate(self.k);
            self.thr = self.buf[self.k - 1].0;
        }
    }

    /// Takes in another collector's candidates (the best `k` of both are kept).
    pub(crate) fn absorb(&mut self, other: Collector) {
        self.buf.extend(other.buf);
        self.compact();
    }

    /// The ids of the best `k` kept, in increasing id order.
    pub(crate) fn into_ids(mut self) -> Vec<u32> {
        self.compact();
        let mut ids: Vec<u32> = self.buf.into_iter().map(|c| c.1).collect();
        ids.sort_unstable();
        ids
    }

    /// The kept (id, score), best first.
    pub(crate) fn into_sorted(self) -> Vec<(u32, f32)> {
        merge(vec![self])
    }
}

/// The best `k` of several collectors (all with the same `k`), best first.
pub(crate) fn merge(parts: Vec<Collector>) -> Vec<(u32, f32)> {
    let k = parts.first().map_or(0, |c| c.k);
    let mut all: Vec<(f32, u32)> = if parts.len() == 1 {
        parts.into_iter().next().map(|c| c.buf).unwrap_or_default()
    } else {
        parts.into_iter().flat_map(|c| c.buf).collect()
    };
    if all.len() > k && k > 0 {
        all.select_nth_unstable_by(k - 1, better);
    }
    all.truncate(k);
    all.sort_unstable_by(better);
    all.into_iter().map(|(s, i)| (i, s)).collect()
}

/// Rows of `items` given a row width, checking that the shapes fit.
pub(crate) fn rows_of(items: &[f32], dim: usize, qlen: usize) -> Result<usize> {
    if dim == 0 {
        return invalid!("the dimension must be at least 1");
    }
    if items.len() % dim != 0 {
        return invalid!("items has {} values, not a multiple of the dimension {dim}", items.len());
    }
    if qlen % dim != 0 || qlen == 0 {
        return invalid!("queries have {qlen} values, not a positive multiple of the dimension {dim}");
    }
    let n = items.len() / dim;
    if n > u32::MAX as usize {
        return invalid!("at most {} items are supported, got {n}", u32::MAX);
    }
    Ok(n)
}

/// Splits `0..n` into at most `parts` ranges whose starts are multiples of `align`.
pub(crate) fn split(n: usize, parts: usize, align: usize) -> Vec<(usize, usize)> {
    let parts = parts.max(1);
    let per = n.div_ceil(parts).div_ceil(align).max(1) * align;
    (0..n).step_by(per).map(|a| (a, (a + per).min(n))).collect()
}

/// How the single-query scan scores rows (the blocked kernel is the default; the row-wise
/// one is kept as the reference for benchmarks and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanKernel {
    /// One dot product per row into a score buffer, then a scalar threshold loop.
    Rows,
    /// 16 rows at a time, reduced together and compared with the threshold in registers
    /// (AVX2 / AVX-512; other levels use [`ScanKernel::Rows`]).
    Blocked,
}

/// Scores rows `a..b` against `q` into `col`, honouring `filter.exclude` (not `allow`).
#[allow(clippy::too_many_arguments)]
fn scan_range(level: SimdLevel, kernel: ScanKernel, items: &[f32], dim: usize, q: &[f32], a: usize, b: usize, filter: &Filter, col: &mut Collector) {
    let mut buf = [0f32; ROWS];
    let mut masks = [0u16; ROWS / 16];
    let mut i0 = a;
    while i0 < b {
        let nb = ROWS.min(b - i0);
        let blocked = nb / 16 * 16;
        let rows = &items[i0 * dim..(i0 + nb) * dim];
        if kernel == ScanKernel::Blocked && blocked > 0 && block_scores(level, rows, dim, q, col.threshold(), &mut buf[..blocked], &mut masks) {
            for (g, &m) in masks[..blocked / 16].iter().enumerate() {
                let mut m = m;
                while m != 0 {
                    let j = g * 16 + m.trailing_zeros() as usize;
                    m &= m - 1;
                    let s = buf[j];
                    let id = (i0 + j) as u32;
                    if s > col.threshold() && !filter.excluded(id) {
                        col.push(id, s);
                    }
                }
            }
            // The last rows of the range (fewer than 16) go row by row.
            if blocked < nb {
                dot_scores(level, &rows[blocked * dim..], dim, q, &mut buf[blocked..nb]);
                push_scores(&buf[blocked..nb], i0 + blocked, filter, col);
            }
        } else {
            dot_scores(level, rows, dim, q, &mut buf[..nb]);
            push_scores(&buf[..nb], i0, filter, col);
        }
        i0 += nb;
    }
}

/// Offers `scores` (of rows `first..`) that beat the threshold and are not excluded.
#[inline]
fn push_scores(scores: &[f32], first: usize, filter: &Filter, col: &mut Collector) {
    for (j, &s) in scores.iter().enumerate() {
        if s > col.threshold() {
            let id = (first + j) as u32;
            if !filter.excluded(id) {
                col.push(id, s);
            }
        }
    }
}

/// The blocked kernel of `level` (see `x86::scan_block_avx512` for the contract); `false`
/// when `level` has none (scalar, NEON, or a level the CPU lacks), and then nothing is written.
fn block_scores(level: SimdLevel, rows: &[f32], dim: usize, q: &[f32], thr: f32, out: &mut [f32], masks: &mut [u16]) -> bool {
    assert!(q.len() == dim && dim >= 1 && out.len() % 16 == 0 && rows.len() >= out.len() * dim && masks.len() >= out.len() / 16);
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if level.supported() => {
            // SAFETY: the CPU supports AVX-512F (checked by `supported`); shapes asserted above.
            unsafe { super::x86::scan_block_avx512(rows, dim, q, thr, out, masks) };
            true
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 | SimdLevel::Avx512 if SimdLevel::Avx2.supported() => {
            // SAFETY: the CPU supports AVX2 and FMA (checked by `supported`); shapes asserted above.
            unsafe { super::x86::scan_block_avx2(rows, dim, q, thr, out, masks) };
            true
        }
        _ => false,
    }
}

/// Scores only the allowed rows (skipping excluded ones).
fn scan_allowed(level: SimdLevel, items: &[f32], dim: usize, q: &[f32], allow: &[u32], filter: &Filter, col: &mut Collector) {
    let mut s = [0f32];
    for &id in allow {
        let r = id as usize;
        dot_scores(level, &items[r * dim..(r + 1) * dim], dim, q, &mut s);
        if s[0] > col.threshold() && !filter.excluded(id) {
            col.push(id, s[0]);
        }
    }
}

/// Runs `f` on `threads` item ranges (rayon, in the current pool) and merges the collectors.
fn parallel_ranges(n: usize, k: usize, threads: usize, f: impl Fn(usize, usize, &mut Collector) + Sync) -> Vec<(u32, f32)> {
    let ranges = split(n, threads, ROWS);
    if ranges.len() <= 1 {
        let mut col = Collector::new(k);
        f(0, n, &mut col);
        return col.into_sorted();
    }
    let parts: Vec<Collector> = ranges
        .into_par_iter()
        .map(|(a, b)| {
            let mut col = Collector::new(k);
            f(a, b, &mut col);
            col
        })
        .collect();
    merge(parts)
}

/// The best `k` rows of `items` (`n × dim`, row-major) for the query `q`, best first, ties to
/// the lower id; rows scoring NaN or −∞ are never returned (so fewer than `k` may come back).
/// `threads > 1` splits the rows over the current rayon pool.
pub fn topk_scan(level: SimdLevel, items: &[f32], dim: usize, q: &[f32], k: usize, filter: &Filter, threads: usize) -> Result<Vec<(u32, f32)>> {
    topk_scan_with(level, ScanKernel::Blocked, items, dim, q, k, filter, threads)
}

/// [`topk_scan`] with the kernel chosen (the answers are the same; only the speed differs).
#[allow(clippy::too_many_arguments)]
pub fn topk_scan_with(level: SimdLevel, kernel: ScanKernel, items: &[f32], dim: usize, q: &[f32], k: usize, filter: &Filter, threads: usize) -> Result<Vec<(u32, f32)>> {
    let n = rows_of(items, dim, q.len())?;
    if q.len() != dim {
        return invalid!("the query has {} values, expected {dim}", q.len());
    }
    filter.check(n)?;
    let k = k.min(n);
    if k == 0 {
        return Ok(Vec::new());
    }
    if let Some(allow) = filter.allow {
        let mut col = Collector::new(k);
        scan_allowed(level, items, dim, q, allow, filter, &mut col);
        return Ok(col.into_sorted());
    }
    Ok(parallel_ranges(n, k, threads, |a, b, col| scan_range(level, kernel, items, dim, q, a, b, filter, col)))
}

/// One tile of the batched product (see `x86::tile_scores_avx512` for the contract), on the
/// best kernel of `level` the CPU supports.
fn tile_scores(level: SimdLevel, it: &[f32], dim: usize, qtt: &[f32], thr: &[f32; QT], out: &mut [f32], masks: &mut [u16]) {
    assert!(it.len() >= dim * NB && qtt.len() >= dim * QT && out.len() >= QT * NB && masks.len() >= QT * NB / 16);
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if level.supported() => {
            // SAFETY: the CPU supports AVX-512F (checked by `supported`); shapes asserted above.
            unsafe { super::x86::tile_scores_avx512(it, dim, qtt, thr, out, masks) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 | SimdLevel::Avx512 if SimdLevel::Avx2.supported() => {
            // SAFETY: the CPU supports AVX2 and FMA (checked by `supported`); shapes asserted above.
            unsafe { super::x86::tile_scores_avx2(it, dim, qtt, thr, out, masks) }
        }
        _ => scalar::tile_scores(it, dim, qtt, thr, out, masks),
    }
}

/// Scores item rows `a..b` against every query (tiles of `qtiles`) into `cols[q]`.
#[allow(clippy::too_many_arguments)]
fn batch_range(level: SimdLevel, items: &[f32], dim: usize, qtiles: &[f32], m: usize, a: usize, b: usize, filters: &[Filter], cols: &mut [Collector]) {
    let ntiles = m.div_ceil(QT);
    let mut it = vec![0f32; dim * NB];
    let mut out = vec![0f32; QT * NB];
    let mut masks = vec![0u16; QT * NB / 16];
    let mut i0 = a;
    while i0 < b {
        let nb = NB.min(b - i0);
        // Transpose the block to dimension-major; padding columns are zero.
        for (r, row) in items[i0 * dim..(i0 + nb) * dim].chunks_exact(dim).enumerate() {
            for (d, &x) in row.iter().enumerate() {
                it[d * NB + r] = x;
            }
        }
        if nb < NB {
            for d in 0..dim {
                it[d * NB + nb..(d + 1) * NB].fill(0.0);
            }
        }
        for t in 0..ntiles {
            let mut thr = [f32::INFINITY; QT];
            for (qi, th) in thr.iter_mut().enumerate() {
                if let Some(c) = cols.get(t * QT + qi) {
                    *th = c.threshold();
                }
            }
            tile_scores(level, &it, dim, &qtiles[t * dim * QT..(t + 1) * dim * QT], &thr, &mut out, &mut masks);
            for qi in 0..QT.min(m - t * QT) {
                let q = t * QT + qi;
                let filter = if filters.len() == 1 { &filters[0] } else { &filters[q] };
                let col = &mut cols[q];
                for g in 0..NB / 16 {
                    let mut mk = masks[qi * NB / 16 + g];
                    while mk != 0 {
                        let j = g * 16 + mk.trailing_zeros() as usize;
                        mk &= mk - 1;
                        if j >= nb {
                            break;
                        }
                        let s = out[qi * NB + j];
                        let id = (i0 + j) as u32;
                        if s > col.threshold() && !filter.excluded(id) {
                            col.push(id, s);
                        }
                    }
                }
            }
        }
        i0 += nb;
    }
}

/// The best `k` rows for each of the `m = queries.len() / dim` queries (row-major), best
/// first. `filters` holds one filter for all queries or one per query. The item rows are
/// split over `threads` tasks of the current rayon pool; each task reads its rows once for
/// all queries.
pub fn topk_batch(level: SimdLevel, items: &[f32], dim: usize, queries: &[f32], k: usize, filters: &[Filter], threads: usize) -> Result<Vec<Vec<(u32, f32)>>> {
    let n = rows_of(items, dim, queries.len())?;
    let m = queries.len() / dim;
    if filters.len() != 1 && filters.len() != m {
        return invalid!("give one filter for all queries or one per query ({m}), not {}", filters.len());
    }
    for f in filters {
        f.check(n)?;
    }
    let k = k.min(n);
    if k == 0 {
        return Ok(vec![Vec::new(); m]);
    }
    if filters.iter().any(|f| f.allow.is_some()) {
        // Allow-lists: each query scores only its allowed rows.
        let run = |qi: usize| {
            let f = if filters.len() == 1 { &filters[0] } else { &filters[qi] };
            let q = &queries[qi * dim..(qi + 1) * dim];
            topk_scan(level, items, dim, q, k, f, 1)
        };
        return if threads > 1 { (0..m).into_par_iter().map(run).collect() } else { (0..m).map(run).collect() };
    }
    // Query tiles, dimension-major inside a tile, zero-padded to a multiple of QT queries.
    let ntiles = m.div_ceil(QT);
    let mut qtiles = vec![0f32; ntiles * dim * QT];
    for (q, row) in queries.chunks_exact(dim).enumerate() {
        let (t, qi) = (q / QT, q % QT);
        for (d, &x) in row.iter().enumerate() {
            qtiles[t * dim * QT + d * QT + qi] = x;
        }
    }
    let run = |a: usize, b: usize| {
        let mut cols: Vec<Collector> = (0..m).map(|_| Collector::new(k)).collect();
        batch_range(level, items, dim, &qtiles, m, a, b, filters, &mut cols);
        cols
    };
    let ranges = split(n, threads, NB);
    let mut parts: Vec<Vec<Collector>> = if ranges.len() > 1 { ranges.into_par_iter().map(|(a, b)| run(a, b)).collect() } else { vec![run(0, n)] };
    let mut res = Vec::with_capacity(m);
    for q in 0..m {
        let cols: Vec<Collector> = parts.iter_mut().map(|p| std::mem::replace(&mut p[q], Collector::new(0))).collect();
        res.push(merge(cols));
    }
    Ok(res)
}

/// Runs `f(threads)` on `threads` rayon workers: `None` uses the global pool (one thread per
/// core), `Some(1)` runs on the calling thread, `Some(t)` on a pool of `t` threads built once
/// and kept for later calls.
pub fn with_threads<T: Send>(threads: Option<usize>, f: impl FnOnce(usize) -> T + Send) -> Result<T> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    match threads {
        None => Ok(f(rayon::current_num_threads())),
        Some(0) => invalid!("threads must be at least 1"),
        Some(1) => Ok(f(1)),
        Some(t) if t > 1024 => invalid!("threads must be at most 1024, got {t}"),
        Some(t) => {
            let pool = {
                let mut pools = POOLS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
                match pools.get(&t) {
                    Some(p) => p.clone(),
                    None => {
                        let p = rayon::ThreadPoolBuilder::new()
                            .num_threads(t)
                            .build()
                            .map_err(|e| crate::error::Error::InvalidArgument(format!("cannot start {t} threads: {e}")))?;
                        let p = Arc::new(p);
                        pools.insert(t, p.clone());
                        p
                    }
                }
            };
            Ok(pool.install(|| f(t)))
        }
    }
}

/// A plain sum of every value: the reference for how fast this machine reads a matrix.
pub fn read_sum(items: &[f32]) -> f64 {
    let mut acc = [0f32; 16];
    let mut chunks = items.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    acc.iter().map(|&x| x as f64).sum::<f64>() + tail as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small integers: every sum is exact in f32 whatever the order, so all levels agree
    /// bit for bit and ties are plentiful.
    fn ints(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((*seed >> 33) % 7) as f32 - 3.0
            })
            .collect()
    }

    /// Scores every row with the scalar kernel, filters, sorts (score desc, id asc).
    fn reference(items: &[f32], dim: usize, q: &[f32], k: usize, f: &Filter) -> Vec<(u32, f32)> {
        let n = items.len() / dim;
        let mut s = vec![0f32; n];
        scalar::dot_scores(items, dim, q, &mut s);
        let mut v: Vec<(f32, u32)> = (0..n as u32)
            .filter(|i| !f.exclude.contains(i) && f.allow.is_none_or(|a| a.contains(i)))
            .map(|i| (s[i as usize], i))
            .collect();
        v.sort_by(better);
        v.truncate(k);
        v.into_iter().map(|(s, i)| (i, s)).collect()
    }

    #[test]
    fn scan_and_batch_match_the_reference_on_every_level_and_odd_shapes() {
        let mut seed = 7;
        for &dim in &[1usize, 3, 8, 13, 16, 17, 33, 64] {
            for &n in &[1usize, 5, 127, 128, 129, 300, 1000] {
                let items = ints(n * dim, &mut seed);
                let m = 11;
                let queries = ints(m * dim, &mut seed);
                let excl: Vec<u32> = (0..n as u32).filter(|i| i % 3 == 1).collect();
                let allow: Vec<u32> = (0..n as u32).filter(|i| i % 4 != 2).collect();
                let filters = [Filter::NONE, Filter { exclude: &excl, allow: None }, Filter { exclude: &excl, allow: Some(&allow) }];
                for &k in &[1usize, 2, 10, n] {
                    for f in &filters {
                        let want: Vec<Vec<(u32, f32)>> = queries.chunks(dim).map(|q| reference(&items, dim, q, k, f)).collect();
                        for level in SimdLevel::available() {
                            for threads in [1, 3] {
                                for (qi, q) in queries.chunks(dim).enumerate() {
                                    for kernel in [ScanKernel::Rows, ScanKernel::Blocked] {
                                        let got = topk_scan_with(level, kernel, &items, dim, q, k, f, threads).unwrap();
                                        assert_eq!(got, want[qi], "scan {level:?} {kernel:?} dim {dim} n {n} k {k} threads {threads}");
                                    }
                                }
                                let got = topk_batch(level, &items, dim, &queries, k, std::slice::from_ref(f), threads).unwrap();
                                assert_eq!(got, want, "batch {level:?} dim {dim} n {n} k {k} threads {threads}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// The blocked kernel gives every row the very float the row-wise kernel of its level
    /// gives (same summation order), so a score never depends on where its row falls.
    #[test]
    fn blocked_scores_equal_row_scores_bit_for_bit() {
        let mut seed = 11u64;
        let mut f = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for &dim in &[1usize, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 64, 65, 100] {
            let n = 64;
            let items: Vec<f32> = (0..n * dim).map(|_| f()).collect();
            let q: Vec<f32> = (0..dim).map(|_| f()).collect();
            for level in SimdLevel::available() {
                let mut want = vec![0f32; n];
                dot_scores(level, &items, dim, &q, &mut want);
                let mut got = vec![0f32; n];
                let mut masks = vec![0u16; n / 16];
                if block_scores(level, &items, dim, &q, 0.0, &mut got, &mut masks) {
                    for r in 0..n {
                        assert_eq!(got[r].to_bits(), want[r].to_bits(), "{level:?} dim {dim} row {r}");
                        assert_eq!(masks[r / 16] >> (r % 16) & 1 == 1, want[r] > 0.0, "{level:?} dim {dim} row {r} mask");
                    }
                }
            }
        }
    }

    #[test]
    fn batch_takes_one_filter_per_query() {
        let mut seed = 3;
        let (n, dim, m) = (500, 9, 5);
        let items = ints(n * dim, &mut seed);
        let queries = ints(m * dim, &mut seed);
        let ex: Vec<Vec<u32>> = (0..m as u32).map(|q| (0..n as u32).filter(|i| i % (q + 2) == 0).collect()).collect();
        let filters: Vec<Filter> = ex.iter().map(|e| Filter { exclude: e, allow: None }).collect();
        for level in SimdLevel::available() {
            let got = topk_batch(level, &items, dim, &queries, 7, &filters, 2).unwrap();
            for (qi, q) in queries.chunks(dim).enumerate() {
                assert_eq!(got[qi], reference(&items, dim, q, 7, &filters[qi]));
            }
        }
    }

    #[test]
    fn ties_go_to_the_lower_id_and_nan_is_skipped() {
        let items = [1.0, 3.0, 3.0, f32::NEG_INFINITY, 2.0, 3.0, f32::NAN, 3.0];
        for level in SimdLevel::available() {
            assert_eq!(topk_scan(level, &items, 1, &[1.0], 3, &Filter::NONE, 1).unwrap(), vec![(1, 3.0), (2, 3.0), (5, 3.0)]);
            assert_eq!(topk_scan(level, &items, 1, &[1.0], 8, &Filter::NONE, 1).unwrap().len(), 6);
            let b = topk_batch(level, &items, 1, &[1.0, -1.0], 2, &[Filter::NONE], 1).unwrap();
            assert_eq!(b, vec![vec![(1, 3.0), (2, 3.0)], vec![(3, f32::INFINITY), (0, -1.0)]]);
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let items = [0f32; 12];
        assert!(topk_scan(SimdLevel::Scalar, &items, 0, &[], 1, &Filter::NONE, 1).is_err());
        assert!(topk_scan(SimdLevel::Scalar, &items, 5, &[0.0; 5], 1, &Filter::NONE, 1).is_err());
        assert!(topk_scan(SimdLevel::Scalar, &items, 4, &[0.0; 3], 1, &Filter::NONE, 1).is_err());
        assert!(topk_scan(SimdLevel::Scalar, &items, 4, &[0.0; 4], 1, &Filter { exclude: &[2, 1], allow: None }, 1).is_err());
        assert!(topk_scan(SimdLevel::Scalar, &items, 4, &[0.0; 4], 1, &Filter { exclude: &[], allow: Some(&[3]) }, 1).is_err());
        assert!(topk_batch(SimdLevel::Scalar, &items, 4, &[0.0; 8], 1, &[Filter::NONE; 3], 1).is_err());
        assert_eq!(topk_scan(SimdLevel::Scalar, &items, 4, &[0.0; 4], 0, &Filter::NONE, 1).unwrap(), vec![]);
    }

    /// The single-query scan before (row-wise) and after (blocked), next to a plain read of
    /// the matrix, in one run: 1,000,000 x 64, one thread, best of 15. Not a unit test (it
    /// takes a few seconds and prints timings):
    /// `cargo test --release -p recofast-core scan_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn scan_speed_rows_vs_blocked_vs_read() {
        use std::time::Instant;
        let (n, dim, k) = (1_000_000usize, 64usize, 20usize);
        let mut seed = 1u64;
        let mut f = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let items: Vec<f32> = (0..n * dim).map(|_| f()).collect();
        let q: Vec<f32> = (0..dim).map(|_| f()).collect();
        for level in SimdLevel::available() {
            let (mut read, mut rows, mut blocked) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
            for _ in 0..if level == SimdLevel::Scalar { 3 } else { 15 } {
                let t = Instant::now();
                std::hint::black_box(read_sum(&items));
                read = read.min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                let a = topk_scan_with(level, ScanKernel::Rows, &items, dim, &q, k, &Filter::NONE, 1).unwrap();
                rows = rows.min(t.elapsed().as_secs_f64());
                let t = Instant::now();
                let b = topk_scan_with(level, ScanKernel::Blocked, &items, dim, &q, k, &Filter::NONE, 1).unwrap();
                blocked = blocked.min(t.elapsed().as_secs_f64());
                assert_eq!(a, b);
            }
            println!(
                "{:>6}: read {:.2} ms | rows {:.2} ms ({:.2} x read) | blocked {:.2} ms ({:.2} x read)",
                level.name(),
                read * 1e3,
                rows * 1e3,
                rows / read,
                blocked * 1e3,
                blocked / read
            );
        }
    }

    #[test]
    fn read_sum_adds_everything() {
        let v: Vec<f32> = (0..1001).map(|i| i as f32).collect();
        assert_eq!(read_sum(&v), 500500.0);
    }
}
