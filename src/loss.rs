//! Losses: weighted cross-entropy, NLL on probabilities, soft Dice, the original project's hard
//! Dice with its hand-made gradient, and Dice + weight * CE.
//!
//! Scores are channels-last `(N, D, H, W, C)` (logits or softmax probabilities); targets are
//! `(N, D, H, W)` tensors of class ids stored as f32. The foreground of the Dice losses is class 1.
//! Each loss but `dice_ce` (a sum of two) is one fused kernel pass (`backend::cpu::loss`) with its
//! own backward on the tape.

use crate::autograd::record;
use crate::backend::cpu::loss as k;
use crate::backend::cuda::loss::{self as cu, LossSpec};
use crate::backend::device_of;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// The f32 elements of a CPU tensor, or an [`Error::Device`] naming `op`.
fn cpu<'a>(op: &'static str, t: &'a Tensor) -> Result<&'a [f32]> {
    t.as_slice().map_err(|_| Error::Device {
        op,
        msg: format!("the CPU kernels need CPU f32 tensors, got {:?} {:?}", t.device(), t.dtype()),
    })
}

/// Checks the one thing every loss shares: scores and targets on one device, the target shaped
/// like the scores without their channel axis. Returns `C` and the device.
fn check_target_shape(op: &'static str, x: &Tensor, target: &Tensor) -> Result<(usize, Device)> {
    let dev = device_of(op, &[x, target])?;
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
    Ok((x.dims()[r - 1], dev))
}

/// The target value the cross-entropies skip: the voxel adds nothing to the loss nor to the
/// weight sum it is averaged by (PyTorch's default `ignore_index`). The Dice losses take none.
pub const IGNORE_INDEX: f32 = -100.0;

/// What an ignored voxel's id becomes for the CPU kernels: outside every `0..c`.
const IGNORED_ID: u32 = u32::MAX;

/// The class ids of a CPU target, each checked to lie in `0..c` ([`IGNORE_INDEX`] too where
/// `ignore` allows it). (A GPU target is not read back to the host per loss: the fused kernel
/// treats an id outside `0..c` as an ignore label, and the training data are checked when a batch
/// is built.)
fn class_ids(op: &'static str, target: &Tensor, c: usize, ignore: bool) -> Result<Vec<u32>> {
    cpu(op, target)?
        .iter()
        .map(|&t| {
            if t >= 0.0 && t.fract() == 0.0 && (t as usize) < c {
                Ok(t as u32)
            } else if ignore && t == IGNORE_INDEX {
                Ok(IGNORED_ID)
            } else {
                Err(Error::arg(op, format!("target value {t} is not a class id in 0..{c}")))
            }
        })
        .collect::<Result<Vec<u32>>>()
}

/// One of the fused GPU losses on `x (..., C)`, viewed as `(1, 1, 1, rows, C)` for the launcher:
/// a scalar on the GPU whose backward needs no host synchronisation.
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
    let (loss, sums) = cu::dice_ce(&x5, &t5, weight, spec)?;
    let (w, x_shape) = (weight.map(<[f32]>::to_vec), x.shape().clone());
    Ok(record(op, loss, &[x], move |g| {
        let gx = cu::dice_ce_backward(&x5, &t5, w.as_deref(), &sums, spec, g)?;
        Ok(vec![Some(gx.reshape_detached(x_shape.clone())?)])
    }))
}

/// Class weights, all ones when absent.
fn class_weights(op: &'static str, weight: Option<&[f32]>, c: usize) -> Result<Vec<f32>> {
    match weight {
        None => Ok(vec![1.0; c]),
        Some(w) if w.len() == c => Ok(w.to_vec()),
        Some(w) => Err(Error::shape(op, format!("{c} class weights"), w.len())),
    }
}

fn upstream(op: &'static str, g: &Tensor) -> Result<f32> {
    cpu(op, g)?.first().copied().ok_or_else(|| Error::shape(op, "a scalar gradient", g.dims()))
}

/// Cross-entropy of logits, the weighted mean of `F.cross_entropy(logits, target, weight)`:
/// `sum_v w[t_v] * -log softmax(x_v)[t_v] / sum_v w[t_v]`, over the voxels whose target is not
/// [`IGNORE_INDEX`] (a target all ignored gives NaN, as PyTorch's does).
///
/// # Shapes
/// `logits: (N, D, H, W, C)`, `target: (N, D, H, W)`, `weight: C` values -> scalar.
///
/// # Errors
/// [`Error::Shape`] when the shapes or the weight count do not fit; [`Error::Arg`] for a target
/// value that is not a class id.
pub fn cross_entropy(logits: &Tensor, target: &Tensor, weight: Option<&[f32]>) -> Result<Tensor> {
    let op = "cross_entropy";
    let (c, dev) = check_target_shape(op, logits, target)?;
    let w = class_weights(op, weight, c)?;
    if dev.is_cuda() {
        return fused(op, logits, target, weight, LossSpec::CROSS_ENTROPY);
    }
    let ids = class_ids(op, target, c, true)?;
    let (sum, wsum) = k::ce_fwd(cpu(op, logits)?, &ids, c, &w);
    let out = Tensor::scalar((sum / wsum) as f32);
    let x = logits.clone();
    Ok(record(op, out, &[logits], move |g| {
        let scale = (f64::from(upstream(op, g)?) / wsum) as f32;
        Ok(vec![Some(Tensor::from_vec(k::ce_bwd(cpu(op, &x)?, &ids, c, &w, scale), x.shape())?)])
    }))
}

/// Weighted NLL on probabilities, what the original trains with (its networks end in a
/// softmax): `-sum_v w[t_v] * log p_v[t_v] / sum_v w[t_v]`, skipping [`IGNORE_INDEX`] voxels as
/// [`cross_entropy`] does. Probabilities under
/// [`k::P_FLOOR`] (1e-30) are clamped so the loss stays finite.
///
/// # Shapes
/// `probs: (N, D, H, W, C)`, `target: (N, D, H, W)`, `weight: C` values -> scalar.
///
/// # Errors
/// As [`cross_entropy`].
pub fn nll_probs(probs: &Tensor, target: &Tensor, weight: Option<&[f32]>) -> Result<Tensor> {
    let op = "nll_probs";
    let (c, dev) = check_target_shape(op, probs, target)?;
    let w = class_weights(op, weight, c)?;
    if dev.is_cuda() {
        return fused(op, probs, target, weight, LossSpec::NLL_PROBS);
    }
    let ids = class_ids(op, target, c, true)?;
    let (sum, wsum) = k::nll_probs_fwd(cpu(op, probs)?, &ids, c, &w);
    let out = Tensor::scalar((sum / wsum) as f32);
    let p = probs.clone();
    Ok(record(op, out, &[probs], move |g| {
        let scale = (f64::from(upstream(op, g)?) / wsum) as f32;
        let gp = k::nll_probs_bwd(cpu(op, &p)?, &ids, c, &w, scale);
        Ok(vec![Some(Tensor::from_vec(gp, p.shape())?)])
    }))
}

fn need_foreground(op: &'static str, probs: &Tensor, c: usize) -> Result<()> {
    if c < 2 {
        return Err(Error::shape(op, "probabilities with a foreground channel 1", probs.dims()));
    }
    Ok(())
}

/// Soft Dice loss of the foreground: `1 - 2 * sum(p1 * g) / (sum(p1) + sum(g) + 1e-6)` over the
/// whole batch, with `p1 = probs[..., 1]` and `g = [target == 1]`. Differentiable in `probs`
/// (channel 1 only).
///
/// # Shapes
/// `probs: (N, D, H, W, C >= 2)`, `target: (N, D, H, W)` -> scalar.
///
/// # Errors
/// As [`cross_entropy`], and [`Error::Shape`] when there is no channel 1.
pub fn soft_dice(probs: &Tensor, target: &Tensor) -> Result<Tensor> {
    let op = "soft_dice";
    let (c, dev) = check_target_shape(op, probs, target)?;
    need_foreground(op, probs, c)?;
    if dev.is_cuda() {
        return fused(op, probs, target, None, LossSpec::SOFT_DICE);
    }
    let ids = class_ids(op, target, c, false)?;
    let [inter, sp, sg] = k::soft_dice_sums(cpu(op, probs)?, &ids, c);
    let union = sp + sg + 1e-6;
    let out = Tensor::scalar((1.0 - 2.0 * inter / union) as f32);
    let p = probs.clone();
    Ok(record(op, out, &[probs], move |g| {
        // d/dp1 of 1 - 2I/U = -2 (g U - I) / U^2.
        let up = f64::from(upstream(op, g)?);
        let (a, b) = ((-2.0 * up / union) as f32, (2.0 * up * inter / (union * union)) as f32);
        let gp = k::two_channel_grad(cpu(op, &p)?, &ids, c, |gv, _| (0.0, a * gv + b));
        Ok(vec![Some(Tensor::from_vec(gp, p.shape())?)])
    }))
}

/// The original project's hard Dice (the V-Net `DiceLoss`): Dice and IoU of the arg-max
/// segmentation, and a loss `1 - dice` whose backward is its hand-made gradient.
#[derive(Clone, Debug)]
pub struct HardDice {
    /// `1 - dice` (scalar). Backward: with `U = sum(r) + sum(g) + 2e-6`, `I = sum(r * g)` and
    /// `dD = 2 g / U - 4 p1 I / U^2`, channel 0 gets `+dD` and channel 1 gets `-dD`, which is
    /// the original's gradient of `dice` negated (the gradient of `p1` through the arg-max
    /// does not exist; this is the surrogate it trains with).
    pub loss: Tensor,
    /// `2 I / U`.
    pub dice: f32,
    /// `I / (U - I)`.
    pub iou: f32,
}

/// The original's hard Dice of two-class probabilities against a binary target.
///
/// # Shapes
/// `probs: (N, D, H, W, 2)`, `target: (N, D, H, W)` of 0/1.
///
/// # Errors
/// As [`cross_entropy`], and [`Error::Shape`] unless there are exactly two channels.
pub fn hard_dice(probs: &Tensor, target: &Tensor) -> Result<HardDice> {
    let (loss, scores) = hard_dice_scores(probs, target)?;
    let v = scores.to_vec()?;
    Ok(HardDice { loss, dice: v[1], iou: v[2] })
}

/// [`hard_dice`] without reading anything: the loss and its scores `[1 - dice, dice, iou]` as a
/// `(3)` tensor on the probabilities' device, so that a training step can read them together
/// with its other scalars in one transfer.
///
/// # Shapes
/// `probs: (N, D, H, W, 2)`, `target: (N, D, H, W)` of 0/1 -> (scalar, `(3)`).
///
/// # Errors
/// As [`hard_dice`].
pub fn hard_dice_scores(probs: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor)> {
    let op = "hard_dice";
    let (c, dev) = check_target_shape(op, probs, target)?;
    if c != 2 {
        return Err(Error::shape(op, "two-class probabilities (N, D, H, W, 2)", probs.dims()));
    }
    if dev.is_cuda() {
        return hard_dice_cuda(probs, target);
    }
    let ids = class_ids(op, target, c, false)?;
    let [inter, sr, sg] = k::hard_dice_sums(cpu(op, probs)?, &ids, c);
    let union = sr + sg + 2e-6;
    let dice = 2.0 * inter / union;
    let iou = inter / (union - inter);
    let out = Tensor::scalar((1.0 - dice) as f32);
    let scores = Tensor::from_vec(vec![(1.0 - dice) as f32, dice as f32, iou as f32], [3])?;
    let p = probs.clone();
    let loss = record(op, out, &[probs], move |g| {
        let up = f64::from(upstream(op, g)?);
        let (a, b) = ((2.0 * up / union) as f32, (-4.0 * up * inter / (union * union)) as f32);
        let gp = k::two_channel_grad(cpu(op, &p)?, &ids, c, |gv, p1| {
            let dd = a * gv + b * p1;
            (dd, -dd)
        });
        Ok(vec![Some(Tensor::from_vec(gp, p.shape())?)])
    });
    Ok((loss, scores))
}

/// [`hard_dice_scores`] on a GPU: the counts, the loss, Dice and IoU in two launches, nothing
/// read; the backward runs on the GPU.
fn hard_dice_cuda(probs: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor)> {
    let op = "hard_dice";
    let (loss, all, sums) = cu::hard_dice(probs, target)?;
    let (p, t) = (probs.clone(), target.clone());
    let loss = record(op, loss, &[probs], move |g| {
        Ok(vec![Some(cu::hard_dice_backward(&p, &t, &sums, g)?)])
    });
    Ok((loss, all))
}

/// Dice loss plus `dce_w` times the weighted NLL on probabilities: the soft Dice when `soft`,
/// else the original's hard Dice with its hand-made gradient.
///
/// # Shapes
/// `probs: (N, D, H, W, 2)` (or `C >= 2` when `soft`), `target: (N, D, H, W)` -> scalar.
///
/// # Errors
/// Those of [`soft_dice`] / [`hard_dice`] and [`nll_probs`].
pub fn dice_ce(
    probs: &Tensor,
    target: &Tensor,
    weight: Option<&[f32]>,
    dce_w: f32,
    soft: bool,
) -> Result<Tensor> {
    let dice = if soft { soft_dice(probs, target)? } else { hard_dice_scores(probs, target)?.0 };
    let ce = nll_probs(probs, target, weight)?;
    crate::ops::add(&dice, &crate::ops::scale(&ce, dce_w)?)
}
