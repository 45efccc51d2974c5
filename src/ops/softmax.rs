//! Softmax and log-softmax over the channel (last) axis.

use super::{channels, data, like};
use crate::autograd::record;
use crate::backend::cpu::softmax as k;
use crate::backend::cuda::softmax as cu;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

fn check(op: &'static str, x: &Tensor) -> Result<usize> {
    let c = channels(op, x)?;
    if c == 0 {
        return Err(Error::shape(op, "at least one channel", x.dims()));
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
    const OP: &str = "softmax_channels";
    let c = check(OP, x)?;
    let out = match x.device() {
        Device::Cpu => like(k::softmax_fwd(data(OP, x)?, c), x)?,
        Device::Cuda(_) => cu::softmax_channels(x)?,
    };
    let y = out.clone();
    Ok(record(OP, out, &[x], move |g| {
        let gx = match y.device() {
            Device::Cpu => like(k::softmax_bwd(data(OP, &y)?, data(OP, g)?, c), &y)?,
            Device::Cuda(_) => cu::softmax_channels_backward(&y, g)?,
        };
        Ok(vec![Some(gx)])
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
    let op = "log_softmax_channels";
    let c = check(op, x)?;
    let out = match x.device() {
        Device::Cpu => like(k::log_softmax_fwd(data(op, x)?, c), x)?,
        Device::Cuda(_) => cu::log_softmax_channels(x)?,
    };
    let y = out.clone();
    Ok(record(op, out, &[x], move |g| {
        let gx = match y.device() {
            Device::Cpu => like(k::log_softmax_bwd(data(op, &y)?, data(op, g)?, c), &y)?,
            Device::Cuda(_) => cu::log_softmax_channels_backward(&y, g)?,
        };
        Ok(vec![Some(gx)])
    }))
}
