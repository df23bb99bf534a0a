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

/// `Σ_d row[d] · q[d]` spread over 16 lanes (not yet reduced), summed in the order of
/// [`dot_scores_avx512`] (two accumulators, the masked tail into the second), so that the
/// reduction below gives the very same float.
///
/// # Safety
/// AVX-512F; `row` and `q` point to at least `full + rem` readable floats, where `rem` is
/// the number of bits set in `tail` (the low bits).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn lanes_dot_avx512(row: *const f32, q: *const f32, full: usize, tail: __mmask16) -> __m512 {
    let mut acc0 = _mm512_setzero_ps();
    let mut acc1 = _mm512_setzero_ps();
    let mut i = 0;
    while i + 32 <= full {
        // SAFETY: i + 32 <= full, inside both vectors (the caller's contract).
        unsafe {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(row.add(i)), _mm512_loadu_ps(q.add(i)), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(row.add(i + 16)), _mm512_loadu_ps(q.add(i + 16)), acc1);
        }
        i += 32;
    }
    while i < full {
        // SAFETY: i + 16 <= full, inside both vectors.
        unsafe { acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(row.add(i)), _mm512_loadu_ps(q.add(i)), acc0) };
        i += 16;
    }
    if tail != 0 {
        // SAFETY: the masked loads touch only lanes full..full + rem, inside both vectors.
        unsafe { acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, row.add(full)), _mm512_maskz_loadu_ps(tail, q.add(full)), acc1) };
    }
    _mm512_add_ps(acc0, acc1)
}

/// Adds pairs of vectors in halves: `a`, `b` → lanes of `a` then lanes of `b`, each summed
/// with its partner lane (`SEL_LO`/`SEL_HI` pick the 128-bit lanes).
#[target_feature(enable = "avx512f")]
#[inline]
fn fold_f32x4<const SEL_LO: i32, const SEL_HI: i32>(a: __m512, b: __m512) -> __m512 {
    _mm512_add_ps(_mm512_shuffle_f32x4::<SEL_LO>(a, b), _mm512_shuffle_f32x4::<SEL_HI>(a, b))
}

#[target_feature(enable = "avx512f")]
#[inline]
fn fold_ps<const SEL_LO: i32, const SEL_HI: i32>(a: __m512, b: __m512) -> __m512 {
    _mm512_add_ps(_mm512_shuffle_ps::<SEL_LO>(a, b), _mm512_shuffle_ps::<SEL_HI>(a, b))
}

/// Blocked single-query scores: for each group `g < out.len() / 16` of 16 rows,
/// `out[16 g + r] = items[(16 g + r) * dim ..][..dim] · q` and `masks[g]` bit `r` set when
/// that score is above `thr`. The 16 row sums are reduced together (a transpose-and-add
/// tree: 15 shuffle pairs for 16 rows instead of a horizontal reduction per row). No
/// software prefetch: measured, prefetching 4 KiB ahead made the scan slower (the hardware
/// streamer already keeps up with this sequential read).
///
/// # Safety
/// The CPU must support AVX-512F; `q.len() == dim >= 1`, `out.len()` is a multiple of 16,
/// `items.len() >= out.len() * dim`, `masks.len() >= out.len() / 16`.
#[target_feature(enable = "avx512f")]
pub unsafe fn scan_block_avx512(items: &[f32], dim: usize, q: &[f32], thr: f32, out: &mut [f32], masks: &mut [u16]) {
    debug_assert!(q.len() == dim && dim >= 1 && out.len() % 16 == 0 && items.len() >= out.len() * dim && masks.len() >= out.len() / 16);
    // Common widths get a copy with the chunk count known, so the row loops unroll and the
    // 16 row sums stay in registers (a runtime count spills them and runs ~25 % slower).
    // SAFETY: each call passes on the caller's contract (AVX-512F, the shapes), and each
    // `FULL` is `dim / 16 * 16` for its arm, or 0.
    unsafe {
        match dim / 16 {
            1 => scan_block_avx512_impl::<16>(items, dim, q, thr, out, masks),
            2 => scan_block_avx512_impl::<32>(items, dim, q, thr, out, masks),
            3 => scan_block_avx512_impl::<48>(items, dim, q, thr, out, masks),
            4 => scan_block_avx512_impl::<64>(items, dim, q, thr, out, masks),
            6 => scan_block_avx512_impl::<96>(items, dim, q, thr, out, masks),
            8 => scan_block_avx512_impl::<128>(items, dim, q, thr, out, masks),
            _ => scan_block_avx512_impl::<0>(items, dim, q, thr, out, masks),
        }
    }
}

/// The body of [`scan_block_avx512`], one copy per width: `FULL` is `dim / 16 * 16` (0: read
/// from `dim` at run time).
///
/// # Safety
/// As [`scan_block_avx512`], and `FULL` is 0 or `dim / 16 * 16`.
#[target_feature(enable = "avx512f")]
unsafe fn scan_block_avx512_impl<const FULL: usize>(items: &[f32], dim: usize, q: &[f32], thr: f32, out: &mut [f32], masks: &mut [u16]) {
    debug_assert!(FULL == 0 || FULL == dim / 16 * 16);
    let full = if FULL == 0 { dim / 16 * 16 } else { FULL };
    let tail: __mmask16 = ((1u32 << (dim - full)) - 1) as __mmask16;
    let tv = _mm512_set1_ps(thr);
    let qp = q.as_ptr();
    let block = 16 * dim;
    for g in 0..out.len() / 16 {
        let base = items.as_ptr().wrapping_add(g * block);
        // Vector i holds row (i % 4) * 4 + i / 4: the tree below then leaves row r in lane r.
        let mut v = [_mm512_setzero_ps(); 16];
        for (i, x) in v.iter_mut().enumerate() {
            let r = (i % 4) * 4 + i / 4;
            // SAFETY: row 16 g + r < out.len() rows, all inside `items`; `q` has `dim` values.
            *x = unsafe { lanes_dot_avx512(base.add(r * dim), qp, full, tail) };
        }
        // 16 → 8 → 4 → 2 → 1 vectors; each step halves the lanes summed per row.
        let mut s = [_mm512_setzero_ps(); 8];
        for i in 0..8 {
            s[i] = fold_f32x4::<0x44, 0xEE>(v[2 * i], v[2 * i + 1]);
        }
        let mut t = [_mm512_setzero_ps(); 4];
        for i in 0..4 {
            t[i] = fold_f32x4::<0x88, 0xDD>(s[2 * i], s[2 * i + 1]);
        }
        let u0 = fold_ps::<0x44, 0xEE>(t[0], t[1]);
        let u1 = fold_ps::<0x44, 0xEE>(t[2], t[3]);
        let sc = fold_ps::<0x88, 0xDD>(u0, u1);
        // SAFETY: 16 g + 16 <= out.len().
        unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(16 * g), sc) };
        masks[g] = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(sc, tv);
    }
}

/// `Σ_d row[d] · q[d]` over the full 8-lane chunks, spread over 8 lanes (not yet reduced),
/// summed in the order of [`dot_scores_avx2`].
///
/// # Safety
/// AVX2+FMA; `row` and `q` point to at least `full` readable floats, `full % 8 == 0`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn lanes_dot_avx2(row: *const f32, q: *const f32, full: usize) -> __m256 {
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= full {
        // SAFETY: i + 16 <= full, inside both vectors.
        unsafe {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(i)), _mm256_loadu_ps(q.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(i + 8)), _mm256_loadu_ps(q.add(i + 8)), acc1);
        }
        i += 16;
    }
    while i < full {
        // SAFETY: i + 8 <= full, inside both vectors.
        unsafe { acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(i)), _mm256_loadu_ps(q.add(i)), acc0) };
        i += 8;
    }
    _mm256_add_ps(acc0, acc1)
}

/// Pairs of 8-lane vectors folded as `_mm256_shuffle_ps` selects (see [`fold_ps`]).
#[target_feature(enable = "avx2")]
#[inline]
fn fold256_ps<const SEL_LO: i32, const SEL_HI: i32>(a: __m256, b: __m256) -> __m256 {
    _mm256_add_ps(_mm256_shuffle_ps::<SEL_LO>(a, b), _mm256_shuffle_ps::<SEL_HI>(a, b))
}

/// The AVX2+FMA twin of [`scan_block_avx512`]: two halves of 8 rows, reduced together by a
/// transpose-and-add tree in the order of [`dot_scores_avx2`]'s horizontal sum, the scalar
/// tail (`dim % 8` values) added after it as there, so every score is the same float.
///
/// # Safety
/// The CPU must support AVX2 and FMA; same shapes as [`scan_block_avx512`].
#[target_feature(enable = "avx2,fma")]
pub unsafe fn scan_block_avx2(items: &[f32], dim: usize, q: &[f32], thr: f32, out: &mut [f32], masks: &mut [u16]) {
    debug_assert!(q.len() == dim && dim >= 1 && out.len() % 16 == 0 && items.len() >= out.len() * dim && masks.len() >= out.len() / 16);
    let full = dim / 8 * 8;
    let tv = _mm256_set1_ps(thr);
    let qp = q.as_ptr();
    for g in 0..out.len() / 16 {
        let base = items.as_ptr().wrapping_add(g * 16 * dim);
        let mut m = 0u16;
        for h in 0..2 {
            // Vector i holds row (i % 2) * 4 + i / 2: the tree then leaves row r in lane r.
            let mut v = [_mm256_setzero_ps(); 8];
            for (i, x) in v.iter_mut().enumerate() {
                let r = 8 * h + (i % 2) * 4 + i / 2;
                // SAFETY: row 16 g + r < out.len() rows, all inside `items`.
                *x = unsafe { lanes_dot_avx2(base.add(r * dim), qp, full) };
            }
            // 8 → 4 (j + j+4), → 2 (j + j+2), → 1 (j + j+1), as dot_scores_avx2 sums.
            let mut p = [_mm256_setzero_ps(); 4];
            for i in 0..4 {
                let (a, b) = (v[2 * i], v[2 * i + 1]);
                p[i] = _mm256_add_ps(_mm256_permute2f128_ps::<0x31>(a, b), _mm256_permute2f128_ps::<0x20>(a, b));
            }
            let q0 = fold256_ps::<0x44, 0xEE>(p[0], p[1]);
            let q1 = fold256_ps::<0x44, 0xEE>(p[2], p[3]);
            let sc = fold256_ps::<0x88, 0xDD>(q0, q1);
            let o = 16 * g + 8 * h;
            // SAFETY: o + 8 <= out.len().
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(o), sc) };
            let sc = if full < dim {
                for (r, s) in out[o..o + 8].iter_mut().enumerate() {
                    let row = &items[(o + r) * dim..(o + r + 1) * dim];
                    for j in full..dim {
                        *s += row[j] * q[j];
                    }
                }
                // SAFETY: o + 8 <= out.len().
                unsafe { _mm256_loadu_ps(out.as_ptr().add(o)) }
            } else {
                sc
            };
            m |= (_mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(sc, tv)) as u16) << (8 * h);
        }
        masks[g] = m;
    }
}
