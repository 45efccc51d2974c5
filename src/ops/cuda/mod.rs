//! The GPU side of the public ops: each function here is what `crate::ops::<op>` (and the losses
//! and Adam) run when an input lives on a CUDA device. It checks devices and shapes with the same
//! `Err` values as the CPU path, runs the forward launcher of `backend::cuda::<family>`, and records
//! a backward closure that calls the family's backward launchers, so a graph built from CUDA
//! tensors stays on the GPU end to end, backward included.
//!
//! Kept apart from the CPU op files so that the two paths can change independently; each CPU op
//! only gains a one-line early branch into this module. Convolutions use the fp32 kernels
//! ([`conv_precision`], set with [`set_conv_precision`]; f32 unless a caller asks for bf16).
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

use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::cuda::Precision;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// Whether GPU convolutions use bf16 operands (tensor cores, f32 accumulation); f32 otherwise.
static CONV_BF16: AtomicBool = AtomicBool::new(false);

/// Sets the operand precision of every GPU convolution reached through `crate::ops` from now on
/// (`--precision bf16|fp32`). A convolution's backward uses the precision of its forward.
pub fn set_conv_precision(p: Precision) {
    CONV_BF16.store(p == Precision::Bf16, Ordering::Relaxed);
}

/// The operand precision GPU convolutions use now.
pub fn conv_precision() -> Precision {
    if CONV_BF16.load(Ordering::Relaxed) {
        Precision::Bf16
    } else {
        Precision::F32
    }
}

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

#[cfg(test)]
mod tests {
    //! What of the GPU path runs without a GPU: device checks, the dropout mask expansion and the
    //! host fallbacks (hard Dice, Adam), which also accept CPU tensors.
    use super::*;
    use crate::autograd::backward;
    use crate::backend::cpu::dropout::{apply_mask, channel_mask};
    use crate::optim::{Adam, AdamConfig};

    fn t(v: &[f32], dims: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), dims.to_vec()).expect("shape fits")
    }

    #[test]
    fn cpu_tensors_stay_on_the_cpu_path() {
        let a = t(&[1.0, 2.0], &[2]);
        assert!(!any_cuda(&[&a, &a]));
        assert_eq!(same_device("add", &[&a, &a]).expect("one device"), Device::Cpu);
    }

    #[test]
    fn expanded_mask_is_what_apply_mask_multiplies_by() {
        let (n, c, per) = (2, 3, 12);
        let x: Vec<f32> = (0..n * per).map(|i| i as f32 + 1.0).collect();
        let mask = channel_mask(n, c, 0.5, 9);
        let full = pointwise::expand_mask(&mask, n, c, per);
        let prod: Vec<f32> = x.iter().zip(&full).map(|(a, b)| a * b).collect();
        assert_eq!(prod, apply_mask(&x, &mask, c, per));
    }

    #[test]
    fn host_hard_dice_matches_the_cpu_op() {
        let p = t(&[0.9, 0.1, 0.3, 0.7, 0.4, 0.6, 0.8, 0.2], &[1, 1, 2, 2, 2]).requires_grad();
        let tgt = t(&[0.0, 1.0, 1.0, 0.0], &[1, 1, 2, 2]);
        let want = crate::loss::hard_dice(&p, &tgt).expect("cpu hard dice");
        let got = hard_dice(&p, &tgt).expect("host hard dice");
        assert_eq!((got.dice, got.iou), (want.dice, want.iou));
        let gw = backward(&want.loss).expect("cpu backward");
        let gg = backward(&got.loss).expect("host backward");
        let (a, b) = (gg.get(&p).expect("grad"), gw.get(&p).expect("grad"));
        assert_eq!(a.to_vec().expect("cpu"), b.to_vec().expect("cpu"));
    }

    #[test]
    fn host_adam_matches_the_cpu_step() {
        let cfg = AdamConfig { lr: 0.05, weight_decay: 0.01, ..AdamConfig::default() };
        let p = [t(&[1.0, -2.0, 0.5], &[3])];
        let g = [t(&[0.3, 0.1, -0.7], &[3])];
        let (mut a, mut b) = (Adam::new(cfg), Adam::new(cfg));
        let want = a.step(&p, &g).expect("cpu step");
        let got = adam_step(&mut b, &p, &g).expect("host step");
        assert_eq!(got[0].to_vec().expect("cpu"), want[0].to_vec().expect("cpu"));
        assert!(got[0].tracks_grad());
        assert_eq!(a.state(), b.state());
    }
}
