//! The losses and Adam for CUDA tensors. Cross entropy, NLL on probabilities and soft Dice are
//! the fused `backend::cuda::loss` pass (a scalar on the GPU, backward without a host sync);
//! targets are validated on the host first so a bad class id is the same `Err` as on the CPU
//! (the kernel would silently ignore it). The hard Dice and Adam run on the host (see below).

use super::{grad_on, same_device, shape_err};
use crate::autograd::{backward_with, needs_grad, record};
use crate::backend::cuda::loss::{self as k, LossSpec};
use crate::loss::HardDice;
use crate::optim::Adam;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// The CPU `class_ids` checks (same errors): target shaped like `x` without its channel axis,
/// every value a class id in `0..C`. Returns `C`.
fn check_targets(op: &'static str, x: &Tensor, target: &Tensor) -> Result<usize> {
    same_device(op, &[x, target])?;
    let r = x.rank();
    if r < 2 || target.dims() != &x.dims()[..r - 1] {
        let want = if r < 2 {
            "scores (N, D, H, W, C)".to_string()
        } else {
            format!("target {:?}", &x.dims()[..r - 1])
        };
        let got = format!("scores {:?}, target {:?}", x.dims(), target.dims());
        return Err(Error::Shape { op, expected: want, got });
    }
    let c = x.dims()[r - 1];
    // One download of the targets per loss (a few MB per batch at most).
    for t in target.to_vec()? {
        if !(t >= 0.0 && t.fract() == 0.0 && (t as usize) < c) {
            return Err(Error::arg(op, format!("target value {t} is not a class id in 0..{c}")));
        }
    }
    Ok(c)
}

fn check_weights(op: &'static str, weight: Option<&[f32]>, c: usize) -> Result<()> {
    match weight {
        Some(w) if w.len() != c => Err(shape_err(op, format!("{c} class weights"), w.len())),
        _ => Ok(()),
    }
}

/// One of the fused losses on `x (..., C)`, viewed as `(1, 1, 1, rows, C)` for the launcher.
fn fused(
    op: &'static str,
    x: &Tensor,
    target: &Tensor,
    weight: Option<&[f32]>,
    spec: LossSpec,
) -> Result<Tensor> {
    let c = x.dims()[x.rank() - 1];
    let rows = x.numel().checked_div(c).unwrap_or(0);
    let x5 = x.reshape_detached([1, 1, 1, rows, c])?;
    let t5 = target.reshape_detached([1, 1, 1, rows])?;
    let (loss, sums) = k::dice_ce(&x5, &t5, weight, spec)?;
    let (w, dev, x_shape) = (weight.map(<[f32]>::to_vec), x.device(), x.shape().clone());
    Ok(record(op, loss, &[x], move |g| {
        let gout = grad_on(g, dev)?;
        let gx = k::dice_ce_backward(&x5, &t5, w.as_deref(), &sums, spec, &gout)?;
        Ok(vec![Some(gx.reshape_detached(x_shape.clone())?)])
    }))
}

/// GPU `crate::loss::cross_entropy`.
pub(crate) fn cross_entropy(
    logits: &Tensor,
    target: &Tensor,
    weight: Option<&[f32]>,
) -> Result<Tensor> {
    let op = "cross_entropy";
    let c = check_targets(op, logits, target)?;
    check_weights(op, weight, c)?;
    fused(op, logits, target, weight, LossSpec::CROSS_ENTROPY)
}

/// GPU `crate::loss::nll_probs`. Unlike the CPU op the kernel does not clamp probabilities at
/// 1e-30, so an exact zero at a target class gives an infinite loss.
pub(crate) fn nll_probs(probs: &Tensor, target: &Tensor, weight: Option<&[f32]>) -> Result<Tensor> {
    let op = "nll_probs";
    let c = check_targets(op, probs, target)?;
    check_weights(op, weight, c)?;
    fused(op, probs, target, weight, LossSpec::NLL_PROBS)
}

/// GPU `crate::loss::soft_dice`.
pub(crate) fn soft_dice(probs: &Tensor, target: &Tensor) -> Result<Tensor> {
    let op = "soft_dice";
    let c = check_targets(op, probs, target)?;
    if c < 2 {
        return Err(shape_err(op, "probabilities with a foreground channel 1", probs.dims()));
    }
    fused(op, probs, target, None, LossSpec::SOFT_DICE)
}

/// GPU `crate::loss::hard_dice`, through the host: there is no kernel for the arg-max sums and
/// the original's hand-made gradient, so the CPU op runs on a host copy of `probs` and its
/// backward is replayed there, the gradient uploaded.
pub(crate) fn hard_dice(probs: &Tensor, target: &Tensor) -> Result<HardDice> {
    let op = "hard_dice";
    let dev = same_device(op, &[probs, target])?;
    let host = probs.to_device(Device::Cpu)?;
    let host = if needs_grad(&[probs]) { host.requires_grad() } else { host };
    let hd = crate::loss::hard_dice(&host, &target.to_device(Device::Cpu)?)?;
    let cpu_loss = hd.loss.clone();
    let loss = record(op, hd.loss.detach().to_device(dev)?, &[probs], move |g| {
        let grads = backward_with(&cpu_loss, g.to_device(Device::Cpu)?)?;
        let gp = grads
            .get(&host)
            .ok_or_else(|| Error::arg(op, "the host hard Dice recorded no gradient"))?;
        Ok(vec![Some(gp.to_device(dev)?)])
    });
    Ok(HardDice { loss, dice: hd.dice, iou: hd.iou })
}

/// `Adam::step` for CUDA tensors: the parameters and gradients are downloaded, the CPU step runs
/// with the optimiser's host moments (so `state()`, checkpoints and resume are unchanged), and the
/// new parameters are uploaded to each parameter's device. Exactly the CPU numbers, at the cost of
/// two host copies of the parameters per step. The one-launch GPU Adam
/// (`backend::cuda::optim::CudaAdam`) keeps its moments on the GPU and cannot be seeded from or
/// read into `AdamState` without a fallible `state()`, so it is not wired yet.
///
/// # Errors
/// [`Error::Device`] when a gradient is not on its parameter's device; those of `Adam::step`.
pub(crate) fn adam_step(
    adam: &mut Adam,
    params: &[Tensor],
    grads: &[Tensor],
) -> Result<Vec<Tensor>> {
    for (p, g) in params.iter().zip(grads) {
        same_device("adam", &[p, g])?;
    }
    let host = |ts: &[Tensor]| -> Result<Vec<Tensor>> {
        ts.iter().map(|t| t.to_device(Device::Cpu)).collect()
    };
    let new = adam.step(&host(params)?, &host(grads)?)?;
    new.into_iter().zip(params).map(|(n, p)| Ok(n.to_device(p.device())?.requires_grad())).collect()
}
