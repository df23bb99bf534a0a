//! HDDM_W (Hoeffding drift detection, weighted moving average), Frías-Blanco et al. 2014:
//! River 0.26.1's `drift.binary.HDDM_W`.

use super::codec::{self, R, W};
use super::hddm_a::check_confidence as check_conf;
use super::stats::EwMean;
use super::{py_pow, DriftDetector};
use crate::error::Result;
use crate::invalid;

/// River's `SampleInfo`: an EWMA and its bound coefficient.
#[derive(Clone, Copy, Debug, PartialEq)]
struct SampleInfo {
    ewma: EwMean,
    is_init: bool,
    ibc: f64,
    lambd_sq: f64,
    c_lambd_sq: f64,
}

impl SampleInfo {
    fn new(lambd: f64) -> Self {
        SampleInfo { ewma: EwMean::new(lambd), is_init: false, ibc: 1.0, lambd_sq: lambd * lambd, c_lambd_sq: py_pow(1.0 - lambd, 2.0) }
    }
    #[inline]
    fn update(&mut self, x: f64) {
        self.ewma.update(x);
        self.is_init = true;
        self.ibc = self.lambd_sq + self.c_lambd_sq * self.ibc;
    }
    fn write(&self, w: &mut W) {
        self.ewma.write(w);
        w.bool(self.is_init);
        w.f64(self.ibc);
    }
    fn read(r: &mut R<'_>, lambd: f64) -> Result<Self> {
        let mut s = SampleInfo::new(lambd);
        s.ewma = EwMean::read(r, lambd)?;
        s.is_init = r.bool()?;
        s.ibc = r.f64()?;
        Ok(s)
    }
}

/// HDDM_W drift and warning detector (`river.drift.binary.HDDM_W`). Input: 1 for an error,
/// 0 otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct HddmW {
    drift_confidence: f64,
    warning_confidence: f64,
    lambda_val: f64,
    two_sided_test: bool,
    drift: bool,
    warning: bool,
    total: SampleInfo,
    s1_decr: SampleInfo,
    s1_incr: SampleInfo,
    s2_decr: SampleInfo,
    s2_incr: SampleInfo,
    incr_cutpoint: f64,
    decr_cutpoint: f64,
}

impl Default for HddmW {
    fn default() -> Self {
        HddmW::new(0.001, 0.005, 0.05, false).unwrap_or_else(|_| unreachable!())
    }
}

#[inline]
fn mcdiarmid_bound(ibc: f64, confidence: f64) -> f64 {
    (ibc * (1.0 / confidence).ln() / 2.0).sqrt()
}

#[inline]
fn has_mean_changed(s1: &SampleInfo, s2: &SampleInfo, confidence: f64) -> bool {
    if !(s1.is_init && s2.is_init) {
        return false;
    }
    let ibc_sum = s1.ibc + s2.ibc;
    let bound = mcdiarmid_bound(ibc_sum, confidence);
    s2.ewma.mean - s1.ewma.mean > bound
}

impl HddmW {
    /// River's defaults: `drift_confidence=0.001, warning_confidence=0.005,
    /// lambda_val=0.05, two_sided_test=False`.
    pub fn new(drift_confidence: f64, warning_confidence: f64, lambda_val: f64, two_sided_test: bool) -> Result<Self> {
        check_conf("drift_confidence", "HDDM_W", drift_confidence)?;
        check_conf("warning_confidence", "HDDM_W", warning_confidence)?;
        if !(lambda_val > 0.0 && lambda_val <= 1.0) {
            return invalid!("HDDM_W: lambda_val must be in (0, 1], got {lambda_val}");
        }
        let s = SampleInfo::new(lambda_val);
        Ok(HddmW {
            drift_confidence,
            warning_confidence,
            lambda_val,
            two_sided_test,
            drift: false,
            warning: false,
            total: s,
            s1_decr: s,
            s1_incr: s,
            s2_decr: s,
            s2_incr: s,
            incr_cutpoint: f64::INFINITY,
            decr_cutpoint: f64::NEG_INFINITY,
        })
    }
    pub fn drift_confidence(&self) -> f64 {
        self.drift_confidence
    }
    pub fn warning_confidence(&self) -> f64 {
        self.warning_confidence
    }
    pub fn lambda_val(&self) -> f64 {
        self.lambda_val
    }
    pub fn two_sided_test(&self) -> bool {
        self.two_sided_test
    }

    fn update_incr_stats(&mut self, x: f64, confidence: f64) {
        let eps = mcdiarmid_bound(self.total.ibc, confidence);
        if self.total.ewma.mean + eps < self.incr_cutpoint {
            self.incr_cutpoint = self.total.ewma.mean + eps;
            self.s1_incr = self.total;
            self.s2_incr = SampleInfo::new(self.lambda_val);
        } else {
            self.s2_incr.update(x);
        }
    }
    fn update_decr_stats(&mut self, x: f64, confidence: f64) {
        let eps = mcdiarmid_bound(self.total.ibc, confidence);
        if self.total.ewma.mean - eps > self.decr_cutpoint {
            self.decr_cutpoint = self.total.ewma.mean - eps;
            self.s1_decr = self.total;
            self.s2_decr = SampleInfo::new(self.lambda_val);
        } else {
            self.s2_decr.update(x);
        }
    }
}

impl DriftDetector for HddmW {
    fn update(&mut self, x: f64) -> bool {
        if self.drift {
            self.reset();
        }
        self.total.update(x);
        self.update_incr_stats(x, self.drift_confidence);
        if has_mean_changed(&self.s1_incr, &self.s2_incr, self.drift_confidence) {
            self.warning = false;
            self.drift = true;
        } else if has_mean_changed(&self.s1_incr, &self.s2_incr, self.warning_confidence) {
            self.warning = true;
            self.drift = false;
        } else {
            self.warning = false;
            self.drift = false;
        }
        self.update_decr_stats(x, self.drift_confidence);
        if self.two_sided_test {
            if has_mean_changed(&self.s2_decr, &self.s1_decr, self.drift_confidence) {
                self.drift = true;
            } else if has_mean_changed(&self.s2_decr, &self.s1_decr, self.warning_confidence) {
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
        let s = SampleInfo::new(self.lambda_val);
        self.drift = false;
        self.warning = false;
        self.total = s;
        self.s1_decr = s;
        self.s1_incr = s;
        self.s2_decr = s;
        self.s2_incr = s;
        self.incr_cutpoint = f64::INFINITY;
        self.decr_cutpoint = f64::NEG_INFINITY;
    }
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = W::new(codec::KIND_HDDM_W);
        w.f64(self.drift_confidence);
        w.f64(self.warning_confidence);
        w.f64(self.lambda_val);
        w.bool(self.two_sided_test);
        w.bool(self.drift);
        w.bool(self.warning);
        for s in [&self.total, &self.s1_decr, &self.s1_incr, &self.s2_decr, &self.s2_incr] {
            s.write(&mut w);
        }
        w.f64(self.incr_cutpoint);
        w.f64(self.decr_cutpoint);
        w.0
    }
    fn from_bytes(b: &[u8]) -> Result<Self> {
        const WHAT: &str = "HDDM_W";
        let mut r = R::new(b, codec::KIND_HDDM_W, WHAT)?;
        let (dc, wc, lv, two) = (r.f64()?, r.f64()?, r.f64()?, r.bool()?);
        let mut h = codec::params(WHAT, HddmW::new(dc, wc, lv, two))?;
        h.drift = r.bool()?;
        h.warning = r.bool()?;
        h.total = SampleInfo::read(&mut r, lv)?;
        h.s1_decr = SampleInfo::read(&mut r, lv)?;
        h.s1_incr = SampleInfo::read(&mut r, lv)?;
        h.s2_decr = SampleInfo::read(&mut r, lv)?;
        h.s2_incr = SampleInfo::read(&mut r, lv)?;
        h.incr_cutpoint = r.f64()?;
        h.decr_cutpoint = r.f64()?;
        r.finish()?;
        Ok(h)
    }
}
