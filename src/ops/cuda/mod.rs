//! The GPU side of the public ops: each function here is what `crate::ops::<op>` (and the losses
//! and Adam) run when an input lives on a CUDA device. It checks devices and shapes with the same
//! `Err` values as the CPU path, runs the forward launcher of `backend::cuda::<family>`, and records
//! a backward closure that calls the family's backward launchers, so a graph built from CUDA
//! tensors stays on the GPU end to end, backward included.
//!
//! Kept apart from the CPU op files so that the two paths can change independently; each CPU op
//! only gains a one-line early branch into this module. Convolutions use the fp32 kernels
//! ([`PREC`]): the CUDA backend offers bf16 too, but no global precision switch exists yet.
//!
//! Two pieces have no kernel and go through the host: the original's hard Dice (its sums and
//! hand-made gradient run on the CPU) and Adam (the moments are the optimiser's host state, so
//! checkpoints and `--resume` keep working unchanged). Channel dropout multiplies by a mask
//! built on the host and uploaded once.

mod conv;
mod loss;
mod norm;
mod pointwise;

pub(crate) use conv::{conv3d, conv_transpose3d};
pub(crate) use loss::{adam_step, cross_entropy, hard_dice, nll_probs, soft_dice};
pub(crate) use norm::{batch_norm, group_norm};
pub(crate) use pointwise::{
    add, channel_dropout, concat_channels, elu, gate_mul, log_softmax_channels, max_pool3d_k2, mul,
    prelu, relu, scale, sigmoid, softmax_channels, upsample_nearest,
};

use crate::backend::cuda::Precision;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// Operand precision of the GPU convolutions reached through `crate::ops`.
pub(crate) const PREC: Precision = Precision::F32;

/// True when any of `ts` lives on a GPU: the op then runs here (and fails with
/// [`Error::Device`] if the others do not live on the same GPU).
pub(crate) fn any_cuda(ts: &[&Tensor]) -> bool {
    ts.iter().any(|t| t.device().is_cuda())
}

/// The one device all `ts` live on, or [`Error::Device`] naming `op` and the devices found.
pub(crate) fn same_device(op: &'static str, ts: &[&Tensor]) -> Result<Device> {
    let first = ts.first().map(|t| t.device()).unwrap_or(Device::Cpu);
    if let Some(other) = ts.iter().map(|t| t.device()).find(|&d| d != first) {
        return Err(Error::Device {
            op,
            msg: format!("inputs on different devices ({first} and {other}); move them to one"),
        });
    }
    Ok(first)
}

/// An upstream gradient on the op's device (a no-op handle clone when it is there already, which
/// it is whenever the loss was computed on that device).
fn grad_on(g: &Tensor, device: Device) -> Result<Tensor> {
    g.to_device(device)
}

/// [`Error::Shape`] with a described expectation, as the CPU op files word it.
fn shape_err(
    op: &'static str,
    expected: impl std::fmt::Display,
    got: impl std::fmt::Debug,
) -> Error {
    Error::Shape { op, expected: expected.to_string(), got: format!("{got:?}") }
}

/// The channel count (last dim), as the CPU ops check it.
fn channels(op: &'static str, x: &Tensor) -> Result<usize> {
    x.dims().last().copied().ok_or_else(|| shape_err(op, "a tensor with a channel axis", x.dims()))
}

/// The dims of an activation `(N, D, H, W, C)`, as the CPU ops check them.
fn ndhwc(op: &'static str, x: &Tensor) -> Result<[usize; 5]> {
    x.shape().ndhwc().ok_or_else(|| shape_err(op, "(N, D, H, W, C)", x.dims()))
}

/// A channels-last tensor of any rank >= 1 viewed as `(1, 1, 1, rows, C)`, the 5-D form the
/// per-channel launchers want (no copy).
fn as_rows5(x: &Tensor) -> Result<Tensor> {
    let c = x.dims().last().copied().unwrap_or(1).max(1);
    x.reshape_detached([1, 1, 1, x.numel() / c, c])
}
