//! `conv3d` and `conv_transpose3d` on the GPU: the implicit-GEMM launchers of
//! `backend::cuda::{conv3d, conv_transpose3d}`, backward input / weight by their backward
//! launchers and the bias gradient by a per-channel sum.

use super::{conv_precision, grad_on, same_device};
use crate::autograd::{needs_grad, record};
use crate::backend::cuda::{conv3d as cc, conv_transpose3d as ct, reduce};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// The CPU ops' shape checks (same messages) plus the channel match, without the CPU-only rule.
fn operands(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<([usize; 5], [usize; 5])> {
    let (xd, wd) = super::super::conv3d::check_shapes(op, x, w, b)?;
    if wd[4] != xd[4] {
        return Err(Error::shape(
            op,
            format!("weight (K, kd, kh, kw, {}) for input {xd:?}", xd[4]),
            format!("weight {wd:?}"),
        ));
    }
    Ok((xd, wd))
}

fn inputs<'a>(x: &'a Tensor, w: &'a Tensor, b: Option<&'a Tensor>) -> Vec<&'a Tensor> {
    let mut v = vec![x, w];
    v.extend(b);
    v
}

/// GPU `crate::ops::conv3d`.
pub(crate) fn conv3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    const OP: &str = "conv3d";
    let ins = inputs(x, w, b);
    let dev = same_device(OP, &ins)?;
    let (xd, wd) = operands(OP, x, w, b)?;
    if stride == 0 {
        return Err(Error::arg(OP, "stride must be at least 1"));
    }
    let fits = (0..3).all(|a| wd[1 + a] != 0 && wd[1 + a] <= xd[1 + a] + 2 * padding);
    if !fits {
        return Err(Error::shape(
            OP,
            format!("a kernel no larger than the input {xd:?} padded by {padding}"),
            format!("weight {wd:?}"),
        ));
    }
    let prec = conv_precision();
    let out = cc::conv3d(x, w, b, stride, padding, prec)?;
    if !needs_grad(&ins) {
        return Ok(out);
    }
    let (xs, ws, has_bias) = (x.clone(), w.clone(), b.is_some());
    Ok(record(OP, out, &ins, move |g| {
        let g = grad_on(g, dev)?;
        let gx = xs
            .tracks_grad()
            .then(|| cc::conv3d_backward_input(&g, &ws, xs.dims(), stride, padding, prec))
            .transpose()?;
        let gw = ws
            .tracks_grad()
            .then(|| cc::conv3d_backward_weight(&g, &xs, ws.dims(), stride, padding, prec))
            .transpose()?;
        let mut grads = vec![gx, gw];
        if has_bias {
            grads.push(Some(reduce::sum_channels(&g)?));
        }
        Ok(grads)
    }))
}

/// GPU `crate::ops::conv_transpose3d`.
pub(crate) fn conv_transpose3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose3d";
    let ins = inputs(x, w, b);
    let dev = same_device(OP, &ins)?;
    let (xd, wd) = operands(OP, x, w, b)?;
    if stride == 0 {
        return Err(Error::arg(OP, "stride must be at least 1"));
    }
    if wd[1..4].contains(&0) || xd[1..4].contains(&0) {
        return Err(Error::shape(
            OP,
            "a non-empty input and kernel",
            format!("input {xd:?}, weight {wd:?}"),
        ));
    }
    let prec = conv_precision();
    let out = ct::conv_transpose3d(x, w, b, stride, prec)?;
    if !needs_grad(&ins) {
        return Ok(out);
    }
    let (xs, ws, has_bias) = (x.clone(), w.clone(), b.is_some());
    Ok(record(OP, out, &ins, move |g| {
        let g = grad_on(g, dev)?;
        let gx = xs
            .tracks_grad()
            .then(|| ct::conv_transpose3d_backward_input(&g, &ws, xs.dims(), stride, prec))
            .transpose()?;
        let gw = ws
            .tracks_grad()
            .then(|| ct::conv_transpose3d_backward_weight(&g, &xs, ws.dims(), stride, prec))
            .transpose()?;
        let mut grads = vec![gx, gw];
        if has_bias {
            grads.push(Some(reduce::sum_channels(&g)?));
        }
        Ok(grads)
    }))
}
