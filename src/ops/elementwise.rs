//! Elementwise ops and activations. Shapes are checked here once; the arithmetic runs in
//! `backend::cpu::elementwise` or `backend::cuda::elementwise`, chosen by the device of the
//! inputs, forward and backward alike.

use super::{channels, data, device_of, like, ndhwc};
use crate::autograd::record;
use crate::backend::cpu::elementwise as k;
use crate::backend::cuda::elementwise as cu;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(Error::shape(op, a.dims(), b.dims()));
    }
    Ok(())
}

/// `f(x)` elementwise on the CPU, or the CUDA launcher `gpu(x)`.
fn unary(
    op: &'static str,
    x: &Tensor,
    f: impl Fn(f32) -> f32 + Sync,
    gpu: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => like(k::map1(data(op, x)?, f), x),
        Device::Cuda(_) => gpu(x),
    }
}

/// `f(a, b)` elementwise on the CPU, or the CUDA launcher `gpu(a, b)`; `a` and `b` are on one
/// device (checked by the op).
fn binary(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
    gpu: impl FnOnce(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    match a.device() {
        Device::Cpu => like(k::map2(data(op, a)?, data(op, b)?, f), a),
        Device::Cuda(_) => gpu(a, b),
    }
}

// ---- arithmetic -------------------------------------------------------------------------------

/// `a + b`.
///
/// # Shapes
/// `a` and `b` of equal shape -> that shape.
///
/// # Errors
/// [`Error::Shape`] when the shapes differ; [`Error::Device`] when they live apart.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = crate::backend::add(a, b)?;
    Ok(record("add", out, &[a, b], |g| Ok(vec![Some(g.clone()), Some(g.clone())])))
}

/// `a * b`, elementwise.
///
/// # Shapes
/// `a` and `b` of equal shape -> that shape.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "mul";
    device_of(OP, &[a, b])?;
    same_shape(OP, a, b)?;
    let times = |p: &Tensor, q: &Tensor| binary(OP, p, q, |x, y| x * y, cu::mul);
    let out = times(a, b)?;
    let (sa, sb) = (a.clone(), b.clone());
    Ok(record(OP, out, &[a, b], move |g| {
        let times = |p: &Tensor, q: &Tensor| binary(OP, p, q, |x, y| x * y, cu::mul);
        let ga = sa.tracks_grad().then(|| times(g, &sb)).transpose()?;
        let gb = sb.tracks_grad().then(|| times(g, &sa)).transpose()?;
        Ok(vec![ga, gb])
    }))
}

/// `a * s` for a constant `s`.
pub fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
    let out = unary("scale", a, |p| p * s, |t| cu::scale(t, s))?;
    Ok(record("scale", out, &[a], move |g| {
        Ok(vec![Some(unary("scale", g, |p| p * s, |t| cu::scale(t, s))?)])
    }))
}

/// `x * g` with the gate `g` broadcast over the channels of `x` (attention gates; the sigmoid is
/// applied by the caller).
///
/// # Shapes
/// `x: (N, D, H, W, C)`, `g: (N, D, H, W, 1)` -> `(N, D, H, W, C)`.
///
/// # Errors
/// [`Error::Shape`] when `g` is not `x`'s shape with one channel.
pub fn gate_mul(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    const OP: &str = "gate_mul";
    let dev = device_of(OP, &[x, g])?;
    let [n, d, h, w, c] = ndhwc(OP, x)?;
    if g.dims() != [n, d, h, w, 1] {
        return Err(Error::shape(OP, [n, d, h, w, 1], g.dims()));
    }
    let out = match dev {
        Device::Cpu => like(k::gate_mul_fwd(data(OP, x)?, data(OP, g)?, c), x)?,
        Device::Cuda(_) => cu::gate_mul(x, g)?,
    };
    let (sx, sg) = (x.clone(), g.clone());
    Ok(record(OP, out, &[x, g], move |go| {
        let (gx, gg) = match dev {
            Device::Cpu => {
                let gos = data(OP, go)?;
                let gx = sx
                    .tracks_grad()
                    .then(|| like(k::gate_mul_fwd(gos, data(OP, &sg)?, c), &sx))
                    .transpose()?;
                let gg = sg
                    .tracks_grad()
                    .then(|| like(k::gate_mul_bwd_g(data(OP, &sx)?, gos, c), &sg))
                    .transpose()?;
                (gx, gg)
            }
            Device::Cuda(_) => {
                let (gx, gg) = cu::gate_mul_backward(&sx, &sg, go)?;
                (sx.tracks_grad().then_some(gx), sg.tracks_grad().then_some(gg))
            }
        };
        Ok(vec![gx, gg])
    }))
}

// ---- activations ------------------------------------------------------------------------------

/// `max(x, 0)`; the gradient is passed where `x > 0`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "relu";
    let out = unary(OP, x, |v| v.max(0.0), cu::relu)?;
    let sx = x.clone();
    Ok(record(OP, out, &[x], move |g| {
        let gx = binary(OP, &sx, g, |v, gv| if v > 0.0 { gv } else { 0.0 }, cu::relu_backward)?;
        Ok(vec![Some(gx)])
    }))
}

/// PReLU: `x` where `x > 0`, else `weight * x`, with one slope per channel (`weight: (C)`) or
/// one shared slope (`weight: (1)`). Differentiable in `x` and `weight`.
///
/// # Shapes
/// `x: (..., C)`, `weight: (C)` or `(1)` -> the shape of `x`.
///
/// # Errors
/// [`Error::Shape`] when `weight` is neither `(C)` nor `(1)`.
pub fn prelu(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    const OP: &str = "prelu";
    let dev = device_of(OP, &[x, weight])?;
    let c = channels(OP, x)?;
    if weight.dims() != [c] && weight.dims() != [1] {
        return Err(Error::shape(
            OP,
            format!("weight [{c}] or [1] for x {:?}", x.dims()),
            weight.dims(),
        ));
    }
    let out = match dev {
        Device::Cpu => like(k::prelu_fwd(data(OP, x)?, data(OP, weight)?, c), x)?,
        Device::Cuda(_) => cu::prelu(x, weight)?,
    };
    let (sx, sw) = (x.clone(), weight.clone());
    Ok(record(OP, out, &[x, weight], move |g| {
        let (gx, gw) = match dev {
            Device::Cpu => {
                let (xs, ws, gs) = (data(OP, &sx)?, data(OP, &sw)?, data(OP, g)?);
                let gx = sx.tracks_grad().then(|| like(k::prelu_bwd_x(xs, gs, ws, c), &sx));
                let gw =
                    sw.tracks_grad().then(|| like(k::prelu_bwd_w(xs, gs, c, ws.len() == 1), &sw));
                (gx.transpose()?, gw.transpose()?)
            }
            Device::Cuda(_) => {
                let (gx, gw) = cu::prelu_backward(&sx, &sw, g)?;
                (sx.tracks_grad().then_some(gx), sw.tracks_grad().then_some(gw))
            }
        };
        Ok(vec![gx, gw])
    }))
}

/// ELU: `x` where `x > 0`, else `alpha * (exp(x) - 1)`.
pub fn elu(x: &Tensor, alpha: f32) -> Result<Tensor> {
    const OP: &str = "elu";
    let out = unary(OP, x, |v| k::elu(v, alpha), |t| cu::elu(t, alpha))?;
    let sx = x.clone();
    Ok(record(OP, out, &[x], move |g| {
        let gx = binary(
            OP,
            &sx,
            g,
            |v, gv| k::elu_grad(v, gv, alpha),
            |a, b| cu::elu_backward(a, b, alpha),
        )?;
        Ok(vec![Some(gx)])
    }))
}

/// The logistic function `1 / (1 + exp(-x))` (backward from the output).
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "sigmoid";
    let out = unary(OP, x, k::sigmoid, cu::sigmoid)?;
    let y = out.clone();
    Ok(record(OP, out, &[x], move |g| {
        let gx = binary(OP, &y, g, |s, gv| gv * s * (1.0 - s), cu::sigmoid_backward)?;
        Ok(vec![Some(gx)])
    }))
}
