//! Small seeded randomness for the phantoms: a sequential generator for the per-case shape
//! parameters (xoshiro256** seeded through splitmix64) and stateless hashes for everything drawn
//! per voxel (noise, texture), so that rendering in parallel gives the same bytes in any order.

/// One splitmix64 step: a good 64-bit mixer, used to seed xoshiro and to hash voxel indices.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mixes several words into one well-distributed key (order matters).
pub fn hash_words(words: &[u64]) -> u64 {
    words.iter().fold(0x243F_6A88_85A3_08D3, |h, &w| splitmix64(h ^ w))
}

/// A uniform value in `[0, 1)` from the top 53 bits of a hash.
fn unit_f64(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// xoshiro256**: the sequential generator behind every per-case parameter.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut s = [0u64; 4];
        for w in &mut s {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            *w = splitmix64(x);
        }
        Rng { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let out = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        out
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
