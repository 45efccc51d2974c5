//! Launchers for `kernels/conv_transpose3d.cu`: transposed 3-D convolution (no padding, as the
//! up path of V-Net / U-Net uses it), forward, backward-input and backward-weight, bf16 tensor
//! cores or f32. Same semantics as `crate::ops::conv_transpose3d`; the weight is in the engine
//! layout `(K_out, kd, kh, kw, C_in)`.

use super::conv3d::{gemm_pass, ConvParams, GemmPass};
use super::launch::{kernel_name, Pass, Precision};
use super::{common_gpu, f32_slice, wrap};
use crate::backend::cpu::conv3d::ConvGeom;
use crate::tensor::Tensor;
use crate::Result;

const STEM: &str = "conv_transpose3d";
const OP: &str = "conv_transpose3d";

/// Transposed 3-D convolution, channels-last; `g` is the geometry of the convolution it
/// transposes (`ops::conv_transpose3d` checks the shapes into it once).
///
/// # Shapes
/// `x (N, D, H, W, C_in)`, `w (K_out, kd, kh, kw, C_in)`, `b (K_out)`; output
/// `(N, (D-1) stride + kd, ..., K_out)`.
pub fn conv_transpose3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    g: &ConvGeom,
    prec: Precision,
) -> Result<Tensor> {
    let p = ConvParams::transposed(g)?;
    let gpu = common_gpu(OP, &[&[x, w], b.as_slice()].concat())?;
    let sb = b.map(|b| f32_slice(OP, b)).transpose()?;
    let (sx, sw) = (f32_slice(OP, x)?, f32_slice(OP, w)?);
    let k = p.k as usize;
    let out_len = p.out_voxels() * k;
    let per_tap = p.kd == p.stride && p.kh == p.stride && p.kw == p.stride;
    let pass = if per_tap {
        // kernel == stride: every output voxel gets exactly one tap; one dense GEMM per tap.
        GemmPass {
            stem: STEM,
            name: kernel_name(OP, Pass::Fwd, Some("tap"), prec.suffix()),
            m: p.in_voxels(),
            n: k,
            taps: p.taps(),
            reduction: 0,
            out_len,
            zero: false,
            bias: sb,
        }
    } else {
        GemmPass {
            stem: STEM,
            name: kernel_name(OP, Pass::Fwd, None, prec.suffix()),
            m: p.out_voxels(),
            n: k,
            taps: 1,
            reduction: 0,
            out_len,
            zero: false,
            bias: sb,
        }
    };
    // SAFETY: TCONV_FWD_TAP: a = x (in voxels, C_in), b = w (K, taps, C_in), bias (K), out
    // (N, D * s, H * s, W * s, K): row q and tap t write voxel q * s + t, each voxel exactly once
    // over the taps * rows of the grid; TCONV_FWD overwrites out (M, K). Split 1 in both.
    let out = unsafe { gemm_pass(&gpu, p, sx, sw, pass)? };
    wrap(&gpu, out, p.out_dims())
}

/// Gradient of [`conv_transpose3d`] w.r.t. `x`: `(N, D, H, W, C_in)`.
pub fn conv_transpose3d_backward_input(
    go: &Tensor,
    w: &Tensor,
    g: &ConvGeom,
    prec: Precision,
) -> Result<Tensor> {
    let p = ConvParams::transposed(g)?;
    let gpu = common_gpu(OP, &[go, w])?;
    let (m, n) = (p.in_voxels(), p.c as usize);
    let pass = GemmPass {
        stem: STEM,
        name: kernel_name(OP, Pass::BwdInput, None, prec.suffix()),
        m,
        n,
        taps: 1,
        reduction: p.taps() * p.k as usize,
        out_len: m * n,
        zero: false,
        bias: None,
    };
    // SAFETY: TCONV_BWD_INPUT: a = g (N, OD, OH, OW, K), b = w (K, taps, C_in), gx (in voxels,
    // C_in), zeroed when split, else fully overwritten.
    let gx = unsafe { gemm_pass(&gpu, p, f32_slice(OP, go)?, f32_slice(OP, w)?, pass)? };
    wrap(&gpu, gx, p.in_dims())
}

/// Gradient of [`conv_transpose3d`] w.r.t. `w`: `(K_out, kd, kh, kw, C_in)`. One GEMM per kernel
/// tap, all in one launch (taps on grid z, each split over the input voxels).
pub fn conv_transpose3d_backward_weight(
    go: &Tensor,
    x: &Tensor,
    g: &ConvGeom,
    prec: Precision,
) -> Result<Tensor> {
    let p = ConvParams::transposed(g)?;
    let gpu = common_gpu(OP, &[go, x])?;
    let (m, n, taps) = (p.k as usize, p.c as usize, p.taps());
    let pass = GemmPass {
        stem: STEM,
        name: kernel_name(OP, Pass::BwdWeight, None, prec.suffix()),
        m,
        n,
        taps,
        reduction: p.in_voxels(),
        out_len: m * taps * n,
        // Each tap's blocks own disjoint outputs, but zeroing keeps the buffer valid whatever
        // the split.
        zero: true,
        bias: None,
    };
    // SAFETY: TCONV_BWD_WEIGHT: a = g (N, OD, OH, OW, K), b = x (in voxels, C_in), gw
    // (K, taps, C_in) zeroed; grid z = taps * split.
    let gw = unsafe { gemm_pass(&gpu, p, f32_slice(OP, go)?, f32_slice(OP, x)?, pass)? };
    wrap(&gpu, gw, p.w_dims())
}
