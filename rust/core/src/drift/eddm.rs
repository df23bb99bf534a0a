//! EDDM (early drift detection method), Baena-García et al. 2006: River 0.26.1's
//! `drift.binary.EDDM`.

use super::codec::{self, R, W};
use super::stats::Var;
use super::{py_pow, DriftDetector};
use crate::error::Result;
use crate::invalid;

/// EDDM drift and warning detector (`river.drift.binary.EDDM`). Input: 1 for an error;
/// anything else (River compares `x == 1`) counts as no error.
#[derive(Clone, Debug, PartialEq)]
pub struct Eddm {
    warm_start: u64,
    alpha: f64,
    beta: f64,
    drift: bool,
    warning: bool,
    error_distances: Var,
    n: u64,
    last_error: u64,
    n_errors: u64,
    p2s_prime_max: f64,
}

impl Default for Eddm {
    fn default() -> Self {
        Eddm::new(30, 0.95, 0.9).unwrap_or_else(|_| unreachable!())
    }
}

impl Eddm {
    /// River's defaults: `warm_start=30, alpha=0.95, beta=0.9`.
    pub fn new(warm_start: u64, alpha: f64, beta: f64) -> Result<Self> {
        if !(alpha > 0.0 && alpha <= 1.0) {
            return invalid!("EDDM: alpha must be in (0, 1], got {alpha}");
        }
        if !(beta > 0.0 && beta <= 1.0) {
            return invalid!("EDDM: beta must be in (0, 1], got {beta}");
        }
        if alpha < beta {
            return invalid!("EDDM: 'alpha' must be greater or equal to 'beta' (alpha={alpha}, beta={beta})");
        }
        let mut e = Eddm {
            warm_start,
            alpha,
            beta,
            drift: false,
            warning: false,
            error_distances: Var::default(),
            n: 0,
            last_error: 0,
            n_errors: 0,
            p2s_prime_max: -1.0,
        };
        e.reset();
        Ok(e)
    }
    pub fn warm_start(&self) -> u64 {
        self.warm_start
    }
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
    pub fn beta(&self) -> f64 {
        self.beta
    }
}

impl DriftDetector for Eddm {
    fn update(&mut self, x: f64) -> bool {
        if self.drift {
            self.reset();
        }
        self.n = self.n.saturating_add(1);
        if x == 1.0 {
            self.n_errors = self.n_errors.saturating_add(1);
            self.error_distances.update((self.n - self.last_error) as f64);
            if self.n > self.warm_start {
                let pi_prime = self.error_distances.mean.mean;
                let si_prime = py_pow(self.error_distances.get(), 0.5);
                let p2s_prime = pi_prime + 2.0 * si_prime;
                if p2s_prime > self.p2s_prime_max {
                    self.p2s_prime_max = p2s_prime;
                } else if self.n_errors > self.warm_start {
                    let level = p2s_prime / self.p2s_prime_max;
                    if level < self.beta {
                        self.drift = true;
                    } else {
                        self.warning = level < self.alpha;
                    }
                }
            }
            self.last_error = self.n;
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
        self.error_distances = Var::default();
        self.n = 0;
        self.last_error = 0;
        self.n_errors = 0;
        self.p2s_prime_max = -1.0;
    }
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = W::new(codec::KIND_EDDM);
        w.u64(self.warm_start);
        w.f64(self.alpha);
        w.f64(self.beta);
        w.bool(self.drift);
        w.bool(self.warning);
        self.error_distances.write(&mut w);
        w.u64(self.n);
        w.u64(self.last_error);
        w.u64(self.n_errors);
        w.f64(self.p2s_prime_max);
        w.0
    }
    fn from_bytes(b: &[u8]) -> Result<Self> {
        const WHAT: &str = "EDDM";
        let mut r = R::new(b, codec::KIND_EDDM, WHAT)?;
        let (ws, alpha, beta) = (r.u64()?, r.f64()?, r.f64()?);
        let mut e = codec::params(WHAT, Eddm::new(ws, alpha, beta))?;
        e.drift = r.bool()?;
        e.warning = r.bool()?;
        e.error_distances = Var::read(&mut r)?;
        e.n = r.u64()?;
        e.last_error = r.u64()?;
        e.n_errors = r.u64()?;
        e.p2s_prime_max = r.f64()?;
        if e.last_error > e.n || e.n_errors > e.n || e.n == u64::MAX {
            return Err(r.bad("counters out of order"));
        }
        r.finish()?;
        Ok(e)
    }
}
