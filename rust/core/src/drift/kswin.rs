//! KSWIN (Kolmogorov-Smirnov windowing), Raab et al. 2020: River 0.26.1's `drift.KSWIN`.
//!
//! River draws the reference sample with CPython's `random.Random(seed).sample` and tests
//! with `scipy.stats.ks_2samp(method="auto")`. Both samples have `stat_size` values, so
//! SciPy takes its exact path for equal sizes (`_compute_prob_outside_square`); both are
//! reproduced here draw for draw and operation for operation. Limits, each refused with an
//! error at construction: an integer `seed` is required (River's `seed=None` draws from the
//! OS and cannot be matched; recofast then draws its seed from OS entropy too, so detections
//! are random as in River), `stat_size <= 10000` (above, SciPy switches to an asymptotic
//! distribution), and `window_size >= 2 * stat_size` (River raises at the first test
//! otherwise). NaN in either sample makes SciPy's p-value NaN: no drift, as in River. Where
//! SciPy's exact p-value falls outside [0, 1] by rounding (only when it is about 1), SciPy
//! switches to the asymptotic p-value; recofast uses 1.0 there, which differs from River
//! only for `alpha` close to 1.

use std::collections::VecDeque;

use super::codec::{self, R, W};
use super::pyrandom::PyRandom;
use super::DriftDetector;
use crate::error::Result;
use crate::invalid;

/// Largest `stat_size` for which SciPy's `method="auto"` is exact.
pub const MAX_STAT_SIZE: u64 = 10_000;
/// Largest `window_size` accepted.
pub const MAX_WINDOW_SIZE: u64 = 1 << 24;

/// KSWIN drift detector (`river.drift.KSWIN`).
#[derive(Clone, Debug, PartialEq)]
pub struct Kswin {
    alpha: f64,
    window_size: usize,
    stat_size: usize,
    seed: Option<i64>,
    /// The seed in use (the given one, or one drawn from OS entropy when `seed` is None).
    active_seed: i64,
    drift: bool,
    p_value: f64,
    n: u64,
    window: VecDeque<f64>,
    rng: PyRandom,
    // Scratch buffers (not state).
    idx: Vec<usize>,
    a: Vec<f64>,
    b: Vec<f64>,
}

fn entropy_seed() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x006b_7377_696e);
    (h.finish() >> 1) as i64
}

/// SciPy's `_compute_prob_outside_square(n, h)`.
fn prob_outside_square(n: i64, h: i64) -> f64 {
    let mut p = 0.0f64;
    let mut k = n / h; // int(np.floor(n / h)) for positive n, h
    while k >= 0 {
        let mut p1 = 1.0f64;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// `ks_2samp(a, b, method="auto")` for two samples of the same size `n <= 10000`, sorting
/// them in place: (statistic, p-value). NaN anywhere gives (NaN, NaN), as SciPy's
/// `nan_policy="propagate"`.
fn ks_2samp_equal(a: &mut [f64], b: &mut [f64]) -> (f64, f64) {
    if a.iter().chain(b.iter()).any(|x| x.is_nan()) {
        return (f64::NAN, f64::NAN);
    }
    let cmp = |x: &f64, y: &f64| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal);
    a.sort_by(cmp);
    b.sort_by(cmp);
    let n = a.len();
    // max over x in a ∪ b of |#{a <= x} - #{b <= x}| (searchsorted side="right").
    let (mut i, mut j, mut h) = (0usize, 0usize, 0usize);
    while i < n || j < n {
        let x = if j >= n || (i < n && a[i] <= b[j]) { a[i] } else { b[j] };
        while i < n && a[i] <= x {
            i += 1;
        }
        while j < n && b[j] <= x {
            j += 1;
        }
        h = h.max(i.abs_diff(j));
    }
    let d = h as f64 * 1.0 / n as f64;
    if h == 0 {
        return (d, 1.0);
    }
    let prob = prob_outside_square(n as i64, h as i64);
    if !(0.0..=1.0).contains(&prob) {
        return (d, 1.0);
    }
    (d, prob)
}

impl Kswin {
    /// River's defaults: `alpha=0.005, window_size=100, stat_size=30, seed=None,
    /// window=None`.
    pub fn new(alpha: f64, window_size: u64, stat_size: u64, seed: Option<i64>, window: &[f64]) -> Result<Self> {
        if !(0.0..=1.0).contains(&alpha) {
            return invalid!("KSWIN: alpha must be between 0 and 1, got {alpha}");
        }
        if stat_size == 0 || stat_size > MAX_STAT_SIZE {
            return invalid!("KSWIN: stat_size must be in [1, {MAX_STAT_SIZE}], got {stat_size}");
        }
        if window_size > MAX_WINDOW_SIZE || window_size < 2 * stat_size {
            return invalid!(
                "KSWIN: window_size must be at least 2 * stat_size ({}) and at most {MAX_WINDOW_SIZE}, got {window_size}",
                2 * stat_size
            );
        }
        let active_seed = seed.unwrap_or_else(entropy_seed);
        let (window_size, stat_size) = (window_size as usize, stat_size as usize);
        let mut k = Kswin {
            alpha,
            window_size,
            stat_size,
            seed,
            active_seed,
            drift: false,
            p_value: 0.0,
            n: 0,
            window: VecDeque::with_capacity(window_size),
            rng: PyRandom::new(active_seed as i128),
            idx: Vec::with_capacity(stat_size),
            a: Vec::with_capacity(stat_size),
            b: Vec::with_capacity(stat_size),
        };
        // River: deque(window, maxlen=window_size) keeps the last window_size values.
        for &x in window.iter().skip(window.len().saturating_sub(window_size)) {
            k.window.push_back(x);
        }
        Ok(k)
    }
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
    pub fn window_size(&self) -> u64 {
        self.window_size as u64
    }
    pub fn stat_size(&self) -> u64 {
        self.stat_size as u64
    }
    pub fn seed(&self) -> Option<i64> {
        self.seed
    }
    /// The p-value of the last test (0 before the first).
    pub fn p_value(&self) -> f64 {
        self.p_value
    }
    /// Values seen since the last reset.
    pub fn n(&self) -> u64 {
        self.n
    }
    /// The sliding window, oldest first.
    pub fn window(&self) -> Vec<f64> {
        self.window.iter().copied().collect()
    }
}

impl DriftDetector for Kswin {
    fn update(&mut self, x: f64) -> bool {
        if self.drift {
            self.reset();
        }
        self.n += 1;
        if self.window.len() == self.window_size {
            self.window.pop_front();
        }
        self.window.push_back(x);
        if self.window.len() >= self.window_size {
            let reference = self.window_size - self.stat_size;
            self.rng.sample_range(reference, self.stat_size, &mut self.idx);
            self.a.clear();
            self.a.extend(self.idx.iter().map(|&r| self.window[r]));
            self.b.clear();
            self.b.extend(self.window.range(reference..).copied());
            let (st, p) = ks_2samp_equal(&mut self.a, &mut self.b);
            self.p_value = p;
            if p <= self.alpha && st > 0.1 {
                self.drift = true;
                // River keeps only the most recent stat_size values (then resets at the next update).
                self.window.drain(..reference);
            } else {
                self.drift = false;
            }
        } else {
            self.drift = false;
        }
        self.drift
    }
    fn drift_detected(&self) -> bool {
        self.drift
    }
    fn reset(&mut self) {
        self.drift = false;
        self.p_value = 0.0;
        self.n = 0;
        self.window.clear();
        if self.seed.is_none() {
            self.active_seed = entropy_seed();
        }
        self.rng = PyRandom::new(self.active_seed as i128);
    }
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = W::new(codec::KIND_KSWIN);
        w.f64(self.alpha);
        w.u64(self.window_size as u64);
        w.u64(self.stat_size as u64);
        w.bool(self.seed.is_some());
        w.u64(self.active_seed as u64);
        w.bool(self.drift);
        w.f64(self.p_value);
        w.u64(self.n);
        w.u64(self.window.len() as u64);
        for &x in &self.window {
            w.f64(x);
        }
        self.rng.write(&mut w);
        w.0
    }
    fn from_bytes(b: &[u8]) -> Result<Self> {
        const WHAT: &str = "KSWIN";
        let mut r = R::new(b, codec::KIND_KSWIN, WHAT)?;
        let (alpha, ws, ss) = (r.f64()?, r.u64()?, r.u64()?);
        let has_seed = r.bool()?;
        let active_seed = r.u64()? as i64;
        let seed = has_seed.then_some(active_seed);
        let mut k = codec::params(WHAT, Kswin::new(alpha, ws, ss, Some(active_seed), &[]))?;
        k.seed = seed;
        k.drift = r.bool()?;
        k.p_value = r.f64()?;
        k.n = r.u64()?;
        let len = r.usize_max(ws)?;
        for _ in 0..len {
            k.window.push_back(r.f64()?);
        }
        k.rng = PyRandom::read(&mut r)?;
        r.finish()?;
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scipy_exact_two_sample_values() {
        // scipy.stats._stats_py._compute_prob_outside_square and ks_2samp (SciPy 1.17).
        assert_eq!(prob_outside_square(30, 10), 0.07088798787114439);
        assert_eq!(prob_outside_square(30, 3), 0.9988393756362763);
        assert_eq!(prob_outside_square(100, 17), 0.11119526053829192);
        let (mut a, mut b) = (vec![0.5, 1.0, 2.0, 3.0, -0.0, 7.0], vec![0.0, 4.0, 5.0, 6.0, 8.0, 9.0]);
        assert_eq!(ks_2samp_equal(&mut a, &mut b), (0.6666666666666666, 0.14285714285714285));
        let (st, p) = ks_2samp_equal(&mut [0.5, f64::NAN, 2.0], &mut [1.0, 2.0, 3.0]);
        assert!(st.is_nan() && p.is_nan());
    }

    #[test]
    fn bad_parameters() {
        assert!(Kswin::new(-0.1, 100, 30, Some(1), &[]).is_err());
        assert!(Kswin::new(1.1, 100, 30, Some(1), &[]).is_err());
        assert!(Kswin::new(0.005, 10, 30, Some(1), &[]).is_err());
        assert!(Kswin::new(0.005, 50, 30, Some(1), &[]).is_err());
        assert!(Kswin::new(0.005, 100, 0, Some(1), &[]).is_err());
        assert!(Kswin::new(0.005, 100, 30, None, &[]).is_ok());
    }
}
