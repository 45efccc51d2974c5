//! Elementwise kernels and activations, forward and backward, on contiguous f32 slices.
//!
//! Every kernel here is a pure map over elements (or over voxels of `C` contiguous channels), so
//! the only design choice is when to split the work: below [`PAR_MIN`] elements rayon's fork/join
//! costs more than the loop, above it the slices are cut into chunks of at least that size.

use rayon::prelude::*;

/// Elements below which a kernel runs on the calling thread.
pub const PAR_MIN: usize = 1 << 15;

// ---- generic maps -----------------------------------------------------------------------------

/// `out[i] = f(x[i])`.
pub fn map1(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    if x.len() < PAR_MIN {
        x.iter().map(|&a| f(a)).collect()
    } else {
        x.par_iter().with_min_len(PAR_MIN / 4).map(|&a| f(a)).collect()
    }
}

/// `out[i] = f(x[i], y[i])`; the slices have equal length (checked by the caller).
pub fn map2(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    debug_assert_eq!(x.len(), y.len());
    if x.len() < PAR_MIN {
        x.iter().zip(y).map(|(&a, &b)| f(a, b)).collect()
    } else {
        x.par_iter().zip(y).with_min_len(PAR_MIN / 4).map(|(&a, &b)| f(a, b)).collect()
    }
}

/// `out[i] = f(x[i], y[i], z[i])`.
pub fn map3(x: &[f32], y: &[f32], z: &[f32], f: impl Fn(f32, f32, f32) -> f32 + Sync) -> Vec<f32> {
    debug_assert!(x.len() == y.len() && y.len() == z.len());
    if x.len() < PAR_MIN {
        x.iter().zip(y).zip(z).map(|((&a, &b), &c)| f(a, b, c)).collect()
    } else {
        x.par_iter()
            .zip(y)
            .zip(z)
            .with_min_len(PAR_MIN / 4)
            .map(|((&a, &b), &c)| f(a, b, c))
            .collect()
    }
}

/// Runs `f(row_index, out_rows)` over `out` cut into blocks of whole rows of `row` elements,
/// in parallel when `out` is large. `f` gets the index of its first row.
pub fn for_rows_mut(out: &mut [f32], row: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if row == 0 || out.is_empty() {
        return;
    }
    let rows_per_block = (PAR_MIN / row).max(1);
    if out.len() < PAR_MIN {
        f(0, out);
    } else {
        out.par_chunks_mut(rows_per_block * row)
            .enumerate()
            .for_each(|(b, chunk)| f(b * rows_per_block, chunk));
    }
}

// ---- activations ------------------------------------------------------------------------------

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub fn elu(x: f32, alpha: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        alpha * x.exp_m1()
    }
}

/// d elu / dx times `g` (PyTorch: `alpha * exp(x)` for `x <= 0`).
pub fn elu_grad(x: f32, g: f32, alpha: f32) -> f32 {
    if x > 0.0 {
        g
    } else {
        g * alpha * x.exp()
    }
}

// ---- PReLU ------------------------------------------------------------------------------------

/// The slope of every channel: `w` itself, or its one shared value repeated `c` times.
fn slopes(w: &[f32], c: usize) -> Vec<f32> {
    if w.len() == c {
        w.to_vec()
    } else {
        vec![w.first().copied().unwrap_or(0.0); c]
    }
}

/// PReLU with slope `w[ch]`: `w` has `c` entries (per channel) or one (shared).
pub fn prelu_fwd(x: &[f32], w: &[f32], c: usize) -> Vec<f32> {
    let _t = super::profile::scope(|| format!("prelu_fwd {}x{c}", x.len() / c.max(1)));
    let w = slopes(w, c);
    let mut out = vec![0.0; x.len()];
    for_rows_mut(&mut out, c, |r0, rows| {
        let xs = &x[r0 * c..r0 * c + rows.len()];
        for (orow, xrow) in rows.chunks_exact_mut(c).zip(xs.chunks_exact(c)) {
            for ((o, &v), &wc) in orow.iter_mut().zip(xrow).zip(&w) {
                // Branch-free: signs are random in a network, so a branch would mispredict.
                *o = v.max(0.0) + wc * v.min(0.0);
            }
        }
    });
    out
}

/// Gradient of PReLU with respect to `x`.
pub fn prelu_bwd_x(x: &[f32], g: &[f32], w: &[f32], c: usize) -> Vec<f32> {
    let w = slopes(w, c);
    let mut out = vec![0.0; x.len()];
    for_rows_mut(&mut out, c, |r0, rows| {
        let span = r0 * c..r0 * c + rows.len();
        let (xs, gs) = (&x[span.clone()], &g[span]);
        for ((orow, xrow), grow) in
            rows.chunks_exact_mut(c).zip(xs.chunks_exact(c)).zip(gs.chunks_exact(c))
        {
            for (((o, &v), &gv), &wc) in orow.iter_mut().zip(xrow).zip(grow).zip(&w) {
                let pos = f32::from(u8::from(v > 0.0));
                *o = gv * (pos + (1.0 - pos) * wc);
            }
        }
    });
    out
}

/// Gradient of PReLU with respect to its slopes: `sum g * x` over `x <= 0`, per channel (or in
/// total for a shared slope). Accumulated in f64.
pub fn prelu_bwd_w(x: &[f32], g: &[f32], c: usize, shared: bool) -> Vec<f32> {
    let partial = |xs: &[f32], gs: &[f32]| {
        let mut acc = vec![0.0f64; c];
        for (xrow, grow) in xs.chunks_exact(c).zip(gs.chunks_exact(c)) {
            for ((a, &v), &gv) in acc.iter_mut().zip(xrow).zip(grow) {
                if v <= 0.0 {
                    *a += f64::from(v) * f64::from(gv);
                }
            }
        }
        acc
    };
    let sums = if x.len() < PAR_MIN {
        partial(x, g)
    } else {
        let block = (PAR_MIN / c).max(1) * c;
        x.par_chunks(block)
            .zip(g.par_chunks(block))
            .map(|(xs, gs)| partial(xs, gs))
            .collect::<Vec<_>>()
            .into_iter()
            .fold(vec![0.0; c], add_f64)
    };
    if shared {
        vec![sums.iter().sum::<f64>() as f32]
    } else {
        sums.iter().map(|&s| s as f32).collect()
    }
}

/// Elementwise sum of two partial-sum vectors. Parallel reductions collect their per-block
/// partials in block order and fold them with this on one thread, so a sum does not depend on
/// how rayon happened to split the work: results are reproducible run to run.
pub fn add_f64(mut a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    for (p, q) in a.iter_mut().zip(b) {
        *p += q;
    }
    a
}

// ---- gate -------------------------------------------------------------------------------------

/// `out[v, c] = x[v, c] * g[v]` for voxels `v` of `c` channels.
pub fn gate_mul_fwd(x: &[f32], g: &[f32], c: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for_rows_mut(&mut out, c, |r0, rows| {
        for (r, row) in rows.chunks_mut(c).enumerate() {
            let v = r0 + r;
            let gv = g[v];
            for (o, &xv) in row.iter_mut().zip(&x[v * c..(v + 1) * c]) {
                *o = xv * gv;
            }
        }
    });
    out
}

/// Gradient of the gate: `dg[v] = sum_c go[v, c] * x[v, c]`.
pub fn gate_mul_bwd_g(x: &[f32], go: &[f32], c: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len() / c.max(1)];
    for_rows_mut(&mut out, 1, |v0, rows| {
        for (r, o) in rows.iter_mut().enumerate() {
            let v = v0 + r;
            let span = v * c..(v + 1) * c;
            *o = x[span.clone()].iter().zip(&go[span]).map(|(a, b)| a * b).sum();
        }
    });
    out
}
