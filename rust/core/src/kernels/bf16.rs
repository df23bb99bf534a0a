//! bfloat16 item rows for scoring: the upper 16 bits of an `f32` (rounded to nearest even).
//! Half the bytes of `f32` with the same range, so a scan over the item matrix reads half
//! the memory; 8 bits of mantissa are plenty to rank items. Conversion back is a shift,
//! which the SIMD kernels do in registers.

use super::SimdLevel;

/// `f32` to bf16, rounding to nearest even (NaN stays NaN).
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let r = b.wrapping_add(0x7FFF + ((b >> 16) & 1));
    (r >> 16) as u16
}

/// bf16 to `f32` (exact).
#[inline]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `out[r] = row_r · q` for bf16 rows of width `dim`.
pub fn dot_scores_bf16(level: SimdLevel, items: &[u16], dim: usize, q: &[f32], out: &mut [f32]) {
    assert!(q.len() == dim && items.len() >= out.len() * dim, "dot_scores_bf16: shape mismatch");
    if dim == 0 {
        out.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 if level.supported() => {
            // SAFETY: AVX-512F is present (checked by `supported`); shapes checked above.
            unsafe { x86::dot_avx512(items, dim, q, out) }
        }
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 | SimdLevel::Avx512 if SimdLevel::Avx2.supported() => {
            // SAFETY: AVX2 and FMA are present (checked by `supported`); shapes checked above.
            unsafe { x86::dot_avx2(items, dim, q, out) }
        }
        _ => dot_scalar(items, dim, q, out),
    }
}

/// The scalar reference.
pub fn dot_scalar(items: &[u16], dim: usize, q: &[f32], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(items.chunks_exact(dim)) {
        *o = row.iter().zip(q).map(|(&h, &x)| from_bf16(h) * x).sum();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must support AVX-512F; `q.len() == dim`, `items.len() >= out.len() * dim`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_avx512(items: &[u16], dim: usize, q: &[f32], out: &mut [f32]) {
        let full = dim / 16 * 16;
        for (r, o) in out.iter_mut().enumerate() {
            let row = &items[r * dim..(r + 1) * dim];
            let mut acc = _mm512_setzero_ps();
            let mut i = 0;
            while i < full {
                // SAFETY: i + 16 <= full <= dim = row.len() = q.len(): both loads (16 u16
                // and 16 f32) are in bounds; loadu has no alignment requirement.
                unsafe {
                    let h = _mm256_loadu_si256(row.as_ptr().add(i) as *const __m256i);
                    let x = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
                    acc = _mm512_fmadd_ps(x, _mm512_loadu_ps(q.as_ptr().add(i)), acc);
                }
                i += 16;
            }
            let mut s = _mm512_reduce_add_ps(acc);
            for j in full..dim {
                s += super::from_bf16(row[j]) * q[j];
            }
            *o = s;
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `q.len() == dim`, `items.len() >= out.len() * dim`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_avx2(items: &[u16], dim: usize, q: &[f32], out: &mut [f32]) {
        let full = dim / 8 * 8;
        for (r, o) in out.iter_mut().enumerate() {
            let row = &items[r * dim..(r + 1) * dim];
            let mut acc = _mm256_setzero_ps();
            let mut i = 0;
            while i < full {
                // SAFETY: i + 8 <= full <= dim: both loads (8 u16 and 8 f32) are in bounds.
                unsafe {
                    let h = _mm_loadu_si128(row.as_ptr().add(i) as *const __m128i);
                    let x = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)));
                    acc = _mm256_fmadd_ps(x, _mm256_loadu_ps(q.as_ptr().add(i)), acc);
                }
                i += 8;
            }
            let hi = _mm256_extractf128_ps(acc, 1);
            let s4 = _mm_add_ps(hi, _mm256_castps256_ps128(acc));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let mut s = _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
            for j in full..dim {
                s += super::from_bf16(row[j]) * q[j];
            }
            *o = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_rounds_to_nearest_and_keeps_specials() {
        for x in [0.0f32, -0.0, 1.0, -2.5, 3.140625, 1e-30, 1e30, f32::INFINITY, f32::NEG_INFINITY] {
            let y = from_bf16(to_bf16(x));
            assert!(y == x || (y - x).abs() <= x.abs() / 128.0, "{x} -> {y}");
        }
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 256.0)), 1.0);
    }

    #[test]
    fn every_level_matches_the_scalar_reference_on_odd_shapes() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for dim in [1usize, 5, 8, 15, 16, 17, 33, 64, 100] {
            for n in [0usize, 1, 3, 19] {
                let items: Vec<u16> = (0..n * dim).map(|_| to_bf16(rnd())).collect();
                let q: Vec<f32> = (0..dim).map(|_| rnd()).collect();
                let mut want = vec![0.0; n];
                dot_scalar(&items, dim, &q, &mut want);
                for level in SimdLevel::available() {
                    let mut got = vec![0.0; n];
                    dot_scores_bf16(level, &items, dim, &q, &mut got);
                    for (a, b) in got.iter().zip(&want) {
                        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{level:?} dim {dim}: {a} vs {b}");
                    }
                }
            }
        }
    }
}
