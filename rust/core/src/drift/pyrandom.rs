//! CPython's `random.Random` for what River's KSWIN uses: seeding from an integer
//! (MT19937 `init_by_array` on the integer's 32-bit words), `getrandbits`, `_randbelow`
//! and `sample(range(n), k)`, draw for draw.

use super::codec::{R, W};
use crate::error::Result;

const N: usize = 624;
const M: usize = 397;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PyRandom {
    mt: Vec<u32>,
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for an integer seed (CPython uses `abs(seed)`).
    pub fn new(seed: i128) -> Self {
        let mut a = seed.unsigned_abs();
        let mut key = Vec::new();
        while a > 0 {
            key.push(a as u32);
            a >>= 32;
        }
        if key.is_empty() {
            key.push(0);
        }
        let mut r = PyRandom { mt: vec![0; N], index: N };
        r.init_by_array(&key);
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            let prev = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        self.index = N;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        let mut k = N.max(key.len());
        while k > 0 {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525)).wrapping_add(key[j]).wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
            k -= 1;
        }
        k = N - 1;
        while k > 0 {
            let prev = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                self.mt[0] = self.mt[N - 1];
                i = 1;
            }
            k -= 1;
        }
        self.mt[0] = 0x8000_0000;
    }

    fn genrand_u32(&mut self) -> u32 {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        if self.index >= N {
            for kk in 0..N {
                let y = (self.mt[kk] & UPPER) | (self.mt[(kk + 1) % N] & LOWER);
                let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
                self.mt[kk] = self.mt[(kk + M) % N] ^ (y >> 1) ^ mag;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `getrandbits(k)` for `k <= 32`.
    fn getrandbits(&mut self, k: u32) -> u32 {
        if k == 0 {
            return 0;
        }
        self.genrand_u32() >> (32 - k)
    }

    /// `_randbelow(n)` for `0 < n < 2^32`.
    fn randbelow(&mut self, n: u64) -> u64 {
        let k = 64 - n.leading_zeros();
        let mut r = self.getrandbits(k) as u64;
        while r >= n {
            r = self.getrandbits(k) as u64;
        }
        r
    }

    /// `sample(range(n), k)` for `0 < k <= n < 2^32`.
    pub fn sample_range(&mut self, n: usize, k: usize, out: &mut Vec<usize>) {
        out.clear();
        let mut setsize = 21usize;
        if k > 5 {
            // 4 ** ceil(log(k * 3, 4)), with math.log(x, base) = log(x) / log(base)
            let e = (((k * 3) as f64).ln() / 4f64.ln()).ceil();
            setsize = setsize.saturating_add(4usize.saturating_pow(e as u32));
        }
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow((n - i) as u64) as usize;
                out.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut selected = hashbrown::HashSet::with_capacity(k);
            for _ in 0..k {
                let mut j = self.randbelow(n as u64) as usize;
                while selected.contains(&j) {
                    j = self.randbelow(n as u64) as usize;
                }
                selected.insert(j);
                out.push(j);
            }
        }
    }

    pub fn write(&self, w: &mut W) {
        for &x in &self.mt {
            w.u32(x);
        }
        w.u64(self.index as u64);
    }

    pub fn read(r: &mut R<'_>) -> Result<Self> {
        let mut mt = Vec::with_capacity(N);
        for _ in 0..N {
            mt.push(r.u32()?);
        }
        let index = r.usize_max(N as u64)?;
        Ok(PyRandom { mt, index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cpython_random() {
        // random.Random(42).getrandbits(32) for the first three draws, and
        // random.Random(42).sample(range(100), 5) / sample(range(1000), 30)[:5] (CPython 3.11).
        let mut r = PyRandom::new(42);
        assert_eq!([r.genrand_u32(), r.genrand_u32(), r.genrand_u32()], [2746317213, 478163327, 107420369]);
        let mut out = Vec::new();
        PyRandom::new(42).sample_range(100, 5, &mut out);
        assert_eq!(out, [81, 14, 3, 94, 35]);
        PyRandom::new(1).sample_range(1000, 30, &mut out);
        assert_eq!(out[..5], [137, 582, 867, 821, 782]);
        PyRandom::new(0).sample_range(70, 30, &mut out);
        assert_eq!(out[..5], [49, 53, 5, 33, 65]);
    }
}
