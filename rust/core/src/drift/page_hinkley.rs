//! Page-Hinkley test: River 0.26.1's `drift.PageHinkley`.

use super::codec::{self, R, W};
use super::stats::Mean;
use super::DriftDetector;
use crate::error::Result;
use crate::invalid;

/// Which changes of the mean Page-Hinkley watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Up,
    Down,
    Both,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Up => "up",
            Mode::Down => "down",
            Mode::Both => "both",
        }
    }
    pub fn parse(s: &str) -> Result<Mode> {
        match s {
            "up" => Ok(Mode::Up),
            "down" => Ok(Mode::Down),
            "both" => Ok(Mode::Both),
            _ => invalid!("PageHinkley: mode must be one of 'up', 'down', 'both', got {s:?}"),
        }
    }
    fn code(self) -> u8 {
        match self {
            Mode::Up => 0,
            Mode::Down => 1,
            Mode::Both => 2,
        }
    }
}

/// Page-Hinkley drift detector (`river.drift.PageHinkley`).
#[derive(Clone, Debug, PartialEq)]
pub struct PageHinkley {
    min_instances: u64,
    delta: f64,
    threshold: f64,
    alpha: f64,
    mode: Mode,
    drift: bool,
    x_mean: Mean,
    sum_increase: f64,
    sum_decrease: f64,
    min_increase: f64,
    max_decrease: f64,
}

impl Default for PageHinkley {
    fn default() -> Self {
        PageHinkley::new(30, 0.005, 50.0, 1.0 - 0.0001, Mode::Both).unwrap_or_else(|_| unreachable!())
    }
}

impl PageHinkley {
    /// River's defaults: `min_instances=30, delta=0.005, threshold=50.0, alpha=1 - 0.0001,
    /// mode="both"`.
    pub fn new(min_instances: u64, delta: f64, threshold: f64, alpha: f64, mode: Mode) -> Result<Self> {
        if !delta.is_finite() {
            return invalid!("PageHinkley: delta must be finite, got {delta}");
        }
        if !(threshold.is_finite() && threshold >= 0.0) {
            return invalid!("PageHinkley: threshold must be finite and >= 0, got {threshold}");
        }
        if !(0.0..=1.0).contains(&alpha) {
            return invalid!("PageHinkley: alpha must be in [0, 1], got {alpha}");
        }
        let mut p = PageHinkley {
            min_instances,
            delta,
            threshold,
            alpha,
            mode,
            drift: false,
            x_mean: Mean::default(),
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: 0.0,
            max_decrease: 0.0,
        };
        p.reset();
        Ok(p)
    }
    pub fn min_instances(&self) -> u64 {
        self.min_instances
    }
    pub fn delta(&self) -> f64 {
        self.delta
    }
    pub fn threshold(&self) -> f64 {
        self.threshold
    }
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

impl DriftDetector for PageHinkley {
    fn update(&mut self, x: f64) -> bool {
        if self.drift {
            self.reset();
        }
        self.x_mean.update(x);
        let dev = x - self.x_mean.mean;
        self.sum_increase = self.alpha * self.sum_increase + dev - self.delta;
        self.sum_decrease = self.alpha * self.sum_decrease + dev + self.delta;
        if self.sum_increase < self.min_increase {
            self.min_increase = self.sum_increase;
        }
        if self.sum_decrease > self.max_decrease {
            self.max_decrease = self.sum_decrease;
        }
        if self.x_mean.n >= self.min_instances as f64 {
            let test_increase = self.sum_increase - self.min_increase;
            let test_decrease = self.max_decrease - self.sum_decrease;
            self.drift = match self.mode {
                Mode::Up => test_increase > self.threshold,
                Mode::Down => test_decrease > self.threshold,
                Mode::Both => test_increase > self.threshold || test_decrease > self.threshold,
            };
        }
        self.drift
    }
    fn drift_detected(&self) -> bool {
        self.drift
    }
    fn reset(&mut self) {
        self.drift = false;
        self.x_mean = Mean::default();
        self.sum_increase = 0.0;
        self.sum_decrease = 0.0;
        self.min_increase = f64::INFINITY;
        self.max_decrease = -1.0;
    }
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = W::new(codec::KIND_PAGE_HINKLEY);
        w.u64(self.min_instances);
        w.f64(self.delta);
        w.f64(self.threshold);
        w.f64(self.alpha);
        w.u8(self.mode.code());
        w.bool(self.drift);
        self.x_mean.write(&mut w);
        w.f64(self.sum_increase);
        w.f64(self.sum_decrease);
        w.f64(self.min_increase);
        w.f64(self.max_decrease);
        w.0
    }
    fn from_bytes(b: &[u8]) -> Result<Self> {
        const WHAT: &str = "PageHinkley";
        let mut r = R::new(b, codec::KIND_PAGE_HINKLEY, WHAT)?;
        let (mi, delta, threshold, alpha) = (r.u64()?, r.f64()?, r.f64()?, r.f64()?);
        let mode = match r.u8()? {
            0 => Mode::Up,
            1 => Mode::Down,
            2 => Mode::Both,
            m => return Err(r.bad(format!("mode code {m}"))),
        };
        let mut p = codec::params(WHAT, PageHinkley::new(mi, delta, threshold, alpha, mode))?;
        p.drift = r.bool()?;
        p.x_mean = Mean::read(&mut r)?;
        p.sum_increase = r.f64()?;
        p.sum_decrease = r.f64()?;
        p.min_increase = r.f64()?;
        p.max_decrease = r.f64()?;
        r.finish()?;
        Ok(p)
    }
}
