//! ADWIN (adaptive windowing), Bifet & Gavaldà 2007: River 0.26.1's `drift.ADWIN`, whose
//! core is River's Rust `AdaptiveWindowing` (itself a port of the former `adwin_c.pyx`).
//! Same bucket compression, same cut search, same arithmetic order.

use super::codec::{self, R, W};
use super::DriftDetector;
use crate::error::Result;
use crate::invalid;

/// Buckets of `2^i` values each hold at most `max_buckets + 1` (total, variance) pairs.
#[derive(Clone, Debug, PartialEq)]
struct Bucket {
    len: usize,
    totals: Vec<f64>,
    variances: Vec<f64>,
}

impl Bucket {
    fn new(max_buckets: usize) -> Self {
        Bucket { len: 0, totals: vec![0.0; max_buckets + 1], variances: vec![0.0; max_buckets + 1] }
    }
    #[inline]
    fn insert(&mut self, total: f64, variance: f64) {
        // `compress_buckets` keeps `len <= max_buckets` between updates, so this slot exists.
        if let (Some(t), Some(v)) = (self.totals.get_mut(self.len), self.variances.get_mut(self.len)) {
            *t = total;
            *v = variance;
            self.len += 1;
        }
    }
    /// Drops the first `n` entries (River's `compress`).
    #[inline]
    fn drop_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.totals.copy_within(n..self.len, 0);
        self.variances.copy_within(n..self.len, 0);
        let remaining = self.len - n;
        self.totals[remaining..self.len].fill(0.0);
        self.variances[remaining..self.len].fill(0.0);
        self.len = remaining;
    }
}

/// `2^i` as f64, exact (River: `(1u64 << i) as f64`).
#[inline]
fn pow2(i: usize) -> f64 {
    2f64.powi(i as i32)
}

/// ADWIN drift detector (`river.drift.ADWIN`).
#[derive(Clone, Debug, PartialEq)]
pub struct Adwin {
    delta: f64,
    clock: u64,
    max_buckets: usize,
    min_window_length: u64,
    grace_period: u64,
    drift: bool,
    // River's `AdaptiveWindowing` state.
    total: f64,
    variance: f64,
    width: f64,
    total_width: f64,
    n_buckets: i64,
    max_n_buckets: i64,
    tick: u64,
    n_detections: u64,
    buckets: Vec<Bucket>,
}

/// Largest `max_buckets` accepted (memory per bucket level is linear in it).
const MAX_MAX_BUCKETS: u64 = 1 << 16;
/// Bucket levels: level `i` holds `2^i` values, so 64 levels hold more than any stream.
const MAX_LEVELS: usize = 64;

impl Default for Adwin {
    fn default() -> Self {
        // The defaults are valid parameters.
        Adwin::new(0.002, 32, 5, 5, 10).unwrap_or_else(|_| unreachable!())
    }
}

impl Adwin {
    /// River's defaults: `delta=0.002, clock=32, max_buckets=5, min_window_length=5,
    /// grace_period=10`.
    pub fn new(delta: f64, clock: u64, max_buckets: u64, min_window_length: u64, grace_period: u64) -> Result<Self> {
        if !(delta > 0.0 && delta < 1.0) {
            return invalid!("ADWIN: delta must be in (0, 1), got {delta}");
        }
        if clock == 0 || clock > i32::MAX as u64 {
            return invalid!("ADWIN: clock must be a positive integer (at most {}), got {clock}", i32::MAX);
        }
        if max_buckets == 0 || max_buckets > MAX_MAX_BUCKETS {
            return invalid!("ADWIN: max_buckets must be in [1, {MAX_MAX_BUCKETS}], got {max_buckets}");
        }
        if min_window_length == 0 || min_window_length > i32::MAX as u64 {
            return invalid!("ADWIN: min_window_length must be a positive integer (at most {}), got {min_window_length}", i32::MAX);
        }
        if grace_period > i32::MAX as u64 {
            return invalid!("ADWIN: grace_period must be at most {}, got {grace_period}", i32::MAX);
        }
        let max_buckets = max_buckets as usize;
        Ok(Adwin {
            delta,
            clock,
            max_buckets,
            min_window_length,
            grace_period,
            drift: false,
            total: 0.0,
            variance: 0.0,
            width: 0.0,
            total_width: 0.0,
            n_buckets: 0,
            max_n_buckets: 0,
            tick: 0,
            n_detections: 0,
            buckets: vec![Bucket::new(max_buckets)],
        })
    }

    pub fn delta(&self) -> f64 {
        self.delta
    }
    pub fn clock(&self) -> u64 {
        self.clock
    }
    pub fn max_buckets(&self) -> u64 {
        self.max_buckets as u64
    }
    pub fn min_window_length(&self) -> u64 {
        self.min_window_length
    }
    pub fn grace_period(&self) -> u64 {
        self.grace_period
    }
    /// Number of values in the window.
    pub fn width(&self) -> f64 {
        self.width
    }
    /// Sum of the values in the window.
    pub fn total(&self) -> f64 {
        self.total
    }
    /// River's `variance`: the sum of squared deviations kept for the window.
    pub fn variance(&self) -> f64 {
        self.variance
    }
    /// Mean of the window (0 when empty).
    pub fn estimation(&self) -> f64 {
        if self.width == 0.0 {
            0.0
        } else {
            self.total / self.width
        }
    }
    /// Drifts detected since the last reset (at most one: a detection resets at the next update).
    pub fn n_detections(&self) -> u64 {
        self.n_detections
    }

    fn clear_state(&mut self) {
        self.total = 0.0;
        self.variance = 0.0;
        self.width = 0.0;
        self.total_width = 0.0;
        self.n_buckets = 0;
        self.max_n_buckets = 0;
        self.tick = 0;
        self.n_detections = 0;
        self.buckets.clear();
        self.buckets.push(Bucket::new(self.max_buckets));
    }

    fn insert_element(&mut self, value: f64) {
        self.buckets[0].insert(value, 0.0);
        self.n_buckets += 1;
        if self.n_buckets > self.max_n_buckets {
            self.max_n_buckets = self.n_buckets;
        }
        self.width += 1.0;
        let mut incremental_variance = 0.0;
        if self.width > 1.0 {
            let delta_v = value - self.total / (self.width - 1.0);
            incremental_variance = (self.width - 1.0) * delta_v * delta_v / self.width;
        }
        self.variance += incremental_variance;
        self.total += value;
        self.compress_buckets();
    }

    fn compress_buckets(&mut self) {
        let mut idx = 0usize;
        loop {
            if self.buckets[idx].len != self.max_buckets + 1 {
                break;
            }
            let n1 = pow2(idx);
            let b = &self.buckets[idx];
            let (t0, t1, v0, v1) = (b.totals[0], b.totals[1], b.variances[0], b.variances[1]);
            let mu1 = t0 / n1;
            let mu2 = t1 / n1;
            let total12 = t0 + t1;
            let temp = n1 * 0.5 * (mu1 - mu2) * (mu1 - mu2);
            let v12 = v0 + v1 + temp;
            if idx + 1 >= self.buckets.len() {
                self.buckets.push(Bucket::new(self.max_buckets));
            }
            self.buckets[idx + 1].insert(total12, v12);
            self.n_buckets += 1;
            self.buckets[idx].drop_front(2);
            if self.buckets[idx + 1].len <= self.max_buckets {
                break;
            }
            idx += 1;
        }
    }

    fn delete_element(&mut self) {
        // River's buckets past the first are never empty except with max_buckets = 1, where
        // River would then panic on an empty last bucket; skip empty trailing levels instead.
        while self.buckets.len() > 1 && self.buckets[self.buckets.len() - 1].len == 0 {
            self.buckets.pop();
        }
        let last = self.buckets.len() - 1;
        if self.buckets[last].len == 0 {
            return;
        }
        let n = pow2(last);
        let (u, v) = (self.buckets[last].totals[0], self.buckets[last].variances[0]);
        let mu = u / n;
        self.width -= n;
        self.total -= u;
        let mu_window = self.total / self.width;
        let inc = v + n * self.width * (mu - mu_window) * (mu - mu_window) / (n + self.width);
        self.variance -= inc;
        self.buckets[last].drop_front(1);
        self.n_buckets -= 1;
        // River pops an emptied last level; level 0 is kept so inserts always have a home
        // (a cut always leaves at least one value, so River never empties level 0 either).
        if self.buckets[last].len == 0 && last > 0 {
            self.buckets.pop();
        }
    }

    #[inline]
    fn evaluate_cut(&self, n0: f64, n1: f64, delta_mean: f64) -> bool {
        let mwl = self.min_window_length as f64;
        let delta_prime = (2.0 * self.width.ln() / self.delta).ln();
        let m_recip = 1.0 / (n0 - mwl + 1.0) + 1.0 / (n1 - mwl + 1.0);
        let epsilon = (2.0 * m_recip * (self.variance / self.width) * delta_prime).sqrt() + 2.0 / 3.0 * delta_prime * m_recip;
        delta_mean.abs() > epsilon
    }

    fn detect_change(&mut self) -> bool {
        let mut change_detected = false;
        self.tick += 1;
        let mwl = self.min_window_length as f64;
        if self.tick % self.clock == 0 && self.width > self.grace_period as f64 {
            let mut reduce_width = true;
            while reduce_width {
                reduce_width = false;
                let mut exit_flag = false;
                let mut n0 = 0.0_f64;
                let mut n1 = self.width;
                let mut u0 = 0.0_f64;
                let mut u1 = self.total;
                'outer: for idx in (0..self.buckets.len()).rev() {
                    if exit_flag {
                        break;
                    }
                    let bucket_size = pow2(idx);
                    let len = self.buckets[idx].len;
                    for k in 0..len {
                        n0 += bucket_size;
                        n1 -= bucket_size;
                        let t = self.buckets[idx].totals[k];
                        u0 += t;
                        u1 -= t;
                        if idx == 0 && k == len - 1 {
                            exit_flag = true;
                            break;
                        }
                        let delta_mean = (u0 / n0) - (u1 / n1);
                        if n1 >= mwl && n0 >= mwl && self.evaluate_cut(n0, n1, delta_mean) {
                            reduce_width = true;
                            change_detected = true;
                            if self.width > 0.0 {
                                self.delete_element();
                                break 'outer;
                            }
                        }
                    }
                }
            }
        }
        self.total_width += self.width;
        if change_detected {
            self.n_detections += 1;
        }
        change_detected
    }
}

impl DriftDetector for Adwin {
    fn update(&mut self, x: f64) -> bool {
        if self.drift {
            self.clear_state();
        }
        self.insert_element(x);
        self.drift = self.detect_change();
        self.drift
    }
    fn drift_detected(&self) -> bool {
        self.drift
    }
    fn reset(&mut self) {
        self.drift = false;
        self.clear_state();
    }
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = W::new(codec::KIND_ADWIN);
        w.f64(self.delta);
        w.u64(self.clock);
        w.u64(self.max_buckets as u64);
        w.u64(self.min_window_length);
        w.u64(self.grace_period);
        w.bool(self.drift);
        w.f64(self.total);
        w.f64(self.variance);
        w.f64(self.width);
        w.f64(self.total_width);
        w.u64(self.n_buckets as u64);
        w.u64(self.max_n_buckets as u64);
        w.u64(self.tick);
        w.u64(self.n_detections);
        w.u64(self.buckets.len() as u64);
        for b in &self.buckets {
            w.u64(b.len as u64);
            for i in 0..b.len {
                w.f64(b.totals[i]);
                w.f64(b.variances[i]);
            }
        }
        w.0
    }
    fn from_bytes(b: &[u8]) -> Result<Self> {
        const WHAT: &str = "ADWIN";
        let mut r = R::new(b, codec::KIND_ADWIN, WHAT)?;
        let (delta, clock, max_buckets, mwl, grace) = (r.f64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
        let mut a = codec::params(WHAT, Adwin::new(delta, clock, max_buckets, mwl, grace))?;
        a.drift = r.bool()?;
        a.total = r.f64()?;
        a.variance = r.f64()?;
        a.width = r.f64()?;
        a.total_width = r.f64()?;
        a.n_buckets = r.u64()? as i64;
        a.max_n_buckets = r.u64()? as i64;
        a.tick = r.u64()?;
        a.n_detections = r.u64()?;
        let levels = r.usize_max(MAX_LEVELS as u64)?;
        if levels == 0 {
            return Err(r.bad("no bucket levels"));
        }
        a.buckets.clear();
        let mut count = 0.0f64;
        for i in 0..levels {
            let len = r.usize_max(a.max_buckets as u64)?;
            let mut bk = Bucket::new(a.max_buckets);
            for _ in 0..len {
                let (t, v) = (r.f64()?, r.f64()?);
                bk.insert(t, v);
            }
            count += len as f64 * pow2(i);
            a.buckets.push(bk);
        }
        if count != a.width {
            return Err(r.bad(format!("width {} but the buckets hold {count} values", a.width)));
        }
        r.finish()?;
        Ok(a)
    }
}
