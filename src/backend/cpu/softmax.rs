//! Softmax and log-softmax over the last (channel) axis: rows of `c` contiguous values, each
//! handled independently, so the work splits by blocks of rows.

use super::elementwise::for_rows_mut;

/// Softmax of every row of `c` values (max subtracted first, so large logits do not overflow).
pub fn softmax_fwd(x: &[f32], c: usize) -> Vec<f32> {
    let _t = super::profile::scope(|| format!("softmax_fwd {}x{c}", x.len() / c.max(1)));
    let mut out = vec![0.0; x.len()];
    for_rows_mut(&mut out, c, |r0, rows| {
        for (r, o) in rows.chunks_mut(c).enumerate() {
            let xs = &x[(r0 + r) * c..(r0 + r + 1) * c];
            let m = xs.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut sum = 0.0f32;
            for (oi, &xi) in o.iter_mut().zip(xs) {
                *oi = (xi - m).exp();
                sum += *oi;
            }
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|v| *v *= inv);
        }
    });
    out
}

/// Log-softmax of every row: `x - max - log(sum(exp(x - max)))`.
pub fn log_softmax_fwd(x: &[f32], c: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for_rows_mut(&mut out, c, |r0, rows| {
        for (r, o) in rows.chunks_mut(c).enumerate() {
            let xs = &x[(r0 + r) * c..(r0 + r + 1) * c];
            let m = xs.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let lse = m + xs.iter().map(|&v| (v - m).exp()).sum::<f32>().ln();
            for (oi, &xi) in o.iter_mut().zip(xs) {
                *oi = xi - lse;
            }
        }
    });
    out
}

/// Softmax backward from its output `y`: `dx = y * (g - sum(g * y))` per row.
pub fn softmax_bwd(y: &[f32], g: &[f32], c: usize) -> Vec<f32> {
    let mut out = vec![0.0; y.len()];
    for_rows_mut(&mut out, c, |r0, rows| {
        for (r, o) in rows.chunks_mut(c).enumerate() {
            let span = (r0 + r) * c..(r0 + r + 1) * c;
            let (ys, gs) = (&y[span.clone()], &g[span]);
            let dot: f32 = ys.iter().zip(gs).map(|(a, b)| a * b).sum();
            for ((oi, &yi), &gi) in o.iter_mut().zip(ys).zip(gs) {
                *oi = yi * (gi - dot);
            }
        }
    });
    out
}

/// Log-softmax backward from its output `y`: `dx = g - exp(y) * sum(g)` per row.
pub fn log_softmax_bwd(y: &[f32], g: &[f32], c: usize) -> Vec<f32> {
    let mut out = vec![0.0; y.len()];
    for_rows_mut(&mut out, c, |r0, rows| {
        for (r, o) in rows.chunks_mut(c).enumerate() {
            let span = (r0 + r) * c..(r0 + r + 1) * c;
            let (ys, gs) = (&y[span.clone()], &g[span]);
            let sum: f32 = gs.iter().sum();
            for ((oi, &yi), &gi) in o.iter_mut().zip(ys).zip(gs) {
                *oi = gi - yi.exp() * sum;
            }
        }
    });
    out
}
