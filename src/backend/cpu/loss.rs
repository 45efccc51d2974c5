//! Loss kernels over `(rows, c)` class scores with one class id per row. The cross-entropies
//! skip a row whose id is not in `0..c` (an ignored voxel: no loss, no weight, no gradient).
//!
//! Sums run in f64 per block of rows and are combined with rayon; the gradients are per-row maps.

use rayon::prelude::*;

use super::elementwise::{add_f64, for_rows_mut, PAR_MIN};

/// Probabilities below this are clamped in `log` and `1/p` so that a vanishing probability gives
/// a large finite loss instead of `inf`/`NaN` (PyTorch would return `inf`). It never binds for
/// probabilities a float32 softmax produces short of an exact underflow to 0.
pub const P_FLOOR: f32 = 1e-30;

/// Sums `f(row, ids[row], values of row)` (a vector of `len` terms) over all rows.
fn sum_rows(
    x: &[f32],
    ids: &[u32],
    c: usize,
    len: usize,
    f: impl Fn(usize, &[f32], &mut [f64]) + Sync,
) -> Vec<f64> {
    let block = (PAR_MIN / c.max(1)).max(1);
    let run = |b0: usize, b1: usize| {
        let mut acc = vec![0.0f64; len];
        for r in b0..b1 {
            f(ids[r] as usize, &x[r * c..(r + 1) * c], &mut acc);
        }
        acc
    };
    let rows = ids.len();
    if rows * c < PAR_MIN {
        return run(0, rows);
    }
    (0..rows.div_ceil(block))
        .into_par_iter()
        .map(|b| run(b * block, ((b + 1) * block).min(rows)))
        .collect::<Vec<_>>()
        .into_iter()
        .fold(vec![0.0; len], add_f64)
}

/// Weighted cross-entropy on logits: `(sum_r w[t_r] * -log_softmax(x_r)[t_r], sum_r w[t_r])`.
pub fn ce_fwd(x: &[f32], ids: &[u32], c: usize, w: &[f32]) -> (f64, f64) {
    let s = sum_rows(x, ids, c, 2, |t, row, acc| {
        if t >= c {
            return;
        }
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let lse = f64::from(m) + row.iter().map(|&v| f64::from(v - m).exp()).sum::<f64>().ln();
        acc[0] += f64::from(w[t]) * (lse - f64::from(row[t]));
        acc[1] += f64::from(w[t]);
    });
    (s[0], s[1])
}

/// Gradient of the weighted-mean cross-entropy: `scale * w[t] * (softmax(x) - onehot(t))` with
/// `scale = upstream / sum w`.
pub fn ce_bwd(x: &[f32], ids: &[u32], c: usize, w: &[f32], scale: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    for_rows_mut(&mut out, c, |r0, block| {
        for (r, o) in block.chunks_exact_mut(c).enumerate() {
            let row = &x[(r0 + r) * c..(r0 + r + 1) * c];
            let t = ids[r0 + r] as usize;
            if t >= c {
                continue;
            }
            let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut sum = 0.0f32;
            for (oi, &v) in o.iter_mut().zip(row) {
                *oi = (v - m).exp();
                sum += *oi;
            }
            let k = scale * w[t];
            for oi in o.iter_mut() {
                *oi *= k / sum;
            }
            o[t] -= k;
        }
    });
    out
}

/// Weighted NLL on probabilities: `(sum_r w[t_r] * -log p_r[t_r], sum_r w[t_r])`.
pub fn nll_probs_fwd(p: &[f32], ids: &[u32], c: usize, w: &[f32]) -> (f64, f64) {
    let s = sum_rows(p, ids, c, 2, |t, row, acc| {
        if t >= c {
            return;
        }
        acc[0] -= f64::from(w[t]) * f64::from(row[t].max(P_FLOOR)).ln();
        acc[1] += f64::from(w[t]);
    });
    (s[0], s[1])
}

/// Gradient of the weighted-mean NLL on probabilities: `-scale * w[t] / p[t]` at the target,
/// zero elsewhere.
pub fn nll_probs_bwd(p: &[f32], ids: &[u32], c: usize, w: &[f32], scale: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; p.len()];
    for_rows_mut(&mut out, c, |r0, block| {
        for (r, o) in block.chunks_exact_mut(c).enumerate() {
            let t = ids[r0 + r] as usize;
            if t < c {
                o[t] = -scale * w[t] / p[(r0 + r) * c + t].max(P_FLOOR);
            }
        }
    });
    out
}

/// Dice sums of the foreground channel 1: `(sum p1 * g, sum p1, sum g)` with `g = [t == 1]`.
pub fn soft_dice_sums(p: &[f32], ids: &[u32], c: usize) -> [f64; 3] {
    let s = sum_rows(p, ids, c, 3, |t, row, acc| {
        let g = f64::from(u8::from(t == 1));
        acc[0] += f64::from(row[1]) * g;
        acc[1] += f64::from(row[1]);
        acc[2] += g;
    });
    [s[0], s[1], s[2]]
}

/// Hard Dice sums from the arg-max of each row (first maximum on ties, as `torch.max`):
/// `(sum r * g, sum r, sum g)` with `r = [argmax == 1]`, `g = [t == 1]`.
pub fn hard_dice_sums(p: &[f32], ids: &[u32], c: usize) -> [f64; 3] {
    let s = sum_rows(p, ids, c, 3, |t, row, acc| {
        let mut best = 0;
        for (i, &v) in row.iter().enumerate() {
            if v > row[best] {
                best = i;
            }
        }
        let r = f64::from(u8::from(best == 1));
        let g = f64::from(u8::from(t == 1));
        acc[0] += r * g;
        acc[1] += r;
        acc[2] += g;
    });
    [s[0], s[1], s[2]]
}

/// A per-row gradient on channels 0 and 1 only: `out[r, 0] = f(r)`, `out[r, 1] = h(r)`, with
/// `f`, `h` given the target-is-foreground flag and `p[r, 1]`.
pub fn two_channel_grad(
    p: &[f32],
    ids: &[u32],
    c: usize,
    f: impl Fn(f32, f32) -> (f32, f32) + Sync,
) -> Vec<f32> {
    let mut out = vec![0.0f32; p.len()];
    for_rows_mut(&mut out, c, |r0, block| {
        for (r, o) in block.chunks_exact_mut(c).enumerate() {
            let g = f32::from(u8::from(ids[r0 + r] == 1));
            let (a, b) = f(g, p[(r0 + r) * c + 1]);
            o[0] = a;
            o[1] = b;
        }
    });
    out
}
