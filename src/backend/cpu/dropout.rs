//! Channel dropout: a multiplier per (sample, channel), applied to every voxel of that channel.

use super::elementwise::for_rows_mut;

/// SplitMix64's mixer, so a mask is a pure function of (seed, index).
use crate::rng::{mix64 as splitmix64, unit_f32};

/// One multiplier per (sample, channel): 0 with probability `p`, else `1 / (1 - p)`.
pub fn channel_mask(n: usize, c: usize, p: f32, seed: u64) -> Vec<f32> {
    let keep = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    let base = splitmix64(seed);
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

/// The `(N, C)` dropout mask repeated over the `per / C` voxels of each sample: the elementwise
/// factor that [`apply_mask`] applies (what a GPU multiplies by).
pub fn expand_mask(mask: &[f32], n: usize, c: usize, per: usize) -> Vec<f32> {
    let mut full = Vec::with_capacity(n * per);
    for row in mask.chunks(c.max(1)).take(n) {
        for _ in 0..per.checked_div(c).unwrap_or(0) {
            full.extend_from_slice(row);
        }
    }
    full
}

#[cfg(test)]
mod expand_tests {
    use super::*;

    #[test]
    fn expanded_mask_is_what_apply_mask_multiplies_by() {
        let (n, c, per) = (2, 3, 12);
        let x: Vec<f32> = (0..n * per).map(|i| i as f32 + 1.0).collect();
        let mask = channel_mask(n, c, 0.5, 9);
        let full = expand_mask(&mask, n, c, per);
        let prod: Vec<f32> = x.iter().zip(&full).map(|(a, b)| a * b).collect();
        assert_eq!(prod, apply_mask(&x, &mask, c, per));
    }
}
