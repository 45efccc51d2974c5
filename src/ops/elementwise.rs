//! Elementwise ops and activations. Shapes are checked here, the arithmetic runs in
//! `backend::cpu::elementwise`, and each op records its backward on the tape.

use crate::autograd::record;
use crate::backend::cpu::elementwise as k;
use crate::tensor::Tensor;
use crate::{Error, Result};

// ---- helpers shared by the op files of `crate::ops` --------------------------------------------

/// [`Error::Shape`] with a described expectation (`Error::shape` would quote a string).
pub(super) fn shape_err(
    op: &'static str,
    expected: impl std::fmt::Display,
    got: impl std::fmt::Debug,
) -> Error {
    Error::Shape { op, expected: expected.to_string(), got: format!("{got:?}") }
}

/// The f32 elements of a CPU tensor, or an [`Error::Device`] naming `op`.
pub(super) fn data<'a>(op: &'static str, t: &'a Tensor) -> Result<&'a [f32]> {
    t.as_slice().map_err(|_| Error::Device {
        op,
        msg: format!("the CPU kernels need CPU f32 tensors, got {:?} {:?}", t.device(), t.dtype()),
    })
}

/// The channel count (last dim) of a tensor of rank >= 1.
pub(super) fn channels(op: &'static str, x: &Tensor) -> Result<usize> {
    x.dims().last().copied().ok_or_else(|| shape_err(op, "a tensor with a channel axis", x.dims()))
}

/// The dims of an activation `(N, D, H, W, C)`.
pub(super) fn ndhwc(op: &'static str, x: &Tensor) -> Result<[usize; 5]> {
    x.shape().ndhwc().ok_or_else(|| shape_err(op, "(N, D, H, W, C)", x.dims()))
}

/// A CPU tensor with the dims of `like`.
pub(super) fn like(v: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(v, like.shape())
}

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(Error::shape(op, a.dims(), b.dims()));
    }
    Ok(())
}

// ---- arithmetic -------------------------------------------------------------------------------

/// `a + b`.
///
/// # Shapes
/// `a` and `b` of equal shape -> that shape.
///
/// # Errors
/// [`Error::Shape`] when the shapes differ; [`Error::Device`] for non-CPU tensors.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if super::cuda::any_cuda(&[a, b]) {
        return super::cuda::add(a, b);
    }
    same_shape("add", a, b)?;
    let out = like(k::map2(data("add", a)?, data("add", b)?, |p, q| p + q), a)?;
    Ok(record("add", out, &[a, b], |g| Ok(vec![Some(g.clone()), Some(g.clone())])))
}

/// `a * b`, elementwise.
///
/// # Shapes
/// `a` and `b` of equal shape -> that shape.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if super::cuda::any_cuda(&[a, b]) {
        return super::cuda::mul(a, b);
    }
    same_shape("mul", a, b)?;
    let out = like(k::map2(data("mul", a)?, data("mul", b)?, |p, q| p * q), a)?;
    let (sa, sb) = (a.clone(), b.clone());
    Ok(record("mul", out, &[a, b], move |g| {
        let gs = data("mul", g)?;
        let ga = sa.tracks_grad().then(|| like(k::map2(gs, data("mul", &sb)?, |p, q| p * q), &sa));
        let gb = sb.tracks_grad().then(|| like(k::map2(gs, data("mul", &sa)?, |p, q| p * q), &sb));
        Ok(vec![ga.transpose()?, gb.transpose()?])
    }))
}

/// `a * s` for a constant `s`.
pub fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
    if super::cuda::any_cuda(&[a]) {
        return super::cuda::scale(a, s);
    }
    let out = like(k::map1(data("scale", a)?, |p| p * s), a)?;
    Ok(record("scale", out, &[a], move |g| {
        Ok(vec![Some(like(k::map1(data("scale", g)?, |p| p * s), g)?)])
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
    if super::cuda::any_cuda(&[x, g]) {
        return super::cuda::gate_mul(x, g);
    }
    let [n, d, h, w, c] = ndhwc("gate_mul", x)?;
    if g.dims() != [n, d, h, w, 1] {
        return Err(Error::shape("gate_mul", [n, d, h, w, 1], g.dims()));
    }
    let out = like(k::gate_mul_fwd(data("gate_mul", x)?, data("gate_mul", g)?, c), x)?;
    let (sx, sg) = (x.clone(), g.clone());
    Ok(record("gate_mul", out, &[x, g], move |go| {
        let gos = data("gate_mul", go)?;
        let gx =
            sx.tracks_grad().then(|| like(k::gate_mul_fwd(gos, data("gate_mul", &sg)?, c), &sx));
        let gg =
            sg.tracks_grad().then(|| like(k::gate_mul_bwd_g(data("gate_mul", &sx)?, gos, c), &sg));
        Ok(vec![gx.transpose()?, gg.transpose()?])
    }))
}

// ---- activations ------------------------------------------------------------------------------

/// `max(x, 0)`; the gradient is passed where `x > 0`.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if super::cuda::any_cuda(&[x]) {
        return super::cuda::relu(x);
    }
    let out = like(k::map1(data("relu", x)?, |v| v.max(0.0)), x)?;
    let sx = x.clone();
    Ok(record("relu", out, &[x], move |g| {
        let gx =
            k::map2(data("relu", &sx)?, data("relu", g)?, |v, gv| if v > 0.0 { gv } else { 0.0 });
        Ok(vec![Some(like(gx, &sx)?)])
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
    if super::cuda::any_cuda(&[x, weight]) {
        return super::cuda::prelu(x, weight);
    }
    let c = channels("prelu", x)?;
    if weight.dims() != [c] && weight.dims() != [1] {
        return Err(shape_err(
            "prelu",
            format!("weight [{c}] or [1] for x {:?}", x.dims()),
            weight.dims(),
        ));
    }
    let out = like(k::prelu_fwd(data("prelu", x)?, data("prelu", weight)?, c), x)?;
    let (sx, sw) = (x.clone(), weight.clone());
    Ok(record("prelu", out, &[x, weight], move |g| {
        let (xs, ws, gs) = (data("prelu", &sx)?, data("prelu", &sw)?, data("prelu", g)?);
        let gx = sx.tracks_grad().then(|| like(k::prelu_bwd_x(xs, gs, ws, c), &sx));
        let gw = sw.tracks_grad().then(|| like(k::prelu_bwd_w(xs, gs, c, ws.len() == 1), &sw));
        Ok(vec![gx.transpose()?, gw.transpose()?])
    }))
}

/// ELU: `x` where `x > 0`, else `alpha * (exp(x) - 1)`.
pub fn elu(x: &Tensor, alpha: f32) -> Result<Tensor> {
    if super::cuda::any_cuda(&[x]) {
        return super::cuda::elu(x, alpha);
    }
    let out = like(k::map1(data("elu", x)?, |v| k::elu(v, alpha)), x)?;
    let sx = x.clone();
    Ok(record("elu", out, &[x], move |g| {
        let gx = k::map2(data("elu", &sx)?, data("elu", g)?, |v, gv| k::elu_grad(v, gv, alpha));
        Ok(vec![Some(like(gx, &sx)?)])
    }))
}

/// The logistic function `1 / (1 + exp(-x))`.
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    if super::cuda::any_cuda(&[x]) {
        return super::cuda::sigmoid(x);
    }
    let out = like(k::map1(data("sigmoid", x)?, k::sigmoid), x)?;
    let y = out.clone();
    Ok(record("sigmoid", out, &[x], move |g| {
        let gx = k::map2(data("sigmoid", &y)?, data("sigmoid", g)?, |s, gv| gv * s * (1.0 - s));
        Ok(vec![Some(like(gx, &y)?)])
    }))
}
