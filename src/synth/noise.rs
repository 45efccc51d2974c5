//! Small seeded randomness for the phantoms: a sequential generator for the per-case shape
//! parameters (xoshiro256** seeded through splitmix64) and stateless hashes for everything drawn
//! per voxel (noise, texture), so that rendering in parallel gives the same bytes in any order.

/// SplitMix64's mixer (`crate::rng`), used to seed xoshiro and to hash voxel indices.
pub use crate::rng::mix64 as splitmix64;
use crate::rng::{Xoshiro256, GOLDEN};

/// Mixes several words into one well-distributed key (order matters).
pub fn hash_words(words: &[u64]) -> u64 {
    words.iter().fold(0x243F_6A88_85A3_08D3, |h, &w| splitmix64(h ^ w))
}

use crate::rng::unit_f64;

/// xoshiro256** (`crate::rng`): the sequential generator behind every per-case parameter.
#[derive(Clone, Debug)]
pub struct Rng(Xoshiro256);

impl Rng {
    /// A generator whose whole stream is fixed by `seed`. The state is the SplitMix64 stream
    /// from `seed + GOLDEN` (one step further than `train::rng`'s), as the phantoms were always
    /// seeded: the phantom bytes do not change.
    pub fn new(seed: u64) -> Self {
        Rng(Xoshiro256::seeded(seed.wrapping_add(GOLDEN)))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in `[-a, a)`.
    pub fn sym(&mut self, a: f64) -> f64 {
        self.uniform(-a, a)
    }
}

/// A standard normal value that depends only on `(key, index)`: Box-Muller on two hashes.
pub fn gauss_at(key: u64, index: u64) -> f64 {
    let h1 = splitmix64(key ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let h2 = splitmix64(h1 ^ 0x5851_F42D_4C95_7F2D);
    // 1 - u keeps the logarithm's argument in (0, 1].
    let u1 = 1.0 - unit_f64(h1);
    let u2 = unit_f64(h2);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Smooth lattice value noise in `[-1, 1]`, defined in millimetres so the trabecular texture
/// looks the same at every voxel size.
#[derive(Clone, Copy, Debug)]
pub struct ValueNoise {
    key: u64,
    /// Lattice period in millimetres.
    cell_mm: f64,
}

impl ValueNoise {
    pub fn new(key: u64, cell_mm: f64) -> Self {
        ValueNoise { key, cell_mm }
    }

    fn lattice(&self, i: i64, j: i64, k: i64) -> f64 {
        // One mixing round over a linear combination of the coordinates: enough for texture.
        let h = splitmix64(
            self.key
                ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
                ^ (k as u64).wrapping_mul(0x1656_67B1_9E37_79F9),
        );
        2.0 * unit_f64(h) - 1.0
    }

    /// Trilinear interpolation of lattice values with a smoothstep fade.
    pub fn sample(&self, p: [f64; 3]) -> f64 {
        let q = [p[0] / self.cell_mm, p[1] / self.cell_mm, p[2] / self.cell_mm];
        let base = [q[0].floor(), q[1].floor(), q[2].floor()];
        let f = [q[0] - base[0], q[1] - base[1], q[2] - base[2]];
        let w = f.map(|t| t * t * (3.0 - 2.0 * t));
        let b = base.map(|v| v as i64);
        let mut acc = 0.0;
        for corner in 0..8 {
            let (di, dj, dk) = (corner >> 2 & 1, corner >> 1 & 1, corner & 1);
            let weight = (if di == 1 { w[0] } else { 1.0 - w[0] })
                * (if dj == 1 { w[1] } else { 1.0 - w[1] })
                * (if dk == 1 { w[2] } else { 1.0 - w[2] });
            acc += weight * self.lattice(b[0] + di, b[1] + dj, b[2] + dk);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_uniform() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let mut c = Rng::new(8);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(xs, (0..4).map(|_| c.next_u64()).collect::<Vec<_>>());
        let mean: f64 = (0..10_000).map(|_| a.unit()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn gauss_has_unit_variance() {
        let n = 20_000;
        let v: Vec<f64> = (0..n).map(|i| gauss_at(3, i)).collect();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
    }

    #[test]
    fn value_noise_is_bounded_and_continuous() {
        let n = ValueNoise::new(1, 2.0);
        for i in 0..200 {
            let p = [i as f64 * 0.37, i as f64 * 0.11, -(i as f64) * 0.23];
            let v = n.sample(p);
            assert!((-1.0..=1.0).contains(&v));
            let v2 = n.sample([p[0] + 1e-4, p[1], p[2]]);
            assert!((v - v2).abs() < 1e-2);
        }
    }
}
