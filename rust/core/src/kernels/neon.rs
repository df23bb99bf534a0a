//! NEON kernels for aarch64 (NEON is part of the aarch64 baseline, so no runtime check).

use std::arch::aarch64::*;

/// # Safety
/// `q.len() == dim`, `items.len() >= out.len() * dim` (NEON itself is always present).
#[target_feature(enable = "neon")]
pub unsafe fn dot_scores_neon(items: &[f32], dim: usize, q: &[f32], out: &mut [f32]) {
    let full = dim / 8 * 8;
    for (r, o) in out.iter_mut().enumerate() {
        let row = &items[r * dim..(r + 1) * dim];
        let mut acc0 = vdupq_n_f32(0.0);
        let mut acc1 = vdupq_n_f32(0.0);
        let mut i = 0;
        while i < full {
            // SAFETY: i + 8 <= full <= dim = row.len() = q.len(), so the 4-lane loads at i and
            // i + 4 are in bounds; vld1q has no alignment requirement beyond f32's.
            unsafe {
                acc0 = vfmaq_f32(acc0, vld1q_f32(row.as_ptr().add(i)), vld1q_f32(q.as_ptr().add(i)));
                acc1 = vfmaq_f32(acc1, vld1q_f32(row.as_ptr().add(i + 4)), vld1q_f32(q.as_ptr().add(i + 4)));
            }
            i += 8;
        }
        let mut s = vaddvq_f32(vaddq_f32(acc0, acc1));
        for j in full..dim {
            s += row[j] * q[j];
        }
        *o = s;
    }
}
