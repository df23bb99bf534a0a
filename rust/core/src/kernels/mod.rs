//! Scoring kernels: inner products of one query against every item row, and top-K selection.
//!
//! A scalar reference kernel, and SIMD kernels for the instruction sets this machine may
//! have. The CPU is detected once ([`SimdLevel::detect`]) and the choice kept; every kernel
//! takes the level as a parameter, so tests and benchmarks can run each path.
//!
//! * [`topk_scan`] / [`topk_batch`]: fused scan + top-K for one query or a batch (blocked so
//!   the item matrix is read once per batch, spread over rayon threads), with exclusions and
//!   allow-lists applied inside the scan.
//! * [`QuantizedItems`]: an int8 copy scanned first (AVX-512 VNNI), candidates rescored in f32.
//! * Levels: scalar (the reference), AVX2+FMA, AVX-512 on x86-64; NEON on aarch64 (the dot
//!   kernel; the batched and int8 kernels use the scalar code, which LLVM vectorises for NEON).

pub mod bf16;
#[cfg(target_arch = "aarch64")]
mod neon;
mod quant;
mod scalar;
mod scan;
mod tile;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use quant::QuantizedItems;
pub use scan::{read_sum, topk_batch, topk_scan, topk_scan_with, with_threads, Filter, ScanKernel};

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::OnceLock;

/// An instruction-set level for the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimdLevel {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl SimdLevel {
    /// The best level this CPU supports; detected once, then cached.
    pub fn detect() -> SimdLevel {
        static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return SimdLevel::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    return SimdLevel::Avx2;
                }
            }
            #[cfg(target_arch = "aarch64")]
            {
                return SimdLevel::Neon;
            }
            #[allow(unreachable_code)]
            SimdLevel::Scalar
        })
    }

    /// Whether this CPU can run kernels of this level.
    pub fn supported(self) -> bool {
        match self {
            SimdLevel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Neon => "neon",
        }
    }

    pub fn parse(s: &str) -> Option<SimdLevel> {
        match s {
            "scalar" => Some(SimdLevel::Scalar),
            "avx2" => Some(SimdLevel::Avx2),
            "avx512" => Some(SimdLevel::Avx512),
            "neon" => Some(SimdLevel::Neon),
            "auto" => Some(SimdLevel::detect()),
            _ => None,
        }
    }

    /// Levels this CPU can run, scalar first.
    pub fn available() -> Vec<SimdLevel> {
        [SimdLevel::Scalar, SimdLevel::Avx2, SimdLevel::Avx512, SimdLevel::Neon]
            .into_iter()
            .filter(|l| l.supported())
            .collect()
    }
}

/// Inner product of two equal-length vectors.
#[inline]
pub fn dot(level: SimdLevel, a: &[f32], b: &[f32]) -> f32 {
    let mut out = [0f32];
    dot_scores(level, a, a.len(), b, &mut out[..if a.is_empty() { 0 } else { 1 }]);
    if a.is_empty() { 0.0 } else { out[0] }
}

/// `out[r] = items[r*dim .. (r+1)*dim] · q` for every row `r < out.len()`.
///
/// `items.len()` must be at least `out.len() * dim` and `q.len() == dim`; a level the CPU
/// lacks falls back to scalar (never undefined behaviour).
pub fn dot_scores(level: SimdLevel, items: &[f32], dim: usize, q: &[f32], out: &mut [f32]) {
    assert!(q.len() == dim && items.len() >= out.len() * dim, "dot_scores: shape mismatch");
    if dim == 0 {
        out.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if level.supported() => {
            // SAFETY: the CPU supports AVX-512F (checked by `supported`), and the shapes
            // were checked above.
            unsafe { x86::dot_scores_avx512(items, dim, q, out) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 | SimdLevel::Avx512 if SimdLevel::Avx2.supported() => {
            // SAFETY: the CPU supports AVX2 and FMA (checked by `supported`), and the shapes
            // were checked above.
            unsafe { x86::dot_scores_avx2(items, dim, q, out) }
        }
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => {
            // SAFETY: NEON is part of the aarch64 baseline, and the shapes were checked above.
            unsafe { neon::dot_scores_neon(items, dim, q, out) }
        }
        _ => scalar::dot_scores(items, dim, q, out),
    }
}

/// A scored candidate; ordered so that a max-heap pops the *worst* first (lower score, then
/// higher id), which is what a bounded top-K heap needs.
#[derive(Clone, Copy, Debug)]
struct Worst(f32, u32);

impl PartialEq for Worst {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Worst {
    fn cmp(&self, o: &Self) -> Ordering {
        // Worse = smaller score, or equal score and larger id.
        o.0.total_cmp(&self.0).then(self.1.cmp(&o.1))
    }
}

/// Keeps the best `k` of a stream of (id, score): higher score first, ties to the lower id.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        // The heap grows as items come; a huge k must not allocate up front.
        Self { k, heap: BinaryHeap::with_capacity(k.saturating_add(1).min(4096)) }
    }

    /// The score an item must beat to enter (−∞ until the heap is full).
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k { f32::NEG_INFINITY } else { self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0) }
    }

    #[inline]
    pub fn push(&mut self, id: u32, score: f32) {
        if self.k == 0 || score.is_nan() {
            return;
        }
        let c = Worst(score, id);
        if self.heap.len() < self.k {
            self.heap.push(c);
        } else if let Some(top) = self.heap.peek() {
            if c < *top {
                self.heap.pop();
                self.heap.push(c);
            }
        }
    }

    /// The kept items, best first.
    pub fn into_sorted(self) -> Vec<(u32, f32)> {
        let mut v: Vec<Worst> = self.heap.into_vec();
        v.sort();
        v.into_iter().map(|w| (w.1, w.0)).collect()
    }
}

/// The best `k` entries of `scores` (ids are indices), skipping −∞ and NaN entries.
pub fn topk_of_scores(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut t = TopK::new(k);
    for (i, &s) in scores.iter().enumerate() {
        if s > t.threshold() || (s == t.threshold() && s > f32::NEG_INFINITY) {
            t.push(i as u32, s);
        }
    }
    t.into_sorted()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    #[test]
    fn every_level_matches_scalar_on_odd_shapes() {
        let mut seed = 1;
        for &dim in &[1usize, 3, 7, 8, 15, 16, 17, 31, 33, 64, 65, 100] {
            for &n in &[0usize, 1, 2, 5, 17, 33] {
                let items: Vec<f32> = (0..n * dim).map(|_| lcg(&mut seed)).collect();
                let q: Vec<f32> = (0..dim).map(|_| lcg(&mut seed)).collect();
                let mut want = vec![0.0; n];
                scalar::dot_scores(&items, dim, &q, &mut want);
                for level in SimdLevel::available() {
                    let mut got = vec![0.0; n];
                    dot_scores(level, &items, dim, &q, &mut got);
                    for (a, b) in got.iter().zip(&want) {
                        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{level:?} dim {dim} n {n}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn topk_orders_best_first_and_breaks_ties_by_lower_id() {
        let s = [1.0, 3.0, 3.0, f32::NEG_INFINITY, 2.0, 3.0, f32::NAN];
        assert_eq!(topk_of_scores(&s, 3), vec![(1, 3.0), (2, 3.0), (5, 3.0)]);
        assert_eq!(topk_of_scores(&s, 4).last(), Some(&(4, 2.0)));
        assert_eq!(topk_of_scores(&s, 10).len(), 5);
        assert!(topk_of_scores(&s, 0).is_empty());
    }
}
