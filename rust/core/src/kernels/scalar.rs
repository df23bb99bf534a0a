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
