//! The tile of the batched kernel: [`QT`] queries against a block of [`NB`] items. The scan
//! (`scan`) lays the tiles out and the per-level kernels (`scalar`, `x86`) fill them; both
//! take the shape from here.

/// Items per block of the batched kernel.
pub(crate) const NB: usize = 128;
/// Queries per tile of the batched kernel.
pub(crate) const QT: usize = 8;
