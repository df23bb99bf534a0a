//! Concept-drift detectors, ported line by line from River 0.26.1 so that, fed the same
//! stream, they flag drift (and warnings) at exactly the same indices.
//!
//! | detector | River class | input |
//! |---|---|---|
//! | [`Adwin`] | `drift.ADWIN` (its Rust `AdaptiveWindowing` core) | real values |
//! | [`PageHinkley`] | `drift.PageHinkley` | real values |
//! | [`Ddm`] | `drift.binary.DDM` | 0/1 (errors) |
//! | [`Eddm`] | `drift.binary.EDDM` | 0/1 (errors) |
//! | [`HddmA`] | `drift.binary.HDDMA` | 0/1 (errors) |
//! | [`HddmW`] | `drift.binary.HDDMW` | 0/1 (errors) |
//! | [`Kswin`] | `drift.KSWIN` (CPython's `random` and SciPy's exact `ks_2samp`, ported) | real values |
//!
//! Floating point: every expression keeps River's order of operations (Rust never fuses a
//! multiply and an add on its own), `ln`/`sqrt`/`pow` are the C library's, as in CPython,
//! and Python's `x ** y` is the C `pow` (not `x * x`; they differ in the last bit for about
//! one value in a thousand), so the state after each update is bit-for-bit River's.
//!
//! Like River, a detector that flagged a drift resets itself at the start of the next update.
//!
//! Non-finite input: no input panics. NaN and ±inf go through the same arithmetic as in
//! River and give River's result: ADWIN, PageHinkley, DDM, HDDM_A and HDDM_W get NaN
//! statistics (comparisons with NaN are false) and stay silent until
//! [`DriftDetector::reset`]; EDDM counts only values equal to 1; KSWIN's p-value is NaN
//! (SciPy's `nan_policy="propagate"`) while a NaN is in a tested sample, so no drift.
//! Where River raises or panics instead, recofast defines the result:
//! - DDM, when the running error rate leaves [0, 1] (inputs other than 0/1: `math.sqrt` of a
//!   negative number raises) or is NaN before a first minimum exists (`None + float`): the
//!   standard deviation or the minimum is NaN, so that update flags nothing and clears the
//!   warning.
//! - EDDM, if the variance of the error distances were negative (not for real input):
//!   Python gives a complex number, recofast NaN.
//! - ADWIN with `max_buckets = 1`, where River can delete from an empty bucket and panic:
//!   recofast skips empty trailing buckets (identical to River up to River's panic).
//!
//! Every detector has a byte encoding (`to_bytes`/`from_bytes`): a format version byte, a
//! kind byte, the parameters and the state, all little-endian. Reading is bounds-checked
//! and re-validates the parameters and the state's invariants, so corrupt bytes give an
//! [`Error::Snapshot`](crate::Error::Snapshot), never a panic or a detector that could panic later.

mod adwin;
mod codec;
mod ddm;
mod eddm;
mod hddm_a;
mod hddm_w;
mod kswin;
mod page_hinkley;
mod pyrandom;
mod stats;

pub use adwin::Adwin;
pub use codec::FORMAT_VERSION;
pub use ddm::Ddm;
pub use eddm::Eddm;
pub use hddm_a::HddmA;
pub use hddm_w::HddmW;
pub use kswin::Kswin;
pub use page_hinkley::{Mode, PageHinkley};

use crate::error::Result;

/// What every drift detector does.
pub trait DriftDetector {
    /// Feeds one value; returns whether a drift is detected now.
    fn update(&mut self, x: f64) -> bool;
    /// Whether the last update detected a drift.
    fn drift_detected(&self) -> bool;
    /// Whether the last update is in the warning zone (false for detectors without one).
    fn warning_detected(&self) -> bool {
        false
    }
    /// Forgets everything seen; the parameters stay.
    fn reset(&mut self);
    /// Feeds many values in order; returns the indices at which a drift was detected.
    fn update_many(&mut self, xs: &[f64]) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, &x) in xs.iter().enumerate() {
            if self.update(x) {
                out.push(i);
            }
        }
        out
    }
    /// The byte encoding of parameters and state.
    fn to_bytes(&self) -> Vec<u8>;
    /// A detector from `to_bytes` output.
    fn from_bytes(b: &[u8]) -> Result<Self>
    where
        Self: Sized;
}

/// Python's `x ** y` for floats: the C library's `pow`. The exponent goes through
/// `black_box` so the compiler cannot turn `pow(x, 2.0)` into `x * x`, which rounds
/// differently from glibc's `pow` for some `x`.
#[inline]
pub(crate) fn py_pow(x: f64, y: f64) -> f64 {
    x.powf(std::hint::black_box(y))
}

#[cfg(test)]
mod tests;
