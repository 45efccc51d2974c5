//! Softmax and log-softmax over the channel (last) axis.

use super::elementwise::{channels, data, like, shape_err};
use crate::autograd::record;
use crate::backend::cpu::softmax as k;
use crate::tensor::Tensor;
use crate::Result;

fn check(op: &'static str, x: &Tensor) -> Result<usize> {
    let c = channels(op, x)?;
    if c == 0 {
        return Err(shape_err(op, "at least one channel", x.dims()));
    }
    Ok(c)
}

/// Softmax over the last axis (the channels of an `(N, D, H, W, C)` activation).
///
/// # Shapes
/// `(..., C)` -> `(..., C)`.
///
/// # Errors
/// [`Error::Shape`](crate::Error::Shape) for a scalar or an empty channel axis.
pub fn softmax_channels(x: &Tensor) -> Result<Tensor> {
    if super::cuda::any_cuda(&[x]) {
        return super::cuda::softmax_channels(x);
    }
    let c = check("softmax_channels", x)?;
    let out = like(k::softmax_fwd(data("softmax_channels", x)?, c), x)?;
    let y = out.clone();
    Ok(record("softmax_channels", out, &[x], move |g| {
        let gx = k::softmax_bwd(data("softmax_channels", &y)?, data("softmax_channels", g)?, c);
        Ok(vec![Some(like(gx, &y)?)])
    }))
}

/// Log-softmax over the last axis.
///
/// # Shapes
/// `(..., C)` -> `(..., C)`.
///
/// # Errors
/// [`Error::Shape`](crate::Error::Shape) for a scalar or an empty channel axis.
pub fn log_softmax_channels(x: &Tensor) -> Result<Tensor> {
    if super::cuda::any_cuda(&[x]) {
        return super::cuda::log_softmax_channels(x);
    }
    let op = "log_softmax_channels";
    let c = check(op, x)?;
    let out = like(k::log_softmax_fwd(data(op, x)?, c), x)?;
    let y = out.clone();
    Ok(record(op, out, &[x], move |g| {
        Ok(vec![Some(like(k::log_softmax_bwd(data(op, &y)?, data(op, g)?, c), &y)?)])
    }))
}
