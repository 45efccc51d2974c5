//! Channel dropout: a multiplier per (sample, channel), applied to every voxel of that channel.

use super::elementwise::for_rows_mut;

/// SplitMix64's mixer, so a mask is a pure function of (seed, index).
use crate::rng::{mix64 as splitmix64, unit_f32};

/// The multiplier of a kept channel: `1 / (1 - p)` (0 when every channel drops).
pub fn keep_scale(p: f32) -> f32 {
    if p < 1.0 {
        1.0 / (1.0 - p)
    } else {
        0.0
    }
}

/// The hash every draw of one seed's mask starts from (the GPU kernel takes it as is).
pub fn mask_base(seed: u64) -> u64 {
    splitmix64(seed)
}

/// One multiplier per (sample, channel): 0 with probability `p`, else `1 / (1 - p)`. The GPU's
/// `channel_dropout_fwd_f32` draws the same values on the device.
pub fn channel_mask(n: usize, c: usize, p: f32, seed: u64) -> Vec<f32> {
    let (keep, base) = (keep_scale(p), mask_base(seed));
    (0..n * c)
        .map(|i| {
            // The top 24 bits give a uniform f32 in [0, 1) exactly.
            let u = unit_f32(splitmix64(base ^ i as u64));
            if u < p {
                0.0
            } else {
                keep
            }
        })
        .collect()
}

/// `out[s, v, ch] = x[s, v, ch] * mask[s * c + ch]` with `per` elements per sample.
pub fn apply_mask(x: &[f32], mask: &[f32], c: usize, per: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for_rows_mut(&mut out, c, |r0, block| {
        for (r, orow) in block.chunks_exact_mut(c).enumerate() {
            let i = (r0 + r) * c;
            let s = i / per.max(1);
            let m = &mask[s * c..(s + 1) * c];
            for ((o, &xv), &mv) in orow.iter_mut().zip(&x[i..i + c]).zip(m) {
                *o = xv * mv;
            }
        }
    });
    out
}
