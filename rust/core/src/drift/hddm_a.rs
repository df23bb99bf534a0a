//! HDDM_A (Hoeffding drift detection, moving average), Frías-Blanco et al. 2014: River
//! 0.26.1's `drift.binary.HDDM_A`.

use super::codec::{self, R, W};
use super::stats::Mean;
use super::DriftDetector;
use crate::error::Result;
use crate::invalid;

/// HDDM_A drift and warning detector (`river.drift.binary.HDDM_A`). Input: 1 for an error,
/// 0 otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct HddmA {
    drift_confidence: f64,
    warning_confidence: f64,
    two_sided_test: bool,
    drift: bool,
    warning: bool,
    x_min: Mean,
    x_max: Mean,
    z: Mean,
}

impl Default for HddmA {
    fn default() -> Self {
        HddmA::new(0.001, 0.005, false).unwrap_or_else(|_| unreachable!())
    }
}

pub(crate) fn check_confidence(name: &str, what: &str, c: f64) -> Result<()> {
    if !(c > 0.0 && c < 1.0) {
        return invalid!("{what}: {name} must be in (0, 1), got {c}");
    }
    Ok(())
}

impl HddmA {
    /// River's defaults: `drift_confidence=0.001, warning_confidence=0.005,
    /// two_sided_test=False`.
    pub fn new(drift_confidence: f64, warning_confidence: f64, two_sided_test: bool) -> Result<Self> {
        check_confidence("drift_confidence", "HDDM_A", drift_confidence)?;
        check_confidence("warning_confidence", "HDDM_A", warning_confidence)?;
        Ok(HddmA {
            drift_confidence,
            warning_confidence,
            two_sided_test,
            drift: false,
            warning: false,
            x_min: Mean::default(),
            x_max: Mean::default(),
            z: Mean::default(),
        })
    }
    pub fn drift_confidence(&self) -> f64 {
        self.drift_confidence
    }
    pub fn warning_confidence(&self) -> f64 {
        self.warning_confidence
    }
    pub fn two_sided_test(&self) -> bool {
        self.two_sided_test
    }

    #[inline]
    fn hoeffding_bound(&self, n: f64) -> f64 {
        (1.0 / (2.0 * n) * (1.0 / self.drift_confidence).ln()).sqrt()
    }
    #[inline]
    fn mean_incr(&self, confidence: f64) -> bool {
        if self.x_min.n == self.z.n {
            return false;
        }
        let m = (self.z.n - self.x_min.n) / self.x_min.n * (1.0 / self.z.n);
        let eps = (m / 2.0 * (2.0 / confidence).ln()).sqrt();
        self.z.mean - self.x_min.mean >= eps
    }
    #[inline]
    fn mean_decr(&self, confidence: f64) -> bool {
        if self.x_max.n == self.z.n {
            return false;
        }
        let m = (self.z.n - self.x_max.n) / self.x_max.n * (1.0 / self.z.n);
        let eps = (m / 2.0 * (2.0 / confidence).ln()).sqrt();
        self.x_max.mean - self.z.mean >= eps
    }
}

impl DriftDetector for HddmA {
    fn update(&mut self, x: f64) -> bool {
        if self.drift {
            self.reset();
        }
        self.z.update(x);
        if self.x_min.n == 0.0 {
            self.x_min = self.z;
        }
        if self.x_max.n == 0.0 {
            self.x_max = self.z;
        }
        let eps_z = self.hoeffding_bound(self.z.n);
        let eps_x = self.hoeffding_bound(self.x_min.n);
        if self.x_min.mean + eps_x >= self.z.mean + eps_z {
            self.x_min = self.z;
        }
        let eps_x = self.hoeffding_bound(self.x_max.n);
        if self.x_max.mean - eps_x <= self.z.mean - eps_z {
            self.x_max = self.z;
        }
        if self.mean_incr(self.drift_confidence) {
            self.warning = false;
            self.drift = true;
        } else if self.mean_incr(self.warning_confidence) {
            self.warning = true;
            self.drift = false;
        } else {
            self.warning = false;
            self.drift = false;
        }
        if self.two_sided_test {
            if self.mean_decr(self.drift_confidence) {
                self.drift = true;
            } else if self.mean_decr(self.warning_confidence) {
                self.warning = true;
            }
        }
        self.drift
    }
    fn drift_detected(&self) -> bool {
        self.drift
    }
    fn warning_detected(&self) -> bool {
        self.warning
    }
    fn reset(&mut self) {
        self.drift = false;
        self.warning = false;
        self.x_min = Mean::default();
        self.x_max = Mean::default();
        self.z = Mean::default();
    }
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = W::new(codec::KIND_HDDM_A);
        w.f64(self.drift_confidence);
        w.f64(self.warning_confidence);
        w.bool(self.two_sided_test);
        w.bool(self.drift);
        w.bool(self.warning);
        self.x_min.write(&mut w);
        self.x_max.write(&mut w);
        self.z.write(&mut w);
        w.0
    }
    fn from_bytes(b: &[u8]) -> Result<Self> {
        const WHAT: &str = "HDDM_A";
        let mut r = R::new(b, codec::KIND_HDDM_A, WHAT)?;
        let (dc, wc, two) = (r.f64()?, r.f64()?, r.bool()?);
        let mut h = codec::params(WHAT, HddmA::new(dc, wc, two))?;
        h.drift = r.bool()?;
        h.warning = r.bool()?;
        h.x_min = Mean::read(&mut r)?;
        h.x_max = Mean::read(&mut r)?;
        h.z = Mean::read(&mut r)?;
        r.finish()?;
        Ok(h)
    }
}
