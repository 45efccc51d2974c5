//! Elementwise ops, activations, concatenation, dropout, pooling, upsampling and softmax on the
//! GPU: each is its launcher in `backend::cuda` plus the backward launcher on the tape.

use super::{channels, grad_on, ndhwc, same_device, shape_err};
use crate::autograd::{needs_grad, record};
use crate::backend::cpu::dropout::channel_mask;
use crate::backend::cuda::{elementwise as ew, pool, softmax as sm, upsample as up};
use crate::tensor::Tensor;
use crate::{Error, Result};

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(Error::shape(op, a.dims(), b.dims()));
    }
    Ok(())
}

// ---- arithmetic -------------------------------------------------------------------------------

/// GPU `crate::ops::add`.
pub(crate) fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_device("add", &[a, b])?;
    same_shape("add", a, b)?;
    let out = ew::add(a, b)?;
    let dev = a.device();
    Ok(record("add", out, &[a, b], move |g| {
        let g = grad_on(g, dev)?;
        Ok(vec![Some(g.clone()), Some(g)])
    }))
}

/// GPU `crate::ops::mul`.
pub(crate) fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_device("mul", &[a, b])?;
    same_shape("mul", a, b)?;
    let out = ew::mul(a, b)?;
    let (sa, sb, dev) = (a.clone(), b.clone(), a.device());
    Ok(record("mul", out, &[a, b], move |g| {
        let g = grad_on(g, dev)?;
        let ga = sa.tracks_grad().then(|| ew::mul(&g, &sb)).transpose()?;
        let gb = sb.tracks_grad().then(|| ew::mul(&g, &sa)).transpose()?;
        Ok(vec![ga, gb])
    }))
}

/// GPU `crate::ops::scale`.
pub(crate) fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
    let out = ew::scale(a, s)?;
    let dev = a.device();
    Ok(record("scale", out, &[a], move |g| Ok(vec![Some(ew::scale(&grad_on(g, dev)?, s)?)])))
}

/// GPU `crate::ops::gate_mul`.
pub(crate) fn gate_mul(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    let op = "gate_mul";
    same_device(op, &[x, g])?;
    let [n, d, h, w, _] = ndhwc(op, x)?;
    if g.dims() != [n, d, h, w, 1] {
        return Err(Error::shape(op, [n, d, h, w, 1], g.dims()));
    }
    let out = ew::gate_mul(x, g)?;
    let (sx, sg, dev) = (x.clone(), g.clone(), x.device());
    Ok(record(op, out, &[x, g], move |go| {
        let (gx, gg) = ew::gate_mul_backward(&sx, &sg, &grad_on(go, dev)?)?;
        Ok(vec![sx.tracks_grad().then_some(gx), sg.tracks_grad().then_some(gg)])
    }))
}

// ---- activations ------------------------------------------------------------------------------

/// GPU `crate::ops::relu`.
pub(crate) fn relu(x: &Tensor) -> Result<Tensor> {
    let out = ew::relu(x)?;
    let (sx, dev) = (x.clone(), x.device());
    Ok(record("relu", out, &[x], move |g| {
        Ok(vec![Some(ew::relu_backward(&sx, &grad_on(g, dev)?)?)])
    }))
}

/// GPU `crate::ops::elu`.
pub(crate) fn elu(x: &Tensor, alpha: f32) -> Result<Tensor> {
    let out = ew::elu(x, alpha)?;
    let (sx, dev) = (x.clone(), x.device());
    Ok(record("elu", out, &[x], move |g| {
        Ok(vec![Some(ew::elu_backward(&sx, &grad_on(g, dev)?, alpha)?)])
    }))
}

/// GPU `crate::ops::sigmoid` (backward from the output).
pub(crate) fn sigmoid(x: &Tensor) -> Result<Tensor> {
    let out = ew::sigmoid(x)?;
    let (y, dev) = (out.clone(), x.device());
    Ok(record("sigmoid", out, &[x], move |g| {
        Ok(vec![Some(ew::sigmoid_backward(&y, &grad_on(g, dev)?)?)])
    }))
}

/// GPU `crate::ops::prelu`.
pub(crate) fn prelu(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let op = "prelu";
    same_device(op, &[x, weight])?;
    let c = channels(op, x)?;
    if weight.dims() != [c] && weight.dims() != [1] {
        return Err(shape_err(
            op,
            format!("weight [{c}] or [1] for x {:?}", x.dims()),
            weight.dims(),
        ));
    }
    let out = ew::prelu(x, weight)?;
    let (sx, sw, dev) = (x.clone(), weight.clone(), x.device());
    Ok(record(op, out, &[x, weight], move |g| {
        let (gx, gw) = ew::prelu_backward(&sx, &sw, &grad_on(g, dev)?)?;
        Ok(vec![sx.tracks_grad().then_some(gx), sw.tracks_grad().then_some(gw)])
    }))
}

// ---- layout -----------------------------------------------------------------------------------

/// GPU `crate::ops::concat_channels`.
pub(crate) fn concat_channels(xs: &[&Tensor]) -> Result<Tensor> {
    let op = "concat_channels";
    let first = xs.first().ok_or_else(|| shape_err(op, "at least one tensor", 0))?;
    let dev = same_device(op, xs)?;
    if first.rank() == 0 {
        return Err(shape_err(op, "tensors with a channel axis", first.dims()));
    }
    let lead = &first.dims()[..first.rank() - 1];
    if xs.iter().any(|x| x.rank() != first.rank() || &x.dims()[..x.rank() - 1] != lead) {
        let got: Vec<&[usize]> = xs.iter().map(|t| t.dims()).collect();
        return Err(shape_err(
            op,
            format!("equal dims but the last, like {:?}", first.dims()),
            got,
        ));
    }
    let out = ew::concat_channels(xs)?;
    let parts: Vec<(usize, bool)> =
        xs.iter().map(|x| (x.dims()[x.rank() - 1], x.tracks_grad())).collect();
    Ok(record(op, out, xs, move |g| {
        let sizes: Vec<usize> = parts.iter().map(|p| p.0).collect();
        let grads = ew::concat_channels_backward(&grad_on(g, dev)?, &sizes)?;
        Ok(grads.into_iter().zip(&parts).map(|(t, p)| p.1.then_some(t)).collect())
    }))
}

/// GPU `crate::ops::channel_dropout` (`p` checked and `p == 0` handled by the caller): the
/// per-(sample, channel) mask of the CPU op, expanded on the host to the shape of `x` and
/// uploaded, then an elementwise multiply, whose backward masks the gradient alike.
pub(crate) fn channel_dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let op = "channel_dropout";
    if x.rank() < 2 {
        return Err(shape_err(op, "(N, D, H, W, C)", x.dims()));
    }
    let c = channels(op, x)?;
    let n = x.dims()[0];
    let per = x.numel().checked_div(n).unwrap_or(0);
    let full = expand_mask(&channel_mask(n, c, p, seed), n, c, per);
    let mask = Tensor::from_vec(full, x.shape())?.to_device(x.device())?;
    mul(x, &mask)
}

/// The `(N, C)` dropout mask repeated over the `per / C` voxels of each sample: the elementwise
/// factor that `backend::cpu::dropout::apply_mask` applies.
pub(super) fn expand_mask(mask: &[f32], n: usize, c: usize, per: usize) -> Vec<f32> {
    let mut full = Vec::with_capacity(n * per);
    for row in mask.chunks(c.max(1)).take(n) {
        for _ in 0..per.checked_div(c).unwrap_or(0) {
            full.extend_from_slice(row);
        }
    }
    full
}

// ---- pooling and upsampling -------------------------------------------------------------------

/// GPU `crate::ops::max_pool3d_k2`.
pub(crate) fn max_pool3d_k2(x: &Tensor) -> Result<Tensor> {
    let op = "max_pool3d_k2";
    let [_, d, h, w, _] = ndhwc(op, x)?;
    if d < 2 || h < 2 || w < 2 {
        return Err(shape_err(op, "(N, D >= 2, H >= 2, W >= 2, C)", x.dims()));
    }
    let out = pool::max_pool3d_k2(x)?;
    if !needs_grad(&[x]) {
        return Ok(out);
    }
    let (sx, dev) = (x.clone(), x.device());
    Ok(record(op, out, &[x], move |g| {
        Ok(vec![Some(pool::max_pool3d_k2_backward(&sx, &grad_on(g, dev)?)?)])
    }))
}

/// GPU `crate::ops::upsample_nearest`.
pub(crate) fn upsample_nearest(x: &Tensor, size: [usize; 3]) -> Result<Tensor> {
    let op = "upsample_nearest";
    let dims = ndhwc(op, x)?;
    let [_, d, h, w, _] = dims;
    if [d, h, w].iter().zip(&size).any(|(&i, &o)| (i == 0) != (o == 0)) {
        return Err(shape_err(op, format!("non-empty spatial axes for size {size:?}"), x.dims()));
    }
    let out = up::upsample_nearest(x, size)?;
    let dev = x.device();
    Ok(record(op, out, &[x], move |g| {
        Ok(vec![Some(up::upsample_nearest_backward(&grad_on(g, dev)?, &dims)?)])
    }))
}

// ---- softmax ----------------------------------------------------------------------------------

fn check_softmax(op: &'static str, x: &Tensor) -> Result<()> {
    if channels(op, x)? == 0 {
        return Err(shape_err(op, "at least one channel", x.dims()));
    }
    Ok(())
}

/// GPU `crate::ops::softmax_channels` (backward from the output).
pub(crate) fn softmax_channels(x: &Tensor) -> Result<Tensor> {
    let op = "softmax_channels";
    check_softmax(op, x)?;
    let out = sm::softmax_channels(x)?;
    let (y, dev) = (out.clone(), x.device());
    Ok(record(op, out, &[x], move |g| {
        Ok(vec![Some(sm::softmax_channels_backward(&y, &grad_on(g, dev)?)?)])
    }))
}

/// GPU `crate::ops::log_softmax_channels` (backward from the output).
pub(crate) fn log_softmax_channels(x: &Tensor) -> Result<Tensor> {
    let op = "log_softmax_channels";
    check_softmax(op, x)?;
    let out = sm::log_softmax_channels(x)?;
    let (y, dev) = (out.clone(), x.device());
    Ok(record(op, out, &[x], move |g| {
        Ok(vec![Some(sm::log_softmax_channels_backward(&y, &grad_on(g, dev)?)?)])
    }))
}
