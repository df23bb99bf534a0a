//! The scalar reference kernels: plain loops, the definition every SIMD path is tested against.

pub fn dot_scores(items: &[f32], dim: usize, q: &[f32], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(items.chunks_exact(dim)) {
        let mut acc = [0f32; 4];
        let mut i = 0;
        while i + 4 <= dim {
            for l in 0..4 {
                acc[l] += row[i + l] * q[i + l];
            }
            i += 4;
        }
        let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        while i < dim {
            s += row[i] * q[i];
            i += 1;
        }
        *o = s;
    }
}

use super::tile::{NB, QT};

/// The batched tile (see `x86::tile_scores_avx512` for the contract), in plain loops.
pub fn tile_scores(it: &[f32], dim: usize, qtt: &[f32], thr: &[f32; QT], out: &mut [f32], masks: &mut [u16]) {
    for qi in 0..QT {
        let o = &mut out[qi * NB..(qi + 1) * NB];
        o.fill(0.0);
        for d in 0..dim {
            let w = qtt[d * QT + qi];
            for (x, &v) in o.iter_mut().zip(&it[d * NB..(d + 1) * NB]) {
                *x += w * v;
            }
        }
        for (g, mk) in masks[qi * NB / 16..(qi + 1) * NB / 16].iter_mut().enumerate() {
            let mut m = 0u16;
            for (l, &s) in o[g * 16..(g + 1) * 16].iter().enumerate() {
                if s > thr[qi] {
                    m |= 1 << l;
                }
            }
            *mk = m;
        }
    }
}

