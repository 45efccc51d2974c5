//! Launchers for `kernels/conv_transpose3d.cu`: transposed 3-D convolution (no padding, as the
//! up path of V-Net / U-Net uses it), forward, backward-input and backward-weight, bf16 tensor
//! cores or f32. Same semantics as `crate::ops::conv_transpose3d`; the weight is in the engine
//! layout `(K_out, kd, kh, kw, C_in)`.

use super::conv3d::{gemm_grid, run_gemm, split_k, ConvParams, TILE_M, TILE_N};
use super::launch::{int, kernel_name, Pass, Precision};
use super::{alloc, common_gpu, f32_slice, wrap, zeros};
use crate::tensor::Tensor;
use crate::{Error, Result};

const STEM: &str = "conv_transpose3d";
const OP: &str = "conv_transpose3d";

/// Geometry of `conv_transpose3d(x, w, stride)`: output `OD = (D - 1) stride + kd`.
///
/// # Errors
/// [`Error::Shape`] / [`Error::Arg`] for ranks, channel mismatch or a zero stride or kernel.
pub fn conv_transpose3d_params(x: &[usize], w: &[usize], stride: usize) -> Result<ConvParams> {
    let [n, d, h, wd, c]: [usize; 5] =
        x.try_into().map_err(|_| Error::shape(OP, "x (N, D, H, W, C_in)", x))?;
    let [k, kd, kh, kw, wc]: [usize; 5] =
        w.try_into().map_err(|_| Error::shape(OP, "w (K_out, kd, kh, kw, C_in)", w))?;
    if wc != c {
        return Err(Error::shape(OP, format!("w with C_in = {c}"), w));
    }
    if stride == 0 || kd == 0 || kh == 0 || kw == 0 || d == 0 || h == 0 || wd == 0 {
        return Err(Error::arg(OP, "stride, kernel and input extents must be at least 1"));
    }
    let out = |len: usize, kk: usize| (len - 1) * stride + kk;
    let i = |v: usize| int(OP, v);
    Ok(ConvParams {
        n: i(n)?,
        d: i(d)?,
        h: i(h)?,
        w: i(wd)?,
        c: i(c)?,
        od: i(out(d, kd))?,
        oh: i(out(h, kh))?,
        ow: i(out(wd, kw))?,
        k: i(k)?,
        kd: i(kd)?,
        kh: i(kh)?,
        kw: i(kw)?,
        stride: i(stride)?,
        pad: 0,
        split_k: 1,
        flags: 0,
    })
}

fn out_dims(p: &ConvParams) -> [usize; 5] {
    [p.n as usize, p.od as usize, p.oh as usize, p.ow as usize, p.k as usize]
}

/// Transposed 3-D convolution, channels-last.
///
/// # Shapes
/// `x (N, D, H, W, C_in)`, `w (K_out, kd, kh, kw, C_in)`, `b (K_out)`; output
/// `(N, (D-1) stride + kd, ..., K_out)`.
pub fn conv_transpose3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    prec: Precision,
) -> Result<Tensor> {
    let p = conv_transpose3d_params(x.dims(), w.dims(), stride)?;
    let mut all = vec![x, w];
    if let Some(b) = b {
        if b.numel() != p.k as usize {
            return Err(Error::shape(OP, format!("bias ({})", p.k), b.dims()));
        }
        all.push(b);
    }
    let gpu = common_gpu(OP, &all)?;
    let sb = b.map(|b| f32_slice(OP, b)).transpose()?;
    let (sx, sw) = (f32_slice(OP, x)?, f32_slice(OP, w)?);
    let mut out = alloc(&gpu, p.out_voxels() * p.k as usize)?;
    if p.kd == p.stride && p.kh == p.stride && p.kw == p.stride {
        // kernel == stride: every output voxel gets exactly one tap; one dense GEMM per tap.
        let (m, n, taps) = (p.in_voxels(), p.k as usize, p.taps());
        let name = kernel_name(OP, Pass::Fwd, Some("tap"), prec.suffix());
        // SAFETY: TCONV_FWD_TAP: a = x (in voxels, C_in), b = w (K, taps, C_in), bias (K), out
        // (N, D * s, H * s, W * s, K): row q and tap t write voxel q * s + t, each voxel exactly
        // once over the taps * rows of the grid (split_k 1), so out is fully overwritten.
        unsafe {
            run_gemm(&gpu, STEM, &name, &p, sx, sw, sb, &mut out, None, gemm_grid(m, n, taps)?)?
        };
        return wrap(&gpu, out, out_dims(&p));
    }
    let (m, n) = (p.out_voxels(), p.k as usize);
    let name = kernel_name(OP, Pass::Fwd, None, prec.suffix());
    // SAFETY: TCONV_FWD: a = x (N, D, H, W, C_in), b = w (K, taps * C_in), bias (K), out (M, K)
    // fully overwritten (split_k 1).
    unsafe { run_gemm(&gpu, STEM, &name, &p, sx, sw, sb, &mut out, None, gemm_grid(m, n, 1)?)? };
    wrap(&gpu, out, out_dims(&p))
}

/// Gradient of [`conv_transpose3d`] w.r.t. `x` (shape `x_dims`).
pub fn conv_transpose3d_backward_input(
    g: &Tensor,
    w: &Tensor,
    x_dims: &[usize],
    stride: usize,
    prec: Precision,
) -> Result<Tensor> {
    let mut p = conv_transpose3d_params(x_dims, w.dims(), stride)?;
    if g.dims() != out_dims(&p) {
        return Err(Error::shape(OP, out_dims(&p), g.dims()));
    }
    let gpu = common_gpu(OP, &[g, w])?;
    let (m, n, r) = (p.in_voxels(), p.c as usize, p.taps() * p.k as usize);
    let split = split_k(&gpu, m.div_ceil(TILE_M) * n.div_ceil(TILE_N), r);
    p.split_k = int(OP, split)?;
    let mut gx = if split > 1 { zeros(&gpu, m * n)? } else { alloc(&gpu, m * n)? };
    let name = kernel_name(OP, Pass::BwdInput, None, prec.suffix());
    // SAFETY: TCONV_BWD_INPUT: a = g (N, OD, OH, OW, K), b = w (K, taps, C_in), gx (in voxels,
    // C_in), zeroed when split, else fully overwritten.
    unsafe {
        run_gemm(
            &gpu,
            STEM,
            &name,
            &p,
            f32_slice(OP, g)?,
            f32_slice(OP, w)?,
            None,
            &mut gx,
            None,
            gemm_grid(m, n, split)?,
        )?
    };
    wrap(&gpu, gx, x_dims)
}

/// Gradient of [`conv_transpose3d`] w.r.t. `w` (shape `w_dims`). One GEMM per kernel tap, all in
/// one launch (taps on grid z, each split over the input voxels).
pub fn conv_transpose3d_backward_weight(
    g: &Tensor,
    x: &Tensor,
    w_dims: &[usize],
    stride: usize,
    prec: Precision,
) -> Result<Tensor> {
    let mut p = conv_transpose3d_params(x.dims(), w_dims, stride)?;
    if g.dims() != out_dims(&p) {
        return Err(Error::shape(OP, out_dims(&p), g.dims()));
    }
    let gpu = common_gpu(OP, &[g, x])?;
    let (m, n, r, taps) = (p.k as usize, p.c as usize, p.in_voxels(), p.taps());
    let split = split_k(&gpu, m.div_ceil(TILE_M) * n.div_ceil(TILE_N) * taps, r);
    p.split_k = int(OP, split)?;
    // Always zeroed: with split 1 each (tap) block still owns disjoint outputs and overwrites,
    // but zeroing keeps the buffer valid whatever the split.
    let mut gw = zeros(&gpu, m * taps * n)?;
    let name = kernel_name(OP, Pass::BwdWeight, None, prec.suffix());
    // SAFETY: TCONV_BWD_WEIGHT: a = g (N, OD, OH, OW, K), b = x (in voxels, C_in), gw
    // (K, taps, C_in) zeroed; grid z = taps * split.
    unsafe {
        run_gemm(
            &gpu,
            STEM,
            &name,
            &p,
            f32_slice(OP, g)?,
            f32_slice(OP, x)?,
            None,
            &mut gw,
            None,
            gemm_grid(m, n, taps * split)?,
        )?
    };
    wrap(&gpu, gw, w_dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size() {
        let p = conv_transpose3d_params(&[1, 7, 9, 4, 32], &[16, 2, 2, 2, 32], 2).unwrap();
        assert_eq!((p.od, p.oh, p.ow, p.k), (14, 18, 8, 16));
        assert!(conv_transpose3d_params(&[1, 7, 9, 4, 32], &[16, 2, 2, 2, 8], 2).is_err());
    }
}
