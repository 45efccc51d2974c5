//! Per-channel statistics and affine maps for batch norm and group norm.
//!
//! Both norms reduce over rows of `c` contiguous channels (channels-last): batch norm over every
//! voxel of the batch, group norm over the voxels of one sample (its per-channel sums are then
//! pooled into groups by the caller). So the kernels here work on `rows x c` slices with
//! per-channel parameters, and accumulate in f64 (PyTorch's CPU accumulation type for f32).

use std::ops::Range;

use rayon::prelude::*;

use super::elementwise::{add_f64, for_rows_mut, PAR_MIN};

/// Sums `f(rows)` (each a vector of `len` partial sums) over all `n_rows`, in parallel blocks.
fn reduce_rows(
    n_rows: usize,
    c: usize,
    len: usize,
    f: impl Fn(Range<usize>) -> Vec<f64> + Sync,
) -> Vec<f64> {
    let block = (PAR_MIN / c.max(1)).max(1);
    if n_rows * c < PAR_MIN {
        return f(0..n_rows);
    }
    (0..n_rows.div_ceil(block))
        .into_par_iter()
        .map(|b| f(b * block..((b + 1) * block).min(n_rows)))
        .collect::<Vec<_>>()
        .into_iter()
        .fold(vec![0.0; len], add_f64)
}

/// Per-channel mean and biased variance of `x: (rows, c)`, in two passes for accuracy.
pub fn channel_mean_var(x: &[f32], c: usize) -> (Vec<f64>, Vec<f64>) {
    let rows = x.len() / c;
    let _t = super::profile::scope(|| format!("norm_stats {rows}x{c}"));
    let sums = reduce_rows(rows, c, c, |r| {
        let mut acc = vec![0.0f64; c];
        for row in x[r.start * c..r.end * c].chunks_exact(c) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += f64::from(v);
            }
        }
        acc
    });
    let mean: Vec<f64> = sums.iter().map(|s| s / rows as f64).collect();
    let sq = reduce_rows(rows, c, c, |r| {
        let mut acc = vec![0.0f64; c];
        for row in x[r.start * c..r.end * c].chunks_exact(c) {
            for ((a, &v), m) in acc.iter_mut().zip(row).zip(&mean) {
                let d = f64::from(v) - m;
                *a += d * d;
            }
        }
        acc
    });
    let var = sq.iter().map(|s| s / rows as f64).collect();
    (mean, var)
}

/// `out[r, ch] = (x[r, ch] - shift[ch]) * a[ch] + b[ch]`.
pub fn channel_affine(x: &[f32], c: usize, shift: &[f32], a: &[f32], b: &[f32]) -> Vec<f32> {
    let _t = super::profile::scope(|| format!("norm_affine {}x{c}", x.len() / c.max(1)));
    let mut out = vec![0.0; x.len()];
    for_rows_mut(&mut out, c, |r0, rows| {
        let xs = &x[r0 * c..r0 * c + rows.len()];
        for (orow, xrow) in rows.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
            for ch in 0..c {
                orow[ch] = (xrow[ch] - shift[ch]) * a[ch] + b[ch];
            }
        }
    });
    out
}

/// Per-channel `(sum g, sum g * xhat)` with `xhat = (x - mean) * invstd`, for norm backward.
pub fn channel_grad_sums(
    x: &[f32],
    g: &[f32],
    c: usize,
    mean: &[f32],
    invstd: &[f32],
) -> (Vec<f64>, Vec<f64>) {
    let rows = x.len() / c;
    let both = reduce_rows(rows, c, 2 * c, |r| {
        let mut acc = vec![0.0f64; 2 * c];
        let span = r.start * c..r.end * c;
        for (xrow, grow) in x[span.clone()].chunks_exact(c).zip(g[span].chunks_exact(c)) {
            for ch in 0..c {
                let xhat = (xrow[ch] - mean[ch]) * invstd[ch];
                acc[ch] += f64::from(grow[ch]);
                acc[c + ch] += f64::from(grow[ch]) * f64::from(xhat);
            }
        }
        acc
    });
    (both[..c].to_vec(), both[c..].to_vec())
}

/// Norm backward for `x`: `dx = k1 * g + k2 * xhat + k3` per channel, `xhat` as above.
pub struct BwdCoef<'a> {
    pub mean: &'a [f32],
    pub invstd: &'a [f32],
    pub k1: &'a [f32],
    pub k2: &'a [f32],
    pub k3: &'a [f32],
}

pub fn channel_bwd(x: &[f32], g: &[f32], c: usize, k: &BwdCoef<'_>) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for_rows_mut(&mut out, c, |r0, rows| {
        let span = r0 * c..r0 * c + rows.len();
        let (xs, gs) = (&x[span.clone()], &g[span]);
        for ((orow, xrow), grow) in
            rows.chunks_exact_mut(c).zip(xs.chunks_exact(c)).zip(gs.chunks_exact(c))
        {
            for ch in 0..c {
                let xhat = (xrow[ch] - k.mean[ch]) * k.invstd[ch];
                orow[ch] = k.k1[ch] * grow[ch] + k.k2[ch] * xhat + k.k3[ch];
            }
        }
    });
    out
}
