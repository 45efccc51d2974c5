//! Launchers for `kernels/loss.cu`: every training loss (cross entropy on logits, NLL on
//! probabilities, soft Dice, Dice + CE) as one fused pass producing five sums, a one-thread finish,
//! and a one-pass backward. Same semantics as `crate::loss` (targets are class ids stored as f32;
//! class weights give PyTorch's weighted mean; Dice on class 1 with the 1e-6 smoothing).

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::launch::{self, grid_1d, int, kernel_name, long, Pass};
use super::{alloc, common_gpu, cuda_err, f32_slice, wrap, zeros, Gpu};
use crate::tensor::{Shape, Tensor};
use crate::{Error, Result};

const STEM: &str = "loss";
const OP: &str = "dice_ce";
/// The kernels keep one voxel's class probabilities in registers (`float p[16]`).
const MAX_CLASSES: usize = 16;

/// Which loss: `dice_w * soft Dice + ce_w * (weighted) cross entropy`, on logits (softmax folded
/// in) or on probabilities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossSpec {
    pub dice_w: f32,
    pub ce_w: f32,
    pub logits: bool,
}

impl LossSpec {
    /// `cross_entropy(logits, target, weight)`.
    pub const CROSS_ENTROPY: LossSpec = LossSpec { dice_w: 0.0, ce_w: 1.0, logits: true };
    /// `nll_probs(probs, target, weight)`.
    pub const NLL_PROBS: LossSpec = LossSpec { dice_w: 0.0, ce_w: 1.0, logits: false };
    /// `soft_dice(probs, target)`.
    pub const SOFT_DICE: LossSpec = LossSpec { dice_w: 1.0, ce_w: 0.0, logits: false };

    /// `dice_ce(probs, target, weight, dce_w, soft = true)`.
    pub fn dice_ce(dce_w: f32) -> LossSpec {
        LossSpec { dice_w: 1.0, ce_w: dce_w, logits: false }
    }
}

fn check(
    x: &Tensor,
    target: &Tensor,
    weight: Option<&[f32]>,
    spec: LossSpec,
) -> Result<(usize, usize)> {
    let d = x.shape().ndhwc().ok_or_else(|| Error::shape(OP, "(N, D, H, W, C)", x.dims()))?;
    let c = d[4];
    if target.dims() != &d[..4] {
        return Err(Error::shape(OP, &d[..4], target.dims()));
    }
    if c == 0 || c > MAX_CLASSES {
        return Err(Error::arg(
            OP,
            format!("{c} classes; the CUDA loss supports 1 to {MAX_CLASSES}"),
        ));
    }
    if spec.dice_w != 0.0 && c < 2 {
        return Err(Error::arg(OP, "Dice needs at least 2 classes (foreground is class 1)"));
    }
    if let Some(w) = weight {
        if w.len() != c {
            return Err(Error::shape(OP, format!("{c} class weights"), w.len()));
        }
    }
    Ok((x.numel() / c, c))
}

fn upload_weight(gpu: &Gpu, weight: Option<&[f32]>) -> Result<Option<CudaSlice<f32>>> {
    weight
        .map(|w| {
            crate::tensor::count_transfer(true, std::mem::size_of_val(w));
            gpu.stream.clone_htod(w).map_err(cuda_err)
        })
        .transpose()
}

/// The five sums of loss.cu (`(5)`, on the GPU): sum w_t, sum -w_t log p_t, Dice intersection,
/// sum p_1, sum [t == 1].
pub fn loss_sums(
    x: &Tensor,
    target: &Tensor,
    weight: Option<&[f32]>,
    spec: LossSpec,
) -> Result<Tensor> {
    let (voxels, c) = check(x, target, weight, spec)?;
    let gpu = common_gpu(OP, &[x, target])?;
    let w = upload_weight(&gpu, weight)?;
    let name = kernel_name(OP, Pass::Fwd, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let (vl, ci, lg) = (long(voxels), int(OP, c)?, i32::from(spec.logits));
    let null: u64 = 0;
    let mut sums = zeros(&gpu, 5)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&vl).arg(&ci).arg(&lg).arg(f32_slice(OP, x)?).arg(f32_slice(OP, target)?);
        match w.as_ref() {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        b.arg(&mut sums);
        // SAFETY: dice_ce_fwd_f32(voxels, c, logits, x, target, weight, sums): x (voxels, c) with
        // c <= 16, target (voxels), weight (c) or null, sums 5 zeroed floats.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, voxels))? };
    }
    wrap(&gpu, sums, [5])
}

/// The loss of `spec` as a scalar tensor on the GPU, with the sums its backward needs.
/// Reading the value (`.item()`) is the one host synchronisation of a training step.
pub fn dice_ce(
    x: &Tensor,
    target: &Tensor,
    weight: Option<&[f32]>,
    spec: LossSpec,
) -> Result<(Tensor, Tensor)> {
    let sums = loss_sums(x, target, weight, spec)?;
    let gpu = common_gpu(OP, &[&sums])?;
    let name = kernel_name(OP, Pass::Fwd, Some("finish"), "f32");
    let f = gpu.function(STEM, &name)?;
    let mut out = alloc(&gpu, 3)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&spec.dice_w).arg(&spec.ce_w).arg(f32_slice(OP, &sums)?).arg(&mut out);
        // SAFETY: dice_ce_fwd_finish_f32(dice_w, ce_w, sums, out): sums holds 5, out 3 floats,
        // written by thread 0 of the single block.
        unsafe { launch::launch(&gpu, &name, &mut b, launch::grid_exact(1))? };
    }
    let all = wrap(&gpu, out, [3])?;
    // (loss, dice, ce): the loss goes on as its own scalar (a 4-byte device copy, no host sync).
    let loss = first_as_scalar(&gpu, &all)?;
    Ok((loss, sums))
}

fn first_as_scalar(gpu: &Gpu, all: &Tensor) -> Result<Tensor> {
    let src = f32_slice(OP, all)?;
    let mut one = alloc(gpu, 1)?;
    gpu.stream.memcpy_dtod(&src.slice(0..1), &mut one).map_err(cuda_err)?;
    wrap(gpu, one, Shape::scalar())
}

/// Gradient of [`dice_ce`] w.r.t. `x` (probabilities or logits, as `spec` says), scaled by the
/// upstream scalar gradient `gout` (a one-element GPU tensor, so no host sync).
pub fn dice_ce_backward(
    x: &Tensor,
    target: &Tensor,
    weight: Option<&[f32]>,
    sums: &Tensor,
    spec: LossSpec,
    gout: &Tensor,
) -> Result<Tensor> {
    let (voxels, c) = check(x, target, weight, spec)?;
    if sums.numel() != 5 || gout.numel() != 1 {
        let got = format!("sums {:?}, gradient {:?}", sums.dims(), gout.dims());
        return Err(Error::shape(OP, "sums (5) and a scalar gradient", got));
    }
    let gpu = common_gpu(OP, &[x, target, sums, gout])?;
    let w = upload_weight(&gpu, weight)?;
    let name = kernel_name(OP, Pass::BwdInput, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let (vl, ci, lg) = (long(voxels), int(OP, c)?, i32::from(spec.logits));
    let null: u64 = 0;
    let mut gx = alloc(&gpu, x.numel())?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&vl).arg(&ci).arg(&lg).arg(&spec.dice_w).arg(&spec.ce_w);
        b.arg(f32_slice(OP, x)?).arg(f32_slice(OP, target)?);
        match w.as_ref() {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        b.arg(f32_slice(OP, sums)?).arg(f32_slice(OP, gout)?).arg(&mut gx);
        // SAFETY: dice_ce_bwd_input_f32(voxels, c, logits, dice_w, ce_w, x, target, weight, sums,
        // gout, gx): x and gx (voxels, c) with c <= 16, target (voxels), weight (c) or null,
        // sums (5), gout (1); every element of gx is written.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, voxels))? };
    }
    wrap(&gpu, gx, x.shape())
}

// ---- the original project's hard Dice -----------------------------------------------------------

const HD: &str = "hard_dice";

/// The original's hard Dice on two-class probabilities `p (N, D, H, W, 2)` (any rank, channels
/// last) against class-id targets: the loss as a GPU scalar, `(loss, dice, iou)` as one `(3)` GPU
/// tensor (one read gives all three), and the counts `(3)` its backward needs.
///
/// # Errors
/// [`Error::Shape`] when `target` is not `p`'s shape without the channel axis.
pub fn hard_dice(p: &Tensor, target: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let c = p.dims().last().copied().unwrap_or(0);
    if c == 0 || target.numel() * c != p.numel() {
        return Err(Error::shape(HD, "target (N, D, H, W) for p (N, D, H, W, C)", target.dims()));
    }
    let gpu = common_gpu(HD, &[p, target])?;
    let voxels = target.numel();
    let (vl, ci) = (long(voxels), int(HD, c)?);
    let mut sums = zeros(&gpu, 3)?;
    let name = kernel_name(HD, Pass::Fwd, None, "f32");
    let f = gpu.function(STEM, &name)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&vl).arg(&ci).arg(f32_slice(HD, p)?).arg(f32_slice(HD, target)?).arg(&mut sums);
        // SAFETY: hard_dice_fwd_f32(voxels, c, p, target, sums): p (voxels, c), target (voxels),
        // sums 3 zeroed floats.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, voxels))? };
    }
    let name = kernel_name(HD, Pass::Fwd, Some("finish"), "f32");
    let f = gpu.function(STEM, &name)?;
    let mut out = alloc(&gpu, 3)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&sums).arg(&mut out);
        // SAFETY: hard_dice_fwd_finish_f32(sums, out): 3 floats each, written by one thread.
        unsafe { launch::launch(&gpu, &name, &mut b, launch::grid_exact(1))? };
    }
    let all = wrap(&gpu, out, [3])?;
    Ok((first_as_scalar(&gpu, &all)?, all, wrap(&gpu, sums, [3])?))
}

/// The hard Dice's hand-made gradient w.r.t. `p`, scaled by the GPU scalar `gout` (no host sync).
pub fn hard_dice_backward(
    p: &Tensor,
    target: &Tensor,
    sums: &Tensor,
    gout: &Tensor,
) -> Result<Tensor> {
    let c = p.dims().last().copied().unwrap_or(0);
    if c == 0 || target.numel() * c != p.numel() || sums.numel() != 3 || gout.numel() != 1 {
        let got =
            format!("p {:?}, target {:?}, gradient {:?}", p.dims(), target.dims(), gout.dims());
        return Err(Error::shape(HD, "matching p, target, 3 counts and a scalar gradient", got));
    }
    let gpu = common_gpu(HD, &[p, target, sums, gout])?;
    let voxels = target.numel();
    let (vl, ci) = (long(voxels), int(HD, c)?);
    let name = kernel_name(HD, Pass::BwdInput, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let mut gx = alloc(&gpu, p.numel())?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&vl).arg(&ci).arg(f32_slice(HD, p)?).arg(f32_slice(HD, target)?);
        b.arg(f32_slice(HD, sums)?).arg(f32_slice(HD, gout)?).arg(&mut gx);
        // SAFETY: hard_dice_bwd_input_f32(voxels, c, p, target, sums, gout, gx): p and gx
        // (voxels, c), target (voxels), sums (3), gout (1); every element of gx is written.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, voxels))? };
    }
    wrap(&gpu, gx, p.shape())
}
