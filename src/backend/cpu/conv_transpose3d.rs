//! CPU transposed 3-D convolution (no padding), built from the convolution kernels of
//! [`super::conv3d`]: a transposed convolution is the input-gradient of the convolution that maps
//! its output back to its input, so
//!
//! - forward  = `conv3d::bwd_input(x, wc)`,
//! - grad x   = `conv3d::fwd(grad_out, wc)`,
//! - grad w   = `conv3d::bwd_weight(grad_out, x)`, transposed back,
//!
//! with `wc (C_in, kd, kh, kw, K_out)` the engine weight `(K_out, kd, kh, kw, C_in)` with its first
//! and last axes swapped. The V-Net's kernel-2 stride-2 up convolution lands on the
//! non-overlapping path of `bwd_input`: one GEMM per tile and a block copy, no overlap.

use super::conv3d::{self, ConvGeom};
use super::profile;

/// The geometry of the convolution whose input-gradient this transposed convolution is: its input
/// is our output, its output our input. `None` for a zero stride or kernel.
///
/// `x_dims`: `[N, D, H, W, C_in]`; `k_out`: output channels.
pub fn geometry(
    x_dims: [usize; 5],
    k_out: usize,
    kernel: [usize; 3],
    stride: usize,
) -> Option<ConvGeom> {
    let [n, d, h, w, c_in] = x_dims;
    if stride == 0 || kernel.contains(&0) || [d, h, w].contains(&0) {
        return None;
    }
    let out = [0, 1, 2].map(|a| ([d, h, w][a] - 1) * stride + kernel[a]);
    let g = ConvGeom::new(n, out, k_out, c_in, kernel, stride, 0)?;
    (g.output == [d, h, w]).then_some(g)
}

/// Swaps the first and last axes of a `(A, kvol, B)` weight into `(B, kvol, A)`.
pub fn swap_outer_axes(w: &[f32], a: usize, kvol: usize, b: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for i in 0..a {
        for t in 0..kvol {
            for j in 0..b {
                out[(j * kvol + t) * a + i] = w[(i * kvol + t) * b + j];
            }
        }
    }
    out
}

/// Forward transposed convolution; `g` from [`geometry`].
///
/// # Shapes
/// `x (N, D, H, W, C_in)`, `w (K_out, kd, kh, kw, C_in)`, `bias (K_out)` ->
/// `(N, (D-1)*s + kd, (H-1)*s + kh, (W-1)*s + kw, K_out)`.
pub fn fwd(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &ConvGeom) -> Vec<f32> {
    let _t = profile::scope(|| format!("conv_transpose3d_fwd {}", g.label()));
    let wc = swap_outer_axes(w, g.c, g.kvol(), g.k);
    let mut out = conv3d::bwd_input(x, &wc, g);
    if let Some(bias) = bias {
        add_bias(&mut out, bias);
    }
    out
}

/// Gradient of the input: a plain strided convolution of `grad_out`.
pub fn bwd_input(grad_out: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let _t = profile::scope(|| format!("conv_transpose3d_bwd_input {}", g.label()));
    let wc = swap_outer_axes(w, g.c, g.kvol(), g.k);
    conv3d::fwd(grad_out, &wc, None, g)
}

/// Gradient of the weight, in the engine layout `(K_out, kd, kh, kw, C_in)`.
pub fn bwd_weight(x: &[f32], grad_out: &[f32], g: &ConvGeom) -> Vec<f32> {
    let _t = profile::scope(|| format!("conv_transpose3d_bwd_weight {}", g.label()));
    let dwc = conv3d::bwd_weight(grad_out, x, g);
    swap_outer_axes(&dwc, g.k, g.kvol(), g.c)
}

fn add_bias(out: &mut [f32], bias: &[f32]) {
    use rayon::prelude::*;
    let k = bias.len();
    if k == 0 {
        return;
    }
    out.par_chunks_mut(k * 4096).for_each(|chunk| {
        for row in chunk.chunks_exact_mut(k) {
            row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
        }
    });
}
