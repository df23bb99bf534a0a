//! DDM (drift detection method), Gama et al. 2004: River 0.26.1's `drift.binary.DDM`.

use super::codec::{self, R, W};
use super::stats::Mean;
use super::DriftDetector;
use crate::error::Result;
use crate::invalid;

/// DDM drift and warning detector (`river.drift.binary.DDM`). Input: 1 for an error, 0
/// otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct Ddm {
    warm_start: u64,
    warning_threshold: f64,
    drift_threshold: f64,
    drift: bool,
    warning: bool,
    p: Mean,
    // River starts these at None; NaN never compares true, which is what a missing minimum
    // means (River would raise a TypeError where recofast compares with NaN).
    p_min: f64,
    s_min: f64,
    ps_min: f64,
}

impl Default for Ddm {
    fn default() -> Self {
        Ddm::new(30, 2.0, 3.0).unwrap_or_else(|_| unreachable!())
    }
}

impl Ddm {
    /// River's defaults: `warm_start=30, warning_threshold=2.0, drift_threshold=3.0`.
    pub fn new(warm_start: u64, warning_threshold: f64, drift_threshold: f64) -> Result<Self> {
        if !(warning_threshold.is_finite() && warning_threshold >= 0.0) {
            return invalid!("DDM: warning_threshold must be finite and >= 0, got {warning_threshold}");
        }
        if !(drift_threshold.is_finite() && drift_threshold >= 0.0) {
            return invalid!("DDM: drift_threshold must be finite and >= 0, got {drift_threshold}");
        }
        let mut d = Ddm {
            warm_start,
            warning_threshold,
            drift_threshold,
            drift: false,
            warning: false,
            p: Mean::default(),
            p_min: f64::NAN,
            s_min: f64::NAN,
            ps_min: f64::INFINITY,
        };
        d.reset();
        Ok(d)
    }
    pub fn warm_start(&self) -> u64 {
        self.warm_start
    }
    pub fn warning_threshold(&self) -> f64 {
        self.warning_threshold
    }
    pub fn drift_threshold(&self) -> f64 {
        self.drift_threshold
    }
}

impl DriftDetector for Ddm {
    fn update(&mut self, x: f64) -> bool {
        if self.drift {
            self.reset();
        }
        self.p.update(x);
        let p_i = self.p.mean;
        let n = self.p.n;
        // math.sqrt of a negative number raises in River; here it is NaN (see the module docs).
        let s_i = (p_i * (1.0 - p_i) / n).sqrt();
        if n > self.warm_start as f64 {
            if p_i + s_i <= self.ps_min {
                self.p_min = p_i;
                self.s_min = s_i;
                self.ps_min = self.p_min + self.s_min;
            }
            self.warning = p_i + s_i > self.p_min + self.warning_threshold * self.s_min;
            if p_i + s_i > self.p_min + self.drift_threshold * self.s_min {
                self.drift = true;
                self.warning = false;
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
        self.p = Mean::default();
        self.p_min = f64::NAN;
        self.s_min = f64::NAN;
        self.ps_min = f64::INFINITY;
    }
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = W::new(codec::KIND_DDM);
        w.u64(self.warm_start);
        w.f64(self.warning_threshold);
        w.f64(self.drift_threshold);
        w.bool(self.drift);
        w.bool(self.warning);
        self.p.write(&mut w);
        w.f64(self.p_min);
        w.f64(self.s_min);
        w.f64(self.ps_min);
        w.0
    }
    fn from_bytes(b: &[u8]) -> Result<Self> {
        const WHAT: &str = "DDM";
        let mut r = R::new(b, codec::KIND_DDM, WHAT)?;
        let (ws, wt, dt) = (r.u64()?, r.f64()?, r.f64()?);
        let mut d = codec::params(WHAT, Ddm::new(ws, wt, dt))?;
        d.drift = r.bool()?;
        d.warning = r.bool()?;
        d.p = Mean::read(&mut r)?;
        d.p_min = r.f64()?;
        d.s_min = r.f64()?;
        d.ps_min = r.f64()?;
        r.finish()?;
        Ok(d)
    }
}
