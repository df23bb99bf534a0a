//! The running statistics River's detectors use (`stats.Mean`, `stats.Var`,
//! `stats.EWMean`), with River's arithmetic, unweighted (w = 1).

use super::codec::{R, W};
use crate::error::Result;

/// `river.stats.Mean`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Mean {
    pub n: f64,
    pub mean: f64,
}

impl Mean {
    #[inline]
    pub fn update(&mut self, x: f64) {
        self.n += 1.0;
        self.mean += (1.0 / self.n) * (x - self.mean);
    }
    pub fn write(&self, w: &mut W) {
        w.f64(self.n);
        w.f64(self.mean);
    }
    pub fn read(r: &mut R<'_>) -> Result<Self> {
        Ok(Mean { n: r.f64()?, mean: r.f64()? })
    }
}

/// `river.stats.Var` with ddof = 1 (Welford).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Var {
    pub mean: Mean,
    pub s: f64,
}

impl Var {
    #[inline]
    pub fn update(&mut self, x: f64) {
        let mean_old = self.mean.mean;
        self.mean.update(x);
        let mean_new = self.mean.mean;
        self.s += 1.0 * (x - mean_old) * (x - mean_new);
    }
    #[inline]
    pub fn get(&self) -> f64 {
        if self.mean.n > 1.0 {
            self.s / (self.mean.n - 1.0)
        } else {
            0.0
        }
    }
    pub fn write(&self, w: &mut W) {
        self.mean.write(w);
        w.f64(self.s);
    }
    pub fn read(r: &mut R<'_>) -> Result<Self> {
        Ok(Var { mean: Mean::read(r)?, s: r.f64()? })
    }
}

/// `river.stats.EWMean` (River's Rust `EWMean`): the first value is the mean, then
/// `alpha * x + (1 - alpha) * mean`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct EwMean {
    pub mean: f64,
    pub alpha: f64,
    one_minus_alpha: f64,
    initialized: bool,
}

impl EwMean {
    pub fn new(alpha: f64) -> Self {
        EwMean { mean: 0.0, alpha, one_minus_alpha: 1.0 - alpha, initialized: false }
    }
    #[inline]
    pub fn update(&mut self, x: f64) {
        if !self.initialized {
            self.mean = x;
            self.initialized = true;
        } else {
            self.mean = self.alpha * x + self.one_minus_alpha * self.mean;
        }
    }
    pub fn write(&self, w: &mut W) {
        w.f64(self.mean);
        w.bool(self.initialized);
    }
    pub fn read(r: &mut R<'_>, alpha: f64) -> Result<Self> {
        let mut m = EwMean::new(alpha);
        m.mean = r.f64()?;
        m.initialized = r.bool()?;
        Ok(m)
    }
}
