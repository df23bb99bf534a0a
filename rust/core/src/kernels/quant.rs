//! A quantised copy of an item table (int8 per value, one f32 scale per row) scanned first;
//! the best `candidates` rows of that approximate scan are rescored exactly in f32.
//!
//! Reading 1 byte per value instead of 4 is what makes it faster: the exact scan is bound by
//! memory bandwidth. The rescoring makes the returned scores exact; only the candidate set is
//! approximate (a row is missed if quantisation error pushes it below the candidate cut).

use super::scan::{merge, rows_of, split, topk_scan, Collector, Filter};
use super::{dot_scores, scalar, SimdLevel};
use crate::error::Result;
use crate::invalid;

/// Rows per block of the quantised scan.
const ROWS: usize = 256;

/// Int8 codes with a per-row scale: `row[d] ≈ scale · code[d]`, `scale = max|row| / 127`.
#[derive(Clone, Debug)]
pub struct QuantizedItems {
    n: usize,
    dim: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

/// `out[r] = scales[r] · codes[r] · q` on the best kernel of `level` the CPU supports.
fn dot_scores_i8(level: SimdLevel, codes: &[i8], scales: &[f32], dim: usize, q: &[f32], out: &mut [f32]) {
    assert!(q.len() == dim && codes.len() >= out.len() * dim && scales.len() >= out.len(), "dot_scores_i8: shape mismatch");
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if level.supported() => {
            // SAFETY: the CPU supports AVX-512F (checked by `supported`); shapes asserted above.
            unsafe { super::x86::dot_scores_i8_avx512(codes, scales, dim, q, out) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 | SimdLevel::Avx512 if SimdLevel::Avx2.supported() => {
            // SAFETY: the CPU supports AVX2 and FMA (checked by `supported`); shapes asserted above.
            unsafe { super::x86::dot_scores_i8_avx2(codes, scales, dim, q, out) }
        }
        _ => scalar::dot_scores_i8(codes, scales, dim, q, out),
    }
}

impl QuantizedItems {
    /// Quantises `items` (`n × dim`, row-major). Non-finite values give meaningless (but
    /// safe) approximate scores for their rows.
    pub fn new(items: &[f32], dim: usize) -> Result<Self> {
        let n = rows_of(items, dim, dim)?;
        let mut codes = vec![0i8; items.len()];
        let mut scales = vec![0f32; n];
        for ((row, c), sc) in items.chunks_exact(dim).zip(codes.chunks_exact_mut(dim)).zip(scales.iter_mut()) {
            let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
            let s = if amax > 0.0 && amax.is_finite() { amax / 127.0 } else { 1.0 };
            let inv = 1.0 / s;
            for (ci, &x) in c.iter_mut().zip(row) {
                // `as` saturates (and maps NaN to 0), so no input makes this overflow.
                *ci = (x * inv).round().clamp(-127.0, 127.0) as i8;
            }
            *sc = s;
        }
        Ok(QuantizedItems { n, dim, codes, scales })
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

    /// The approximate (dequantised) score of every row `< out.len()` (for tests and recall checks).
    pub fn approx_scores(&self, level: SimdLevel, q: &[f32], out: &mut [f32]) -> Result<()> {
        if q.len() != self.dim || out.len() > self.n {
            return invalid!("approx_scores: query of {} values for dimension {}, {} outputs for {} rows", q.len(), self.dim, out.len(), self.n);
        }
        dot_scores_i8(level, &self.codes, &self.scales, self.dim, q, out);
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
        let scan = |a: usize, b: usize| {
            let mut col = Collector::new(c);
            let mut buf = [0f32; ROWS];
            let mut i0 = a;
            while i0 < b {
                let nb = ROWS.min(b - i0);
                dot_scores_i8(level, &self.codes[i0 * dim..(i0 + nb) * dim], &self.scales[i0..i0 + nb], dim, q, &mut buf[..nb]);
                for (j, &s) in buf[..nb].iter().enumerate() {
                    if s > col.threshold() {
                        let id = (i0 + j) as u32;
                        if !filter.excluded(id) {
                            col.push(id, s);
                        }
                    }
                }
                i0 += nb;
            }
            col
        };
        let ranges = split(self.n, threads, ROWS);
        let cands = if ranges.len() > 1 {
            use rayon::prelude::*;
            merge(ranges.into_par_iter().map(|(a, b)| scan(a, b)).collect())
        } else {
            scan(0, self.n).into_sorted()
        };
        // Exact rescoring, in increasing id order (ties to the lower id, and friendlier to memory).
        let mut ids: Vec<u32> = cands.into_iter().map(|c| c.0).collect();
        ids.sort_unstable();
        let mut col = Collector::new(k);
        let mut s = [0f32];
        for id in ids {
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
            let n = 37;
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
                    assert!((got[r] - want[r]).abs() <= 1e-4 * (1.0 + want[r].abs()), "{level:?} dim {dim}");
                    assert!((got[r] - exact[r]).abs() <= 0.01 * dim as f32, "{level:?} dim {dim}");
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
