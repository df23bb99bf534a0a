//! AVX2+FMA and AVX-512 kernels for x86-64. Callers check CPU support first
//! ([`super::SimdLevel::supported`]); these functions are `unsafe` for that reason only.

// The AVX-512 intrinsics were stabilised in Rust 1.89, above the workspace's declared
// rust-version (1.85); this module needs 1.89+ (the declared MSRV should be raised).
#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;

use super::tile::{NB, QT};

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

/// One tile of the batched product: `out[qi * NB + i] = Σ_d qtt[d * QT + qi] · it[d * NB + i]`
/// for `qi < QT`, `i < NB`, and `masks[qi * NB / 16 + g]` bit `l` set when
/// `out[qi * NB + 16 g + l] > thr[qi]`.
///
/// # Safety
/// The CPU must support AVX-512F; `it.len() >= dim * NB`, `qtt.len() >= dim * QT`,
/// `out.len() >= QT * NB`, `masks.len() >= QT * NB / 16`.
#[target_feature(enable = "avx512f")]
pub unsafe fn tile_scores_avx512(it: &[f32], dim: usize, qtt: &[f32], thr: &[f32; QT], out: &mut [f32], masks: &mut [u16]) {
    debug_assert!(it.len() >= dim * NB && qtt.len() >= dim * QT && out.len() >= QT * NB && masks.len() >= QT * NB / 16);
    let ip = it.as_ptr();
    let qp = qtt.as_ptr();
    let mut j = 0;
    while j < NB {
        let mut acc = [[_mm512_setzero_ps(); 2]; QT];
        for d in 0..dim {
            // SAFETY: d < dim and j + 32 <= NB, so d * NB + j + 32 <= dim * NB <= it.len(), and
            // d * QT + qi < dim * QT <= qtt.len(); loadu/set1 have no alignment requirement.
            unsafe {
                let a0 = _mm512_loadu_ps(ip.add(d * NB + j));
                let a1 = _mm512_loadu_ps(ip.add(d * NB + j + 16));
                for (qi, a) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(*qp.add(d * QT + qi));
                    a[0] = _mm512_fmadd_ps(w, a0, a[0]);
                    a[1] = _mm512_fmadd_ps(w, a1, a[1]);
                }
            }
        }
        for (qi, a) in acc.iter().enumerate() {
            let t = _mm512_set1_ps(thr[qi]);
            // SAFETY: qi * NB + j + 32 <= QT * NB <= out.len().
            unsafe {
                _mm512_storeu_ps(out.as_mut_ptr().add(qi * NB + j), a[0]);
                _mm512_storeu_ps(out.as_mut_ptr().add(qi * NB + j + 16), a[1]);
            }
            masks[qi * NB / 16 + j / 16] = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a[0], t);
            masks[qi * NB / 16 + j / 16 + 1] = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a[1], t);
        }
        j += 32;
    }
}

/// The AVX2+FMA twin of [`tile_scores_avx512`] (tiles of 4 queries × 16 items).
///
/// # Safety
/// The CPU must support AVX2 and FMA; same shapes as [`tile_scores_avx512`].
#[target_feature(enable = "avx2,fma")]
pub unsafe fn tile_scores_avx2(it: &[f32], dim: usize, qtt: &[f32], thr: &[f32; QT], out: &mut [f32], masks: &mut [u16]) {
    debug_assert!(it.len() >= dim * NB && qtt.len() >= dim * QT && out.len() >= QT * NB && masks.len() >= QT * NB / 16);
    let ip = it.as_ptr();
    let qp = qtt.as_ptr();
    for q0 in (0..QT).step_by(4) {
        let mut j = 0;
        while j < NB {
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            for d in 0..dim {
                // SAFETY: d < dim and j + 16 <= NB, so d * NB + j + 16 <= it.len(), and
                // d * QT + q0 + qi < dim * QT <= qtt.len().
                unsafe {
                    let a0 = _mm256_loadu_ps(ip.add(d * NB + j));
                    let a1 = _mm256_loadu_ps(ip.add(d * NB + j + 8));
                    for (qi, a) in acc.iter_mut().enumerate() {
                        let w = _mm256_set1_ps(*qp.add(d * QT + q0 + qi));
                        a[0] = _mm256_fmadd_ps(w, a0, a[0]);
                        a[1] = _mm256_fmadd_ps(w, a1, a[1]);
                    }
                }
            }
            for (qi, a) in acc.iter().enumerate() {
                let q = q0 + qi;
                let t = _mm256_set1_ps(thr[q]);
                // SAFETY: q * NB + j + 16 <= QT * NB <= out.len().
                unsafe {
                    _mm256_storeu_ps(out.as_mut_ptr().add(q * NB + j), a[0]);
                    _mm256_storeu_ps(out.as_mut_ptr().add(q * NB + j + 8), a[1]);
                }
                let m0 = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(a[0], t)) as u16;
                let m1 = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(a[1], t)) as u16;
                masks[q * NB / 16 + j / 16] = m0 | (m1 << 8);
            }
            j += 16;
        }
    }
}

/// Approximate scores of the `out.len() / 16` quantised blocks at the start of `codes` (see
/// `super::quant` for the layout): `out[16 b + r] = (Σ bytes · query codes − offset) ·
/// scales[16 b + r] · qscale`, the bytes × query products summed by `vpdpbusd` in 16 lanes;
/// `masks[b]` bit `r` is set when that score is above `thr`.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 VNNI; `out.len()` is a multiple of 16,
/// `codes.len() >= out.len() / 16 * groups * 64`, `scales.len() >= out.len()`,
/// `packed.len() == groups`, `masks.len() >= out.len() / 16`.
#[target_feature(enable = "avx512f,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn block_scores_vnni(codes: &[u8], scales: &[f32], groups: usize, packed: &[i32], qscale: f32, offset: i32, thr: f32, out: &mut [f32], masks: &mut [u16]) {
    let off = _mm512_set1_epi32(offset);
    let tv = _mm512_set1_ps(thr);
    let qs = _mm512_set1_ps(qscale);
    for (b, mask) in masks.iter_mut().enumerate().take(out.len() / 16) {
        let base = b * groups * 64;
        let mut acc = [_mm512_setzero_si512(); 4];
        let mut g = 0;
        while g + 4 <= groups {
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: g + j < groups, so bytes base + (g+j)*64 .. +64 lie inside block b,
                // which `codes` holds; loadu has no alignment requirement.
                unsafe {
                    let x = _mm512_loadu_si512(codes.as_ptr().add(base + (g + j) * 64) as *const __m512i);
                    *a = _mm512_dpbusd_epi32(*a, x, _mm512_set1_epi32(packed[g + j]));
                }
            }
            g += 4;
        }
        while g < groups {
            // SAFETY: g < groups: 64 bytes inside block b.
            unsafe {
                let x = _mm512_loadu_si512(codes.as_ptr().add(base + g * 64) as *const __m512i);
                acc[0] = _mm512_dpbusd_epi32(acc[0], x, _mm512_set1_epi32(packed[g]));
            }
            g += 1;
        }
        let (acc0, acc1) = (_mm512_add_epi32(acc[0], acc[1]), _mm512_add_epi32(acc[2], acc[3]));
        let acc = _mm512_sub_epi32(_mm512_add_epi32(acc0, acc1), off);
        // SAFETY: 16 b + 16 <= out.len() <= scales.len().
        unsafe {
            let sc = _mm512_loadu_ps(scales.as_ptr().add(b * 16));
            let f = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), sc), qs);
            _mm512_storeu_ps(out.as_mut_ptr().add(b * 16), f);
            *mask = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(f, tv);
        }
    }
}

/// The AVX2 twin of [`block_scores_vnni`]: bytes widened to i16, `vpmaddwd` with the query
/// codes, pair sums added at the end. Same integers, same results.
///
/// # Safety
/// The CPU must support AVX2; same shapes as [`block_scores_vnni`].
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn block_scores_avx2(codes: &[u8], scales: &[f32], groups: usize, packed: &[i32], qscale: f32, offset: i32, thr: f32, out: &mut [f32], masks: &mut [u16]) {
    for b in 0..out.len() / 16 {
        let base = b * groups * 64;
        let mut acc = [_mm256_setzero_si256(); 4];
        for (g, &p) in packed.iter().enumerate().take(groups) {
            let qb = p.to_le_bytes();
            let (q0, q1, q2, q3) = (qb[0] as i8 as i16, qb[1] as i8 as i16, qb[2] as i8 as i16, qb[3] as i8 as i16);
            let qv = _mm256_setr_epi16(q0, q1, q2, q3, q0, q1, q2, q3, q0, q1, q2, q3, q0, q1, q2, q3);
            for (c, a) in acc.iter_mut().enumerate() {
                // SAFETY: base + g*64 + c*16 + 16 <= base + groups*64, inside block b of `codes`.
                unsafe {
                    let x = _mm256_cvtepu8_epi16(_mm_loadu_si128(codes.as_ptr().add(base + g * 64 + c * 16) as *const __m128i));
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(x, qv));
                }
            }
        }
        let mut v = [0i32; 32];
        for (c, a) in acc.iter().enumerate() {
            // SAFETY: c * 8 + 8 <= 32 = v.len().
            unsafe { _mm256_storeu_si256(v.as_mut_ptr().add(c * 8) as *mut __m256i, *a) };
        }
        let mut m = 0u16;
        for r in 0..16 {
            let f = (v[2 * r] + v[2 * r + 1] - offset) as f32 * scales[b * 16 + r] * qscale;
            out[b * 16 + r] = f;
            m |= ((f > thr) as u16) << r;
        }
        masks[b] = m;
    }
}
