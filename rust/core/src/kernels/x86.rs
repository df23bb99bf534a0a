//! AVX2+FMA and AVX-512 kernels for x86-64. Callers check CPU support first
//! ([`super::SimdLevel::supported`]); these functions are `unsafe` for that reason only.

use std::arch::x86_64::*;

/// # Safety
/// The CPU must support AVX2 and FMA; `q.len() == dim`, `items.len() >= out.len() * dim`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_scores_avx2(items: &[f32], dim: usize, q: &[f32], out: &mut [f32]) {
    let full = dim / 8 * 8;
    for (r, o) in out.iter_mut().enumerate() {
        let row = &items[r * dim..(r + 1) * dim];
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= full {
            // SAFETY: i + 16 <= full <= dim = row.len() = q.len(), so both 8-lane loads at
            // i and i + 8 are in bounds; loadu has no alignment requirement.
            unsafe {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(row.as_ptr().add(i)), _mm256_loadu_ps(q.as_ptr().add(i)), acc0);
                acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(row.as_ptr().add(i + 8)), _mm256_loadu_ps(q.as_ptr().add(i + 8)), acc1);
            }
            i += 16;
        }
        while i < full {
            // SAFETY: i + 8 <= full <= dim, in bounds for both slices.
            unsafe {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(row.as_ptr().add(i)), _mm256_loadu_ps(q.as_ptr().add(i)), acc0);
            }
            i += 8;
        }
        let acc = _mm256_add_ps(acc0, acc1);
        let hi = _mm256_extractf128_ps(acc, 1);
        let lo = _mm256_castps256_ps128(acc);
        let s4 = _mm_add_ps(hi, lo);
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
        let mut s = _mm_cvtss_f32(s1);
        for j in full..dim {
            s += row[j] * q[j];
        }
        *o = s;
    }
}

/// # Safety
/// The CPU must support AVX-512F; `q.len() == dim`, `items.len() >= out.len() * dim`.
#[target_feature(enable = "avx512f")]
pub unsafe fn dot_scores_avx512(items: &[f32], dim: usize, q: &[f32], out: &mut [f32]) {
    let full = dim / 16 * 16;
    let rem = dim - full;
    let mask: __mmask16 = ((1u32 << rem) - 1) as __mmask16;
    for (r, o) in out.iter_mut().enumerate() {
        let row = &items[r * dim..(r + 1) * dim];
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= full {
            // SAFETY: i + 32 <= full <= dim, so both 16-lane loads are in bounds.
            unsafe {
                acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(row.as_ptr().add(i)), _mm512_loadu_ps(q.as_ptr().add(i)), acc0);
                acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(row.as_ptr().add(i + 16)), _mm512_loadu_ps(q.as_ptr().add(i + 16)), acc1);
            }
            i += 32;
        }
        while i < full {
            // SAFETY: i + 16 <= full <= dim.
            unsafe {
                acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(row.as_ptr().add(i)), _mm512_loadu_ps(q.as_ptr().add(i)), acc0);
            }
            i += 16;
        }
        if rem > 0 {
            // SAFETY: the masked load touches only lanes full..dim, which are in bounds;
            // masked-off lanes are not accessed.
            unsafe {
                let a = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(full));
                let b = _mm512_maskz_loadu_ps(mask, q.as_ptr().add(full));
                acc1 = _mm512_fmadd_ps(a, b, acc1);
            }
        }
        *o = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    }
}
