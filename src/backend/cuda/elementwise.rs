//! Launchers for `kernels/elementwise.cu`: fill, add, mul, scale, ReLU, PReLU, ELU, sigmoid,
//! gate multiply and channel concatenation, forward and backward. Same semantics as the CPU ops
//! in `crate::ops` (channels-last; PReLU slopes per channel or one shared).

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::launch::{self, grid_1d, grid_channels, int, kernel_name, long, Pass};
use super::{alloc, common_gpu, f32_slice, gpu, wrap, zeros, Gpu};
use crate::tensor::{Shape, Tensor};
use crate::{Error, Result};

const STEM: &str = "elementwise";

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(Error::shape(op, a.dims(), b.dims()));
    }
    Ok(())
}

/// Channels of a channels-last tensor (its last dim; 1 for a scalar).
fn channels(t: &Tensor) -> usize {
    t.dims().last().copied().unwrap_or(1).max(1)
}

/// Runs `<op>_<pass>_f32(n, [scalar], inputs..., out)`: the shape shared by every pointwise
/// kernel of this file. `scalar` is pushed after `n` when present.
fn pointwise(
    gpu: &Gpu,
    op: &'static str,
    pass: Pass,
    scalar: Option<f32>,
    inputs: &[&CudaSlice<f32>],
    n: usize,
) -> Result<CudaSlice<f32>> {
    let name = kernel_name(op, pass, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let mut out = alloc(gpu, n)?;
    let nn = long(n);
    let s = scalar.unwrap_or(0.0);
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&nn);
        if scalar.is_some() {
            b.arg(&s);
        }
        for i in inputs {
            b.arg(*i);
        }
        b.arg(&mut out);
        // SAFETY: the pointwise kernels take (n, [scalar], inputs..., out) in this order; every
        // input and out hold n elements (callers check equal shapes); the kernel writes all n.
        unsafe { launch::launch(gpu, &name, &mut b, grid_1d(gpu, n))? };
    }
    Ok(out)
}

/// A tensor of `shape` filled with `value` on GPU `ordinal`.
pub fn full(shape: impl Into<Shape>, value: f32, ordinal: usize) -> Result<Tensor> {
    let shape = shape.into();
    let gpu = gpu(ordinal)?;
    let out = pointwise(&gpu, "fill", Pass::Fwd, Some(value), &[], shape.numel())?;
    wrap(&gpu, out, shape)
}

/// Fills `out` with `value` (fill_fwd_f32).
pub(crate) fn fill_slice(gpu: &Gpu, out: &mut CudaSlice<f32>, value: f32) -> Result<()> {
    let name = kernel_name("fill", Pass::Fwd, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let n = out.len();
    let nn = long(n);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(&nn).arg(&value).arg(out);
    // SAFETY: fill_fwd_f32(n, value, out): out holds n floats, all written.
    unsafe { launch::launch(gpu, &name, &mut b, grid_1d(gpu, n)) }
}

fn binary(op: &'static str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape(op, a, b)?;
    let gpu = common_gpu(op, &[a, b])?;
    let ins = [f32_slice(op, a)?, f32_slice(op, b)?];
    let out = pointwise(&gpu, op, Pass::Fwd, None, &ins, a.numel())?;
    wrap(&gpu, out, a.shape())
}

/// `a + b` (equal shapes). Its backward is the identity for both inputs.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary("add", a, b)
}

/// `a * b` elementwise (equal shapes). Backward: `grad_a = mul(g, b)`, `grad_b = mul(g, a)`.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary("mul", a, b)
}

/// `x * s`. Backward: `scale(g, s)`.
pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    let gpu = common_gpu("scale", &[x])?;
    let out = pointwise(&gpu, "scale", Pass::Fwd, Some(s), &[f32_slice("scale", x)?], x.numel())?;
    wrap(&gpu, out, x.shape())
}

/// `max(x, 0)`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    let gpu = common_gpu("relu", &[x])?;
    let out = pointwise(&gpu, "relu", Pass::Fwd, None, &[f32_slice("relu", x)?], x.numel())?;
    wrap(&gpu, out, x.shape())
}

/// Gradient of [`relu`] w.r.t. `x`: `g` where `x > 0`, else 0.
pub fn relu_backward(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    same_shape("relu", x, g)?;
    let gpu = common_gpu("relu", &[x, g])?;
    let ins = [f32_slice("relu", x)?, f32_slice("relu", g)?];
    let out = pointwise(&gpu, "relu", Pass::BwdInput, None, &ins, x.numel())?;
    wrap(&gpu, out, x.shape())
}

/// `elu(x) = x > 0 ? x : alpha (e^x - 1)`.
pub fn elu(x: &Tensor, alpha: f32) -> Result<Tensor> {
    let gpu = common_gpu("elu", &[x])?;
    let out = pointwise(&gpu, "elu", Pass::Fwd, Some(alpha), &[f32_slice("elu", x)?], x.numel())?;
    wrap(&gpu, out, x.shape())
}

/// Gradient of [`elu`] w.r.t. `x`.
pub fn elu_backward(x: &Tensor, g: &Tensor, alpha: f32) -> Result<Tensor> {
    same_shape("elu", x, g)?;
    let gpu = common_gpu("elu", &[x, g])?;
    let ins = [f32_slice("elu", x)?, f32_slice("elu", g)?];
    let out = pointwise(&gpu, "elu", Pass::BwdInput, Some(alpha), &ins, x.numel())?;
    wrap(&gpu, out, x.shape())
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    let gpu = common_gpu("sigmoid", &[x])?;
    let out = pointwise(&gpu, "sigmoid", Pass::Fwd, None, &[f32_slice("sigmoid", x)?], x.numel())?;
    wrap(&gpu, out, x.shape())
}

/// Gradient of [`sigmoid`] from its output `y`: `g y (1 - y)`.
pub fn sigmoid_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    same_shape("sigmoid", y, g)?;
    let gpu = common_gpu("sigmoid", &[y, g])?;
    let ins = [f32_slice("sigmoid", y)?, f32_slice("sigmoid", g)?];
    let out = pointwise(&gpu, "sigmoid", Pass::BwdInput, None, &ins, y.numel())?;
    wrap(&gpu, out, y.shape())
}

fn prelu_check(x: &Tensor, w: &Tensor) -> Result<(usize, usize)> {
    let c = channels(x);
    let nw = w.numel();
    if nw != 1 && nw != c {
        return Err(Error::shape("prelu", format!("weight of 1 or {c} slopes"), w.dims()));
    }
    Ok((c, nw))
}

/// PReLU: `x > 0 ? x : a x` with `a = w[channel]` (`w` of C slopes) or `w[0]` (one slope).
///
/// # Shapes
/// `x (..., C)`, `w (C)` or `(1)`; output like `x`.
pub fn prelu(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (c, nw) = prelu_check(x, w)?;
    let gpu = common_gpu("prelu", &[x, w])?;
    let name = kernel_name("prelu", Pass::Fwd, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let n = x.numel();
    let (nn, ci, nwi) = (long(n), int("prelu", c)?, int("prelu", nw)?);
    let (sx, sw) = (f32_slice("prelu", x)?, f32_slice("prelu", w)?);
    let mut out = alloc(&gpu, n)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&nn).arg(&ci).arg(&nwi).arg(sx).arg(sw).arg(&mut out);
        // SAFETY: prelu_fwd_f32(n, c, nw, x, w, out): x/out hold n, w holds nw (1 or c) and is
        // indexed by i % c only when nw == c; all n outputs are written.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, n))? };
    }
    wrap(&gpu, out, x.shape())
}

/// Gradients of [`prelu`]: `(grad_x, grad_w)`.
pub fn prelu_backward(x: &Tensor, w: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
    same_shape("prelu", x, g)?;
    let (c, nw) = prelu_check(x, w)?;
    let gpu = common_gpu("prelu", &[x, w, g])?;
    let n = x.numel();
    let (nn, ci, nwi) = (long(n), int("prelu", c)?, int("prelu", nw)?);
    let (sx, sw, sg) = (f32_slice("prelu", x)?, f32_slice("prelu", w)?, f32_slice("prelu", g)?);

    let name = kernel_name("prelu", Pass::BwdInput, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let mut gx = alloc(&gpu, n)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&nn).arg(&ci).arg(&nwi).arg(sx).arg(sw).arg(sg).arg(&mut gx);
        // SAFETY: prelu_bwd_input_f32(n, c, nw, x, w, g, gx): as the forward; writes all of gx.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, n))? };
    }

    // One shared slope: view the tensor as (n / 32, 32) so all 32 lanes of the reduction block
    // work, then add the 32 partial sums; as (n, 1) only one lane in 32 would.
    let lanes = if nw == 1 && n.is_multiple_of(32) { 32 } else { nw };
    let name = kernel_name("prelu", Pass::BwdWeight, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let rows = n / lanes;
    let (rows_l, lanes_i) = (long(rows), int("prelu", lanes)?);
    let mut partial = zeros(&gpu, lanes)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&rows_l).arg(&lanes_i).arg(sx).arg(sg).arg(&mut partial);
        // SAFETY: prelu_bwd_weight_f32(rows, lanes, x, g, gw): x and g are viewed as (rows, lanes)
        // with rows * lanes = n; partial holds `lanes` zeros that the blocks accumulate into.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_channels(&gpu, rows, lanes))? };
    }
    let gx = wrap(&gpu, gx, x.shape())?;
    if lanes != nw {
        let total = super::reduce::sum_all(&wrap(&gpu, partial, [lanes])?)?;
        return Ok((gx, total.reshape_detached(w.shape())?));
    }
    Ok((gx, wrap(&gpu, partial, w.shape())?))
}

fn gate_check(x: &Tensor, gate: &Tensor) -> Result<(usize, usize)> {
    let c = channels(x);
    let voxels = x.numel() / c;
    let mut want = x.dims().to_vec();
    if let Some(last) = want.last_mut() {
        *last = 1;
    }
    if gate.dims() != want.as_slice() {
        return Err(Error::shape("gate_mul", want, gate.dims()));
    }
    Ok((c, voxels))
}

/// `x * gate` with one gate value per voxel, broadcast over channels.
///
/// # Shapes
/// `x (N, D, H, W, C)`, `gate (N, D, H, W, 1)`; output like `x`.
pub fn gate_mul(x: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let (c, _) = gate_check(x, gate)?;
    let gpu = common_gpu("gate_mul", &[x, gate])?;
    let out =
        gate_mul_raw(&gpu, f32_slice("gate_mul", x)?, f32_slice("gate_mul", gate)?, x.numel(), c)?;
    wrap(&gpu, out, x.shape())
}

fn gate_mul_raw(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    gate: &CudaSlice<f32>,
    n: usize,
    c: usize,
) -> Result<CudaSlice<f32>> {
    let name = kernel_name("gate_mul", Pass::Fwd, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let (nn, ci) = (long(n), int("gate_mul", c)?);
    let mut out = alloc(gpu, n)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&nn).arg(&ci).arg(x).arg(gate).arg(&mut out);
        // SAFETY: gate_mul_fwd_f32(n, c, x, gate, out): x/out hold n, gate n / c; all written.
        unsafe { launch::launch(gpu, &name, &mut b, grid_1d(gpu, n))? };
    }
    Ok(out)
}

/// Gradients of [`gate_mul`]: `(grad_x, grad_gate)`.
pub fn gate_mul_backward(x: &Tensor, gate: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
    same_shape("gate_mul", x, g)?;
    let (c, voxels) = gate_check(x, gate)?;
    let gpu = common_gpu("gate_mul", &[x, gate, g])?;
    let (sx, sgate, sg) =
        (f32_slice("gate_mul", x)?, f32_slice("gate_mul", gate)?, f32_slice("gate_mul", g)?);
    let gx = gate_mul_raw(&gpu, sg, sgate, x.numel(), c)?;

    let name = kernel_name("gate_mul", Pass::BwdWeight, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let (vl, ci) = (long(voxels), int("gate_mul", c)?);
    let mut ggate = alloc(&gpu, voxels)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&vl).arg(&ci).arg(sx).arg(sg).arg(&mut ggate);
        // SAFETY: gate_mul_bwd_weight_f32(V, c, x, g, ggate): x, g are (V, c); writes all V.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, voxels))? };
    }
    Ok((wrap(&gpu, gx, x.shape())?, wrap(&gpu, ggate, gate.shape())?))
}

/// Channel dropout of `x` (`(N, ..., C)`): every element times its (sample, channel) multiplier,
/// 0 with probability `p` else `keep`, drawn on the device from `base` exactly as
/// `backend::cpu::dropout::channel_mask` draws it. Applied to an output gradient, the backward.
pub fn channel_dropout(x: &Tensor, p: f32, keep: f32, base: u64) -> Result<Tensor> {
    const OP: &str = "channel_dropout";
    let c = *x.dims().last().ok_or_else(|| Error::shape(OP, "(N, ..., C)", x.dims()))?;
    let n_samples = x.dims().first().copied().unwrap_or(1).max(1);
    let gpu = common_gpu(OP, &[x])?;
    let n = x.numel();
    let name = kernel_name(OP, Pass::Fwd, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let (nn, per, ci) = (long(n), long(n / n_samples), int(OP, c)?);
    let mut out = alloc(&gpu, n)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&nn).arg(&per).arg(&ci).arg(&p).arg(&keep).arg(&base);
        b.arg(f32_slice(OP, x)?).arg(&mut out);
        // SAFETY: channel_dropout_fwd_f32(n, per, c, p, keep, base, x, out): x and out hold n
        // floats, per = n / N divides into whole samples of c channels; every element written.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, n))? };
    }
    wrap(&gpu, out, x.shape())
}

/// Concatenates channels-last tensors along their last axis.
///
/// # Shapes
/// Every input `(..., C_i)` with equal leading dims; output `(..., sum C_i)`.
pub fn concat_channels(xs: &[&Tensor]) -> Result<Tensor> {
    let first = xs.first().ok_or_else(|| Error::arg("concat_channels", "no inputs"))?;
    let lead = &first.dims()[..first.rank().saturating_sub(1)];
    for x in xs {
        if x.rank() != first.rank() || &x.dims()[..x.rank().saturating_sub(1)] != lead {
            return Err(Error::shape("concat_channels", first.dims(), x.dims()));
        }
    }
    let gpu = common_gpu("concat_channels", xs)?;
    let cout: usize = xs.iter().map(|x| channels(x)).sum();
    let voxels = first.numel() / channels(first);
    let name = kernel_name("concat", Pass::Fwd, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let mut out = alloc(&gpu, voxels * cout)?;
    let (vl, co) = (long(voxels), int("concat_channels", cout)?);
    let mut off = 0usize;
    for x in xs {
        let cx = channels(x);
        let (cxi, offi) = (int("concat_channels", cx)?, int("concat_channels", off)?);
        let sx = f32_slice("concat_channels", x)?;
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&vl).arg(&cxi).arg(&co).arg(&offi).arg(sx).arg(&mut out);
        // SAFETY: concat_fwd_f32(V, cx, cout, off, x, out): x is (V, cx), out (V, cout) with
        // off + cx <= cout; together the launches write every channel of out exactly once.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, voxels * cx))? };
        off += cx;
    }
    let mut shape = first.dims().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = cout;
    }
    wrap(&gpu, out, shape)
}

/// Gradient of [`concat_channels`]: the slices of `g` with `sizes[i]` channels each, in order.
pub fn concat_channels_backward(g: &Tensor, sizes: &[usize]) -> Result<Vec<Tensor>> {
    let cout = channels(g);
    if sizes.iter().sum::<usize>() != cout {
        return Err(Error::shape("concat_channels", format!("{cout} channels"), sizes));
    }
    let gpu = common_gpu("concat_channels", &[g])?;
    let voxels = g.numel() / cout;
    let name = kernel_name("concat", Pass::BwdInput, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let sg = f32_slice("concat_channels", g)?;
    let (vl, co) = (long(voxels), int("concat_channels", cout)?);
    let mut outs = Vec::with_capacity(sizes.len());
    let mut off = 0usize;
    for &cx in sizes {
        let (cxi, offi) = (int("concat_channels", cx)?, int("concat_channels", off)?);
        let mut gx = alloc(&gpu, voxels * cx)?;
        {
            let mut b = gpu.stream.launch_builder(&f);
            b.arg(&vl).arg(&cxi).arg(&co).arg(&offi).arg(sg).arg(&mut gx);
            // SAFETY: concat_bwd_input_f32(V, cx, cout, off, g, gx): g is (V, cout), gx (V, cx),
            // off + cx <= cout (sizes sum to cout); every element of gx is written.
            unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, voxels * cx))? };
        }
        let mut shape = g.dims().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = cx;
        }
        outs.push(wrap(&gpu, gx, shape)?);
        off += cx;
    }
    Ok(outs)
}
