//! Seeded parameter initialisation in the style of PyTorch's defaults.
//!
//! PyTorch initialises a convolution's weight with `kaiming_uniform_(a = sqrt(5))` and its bias
//! uniformly, both of which reduce to `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`; norms start at weight 1
//! and bias 0, PReLU slopes at 0.25. The same distributions are drawn here from a small seeded
//! generator, so `build_seeded(arch, width, seed)` always gives the same network (the values differ
//! from PyTorch's, whose generator is not reproduced).

use crate::rng::{splitmix64, unit_f32};

/// SplitMix64 (`crate::rng`): tiny, fast, and good enough for initial weights.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    /// Uniform in `[0, 1)` with 24 random bits (every value exactly representable in f32).
    pub fn next_f32(&mut self) -> f32 {
        unit_f32(self.next_u64())
    }

    /// `n` values uniform in `[-bound, bound)`.
    pub fn uniform(&mut self, n: usize, bound: f32) -> Vec<f32> {
        (0..n).map(|_| (2.0 * self.next_f32() - 1.0) * bound).collect()
    }
}

/// Mixes a seed with a site number into an independent seed (for per-layer dropout masks).
pub fn mix(seed: u64, site: u64) -> u64 {
    Rng::new(seed ^ site.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next_u64()
}

/// PyTorch's default bound for a convolution with `fan_in = in_channels * kernel volume`.
pub fn conv_bound(fan_in: usize) -> f32 {
    1.0 / (fan_in.max(1) as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_seeded_and_bounded() {
        let a = Rng::new(7).uniform(1000, 0.5);
        let b = Rng::new(7).uniform(1000, 0.5);
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)));
        let mean: f32 = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert_ne!(mix(1, 0), mix(1, 1));
    }
}
