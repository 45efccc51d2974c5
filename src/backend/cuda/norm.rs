//! Launchers for `kernels/norm.cu`: batch norm (batch statistics with the running update, or
//! running statistics) and group norm, forward and backward. Same semantics as
//! `crate::ops::{batch_norm, group_norm}`; the running variance is updated with the unbiased batch
//! variance, as PyTorch does.

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

use super::launch::{self, grid_1d, grid_channels, grid_exact, int, kernel_name, long, Pass};
use super::{alloc, common_gpu, f32_slice, wrap, zeros, Gpu};
use crate::backend::norm::{BatchStats, RunningStats};
use crate::tensor::Tensor;
use crate::{Error, Result};

const STEM: &str = "norm";
const BN: &str = "batch_norm";
const GN: &str = "group_norm";

/// What the backward of a norm needs from its forward: the statistics used, `mean` and
/// `invstd = 1 / sqrt(var + eps)`, per channel (batch norm, `(C)`) or per sample and group (group
/// norm, `(N, G)`), and whether they were batch statistics.
pub struct NormSaved {
    pub mean: Tensor,
    pub invstd: Tensor,
    pub batch: bool,
}

fn nullable<'a>(t: Option<&'a Tensor>, op: &'static str) -> Result<Option<&'a CudaSlice<f32>>> {
    t.map(|t| f32_slice(op, t)).transpose()
}

fn check_param(op: &'static str, t: Option<&Tensor>, c: usize, what: &str) -> Result<()> {
    match t {
        Some(t) if t.numel() != c => Err(Error::shape(op, format!("{what} ({c})"), t.dims())),
        _ => Ok(()),
    }
}

fn layout(op: &'static str, x: &Tensor) -> Result<(usize, usize, usize)> {
    let d = x.shape().ndhwc().ok_or_else(|| Error::shape(op, "(N, D, H, W, C)", x.dims()))?;
    Ok((d[0], d[1] * d[2] * d[3], d[4]))
}

/// out = x * scale + shift (norm_apply_fwd_f32).
fn apply(
    gpu: &Gpu,
    op: &'static str,
    x: &Tensor,
    scale: &CudaSlice<f32>,
    shift: &CudaSlice<f32>,
    per_sample_vox: usize,
) -> Result<Tensor> {
    let c = x.dims().last().copied().unwrap_or(1);
    let name = kernel_name("norm_apply", Pass::Fwd, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let n = x.numel();
    let (nl, ci, vl) = (long(n), int(op, c)?, long(per_sample_vox));
    let mut out = alloc(gpu, n)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&nl).arg(&ci).arg(&vl).arg(f32_slice(op, x)?).arg(scale).arg(shift).arg(&mut out);
        // SAFETY: norm_apply_fwd_f32(n, c, vox, x, scale, shift, out): x and out hold n;
        // scale/shift hold c (vox == 0) or N * c (indexed by the sample i / c / vox < N); all n
        // are written.
        unsafe { launch::launch(gpu, &name, &mut b, grid_1d(gpu, n))? };
    }
    wrap(gpu, out, x.shape())
}

/// Batch norm over `(N, D, H, W, C)` per channel: `BatchStats::Batch` normalises with the batch
/// statistics and, when given running statistics, replaces them by the updated ones;
/// `BatchStats::Running` normalises with the running statistics.
pub fn batch_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    stats: BatchStats<'_>,
    eps: f32,
) -> Result<(Tensor, NormSaved)> {
    let (_, _, c) = layout(BN, x)?;
    check_param(BN, weight, c, "weight")?;
    check_param(BN, bias, c, "bias")?;
    let gpu = common_gpu(BN, &[x])?;
    let rows = x.numel() / c;
    let (rl, ci) = (long(rows), int(BN, c)?);
    let sx = f32_slice(BN, x)?;

    let (use_running, running, momentum): (bool, Option<&mut RunningStats>, f32);
    let (rmean, rvar): (Tensor, Tensor);
    match stats {
        BatchStats::Batch { running: r } => {
            use_running = false;
            momentum = r.as_ref().map(|r| r.momentum).unwrap_or(0.0);
            match r.as_ref() {
                Some(r) => {
                    check_param(BN, Some(&r.mean), c, "running mean")?;
                    check_param(BN, Some(&r.var), c, "running var")?;
                    (rmean, rvar) = (r.mean.clone(), r.var.clone());
                }
                None => {
                    let z = super::elementwise::full([c], 0.0, gpu.ordinal)?;
                    (rmean, rvar) = (z.clone(), z);
                }
            }
            running = r;
        }
        BatchStats::Running(r) => {
            check_param(BN, Some(&r.mean), c, "running mean")?;
            check_param(BN, Some(&r.var), c, "running var")?;
            (use_running, running, momentum) = (true, None, 0.0);
            (rmean, rvar) = (r.mean.clone(), r.var.clone());
        }
    }
    let (srm, srv) = (f32_slice(BN, &rmean)?, f32_slice(BN, &rvar)?);

    // Pass 1 and 2: channel sums, then squared deviations from the mean.
    let mut sum = zeros(&gpu, c)?;
    let mut m2 = zeros(&gpu, c)?;
    if !use_running {
        let name = kernel_name("sum_channels", Pass::Fwd, None, "f32");
        let f = gpu.function("reduce", &name)?;
        {
            let mut b = gpu.stream.launch_builder(&f);
            b.arg(&rl).arg(&ci).arg(sx).arg(&mut sum);
            // SAFETY: sum_channels_fwd_f32(rows, c, x, sum): x is (rows, c), sum c zeros.
            unsafe { launch::launch(&gpu, &name, &mut b, grid_channels(&gpu, rows, c))? };
        }
        let name = kernel_name(BN, Pass::Fwd, Some("var"), "f32");
        let f = gpu.function(STEM, &name)?;
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&rl).arg(&ci).arg(sx).arg(&sum).arg(&mut m2);
        // SAFETY: batch_norm_fwd_var_f32(rows, c, x, sum, m2): x (rows, c), sum and m2 (c), m2
        // zeroed for accumulation.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_channels(&gpu, rows, c))? };
    }

    // Per-channel affine, saved statistics and the running update.
    let mut scale = alloc(&gpu, c)?;
    let mut shift = alloc(&gpu, c)?;
    let mut mean = alloc(&gpu, c)?;
    let mut invstd = alloc(&gpu, c)?;
    let update = running.is_some();
    let mut new_rm = if update { Some(alloc(&gpu, c)?) } else { None };
    let mut new_rv = if update { Some(alloc(&gpu, c)?) } else { None };
    {
        let name = kernel_name(BN, Pass::Fwd, Some("affine"), "f32");
        let f = gpu.function(STEM, &name)?;
        let ur = i32::from(use_running);
        let null: u64 = 0;
        let (sw, sb) = (nullable(weight, BN)?, nullable(bias, BN)?);
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&ci).arg(&rl).arg(&ur).arg(&eps).arg(&momentum);
        b.arg(&sum).arg(&m2).arg(srm).arg(srv);
        match sw {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        match sb {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        b.arg(&mut scale).arg(&mut shift).arg(&mut mean).arg(&mut invstd);
        match new_rm.as_mut() {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        match new_rv.as_mut() {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        // SAFETY: batch_norm_fwd_affine_f32 (c, rows, use_running, eps, momentum, sum, m2, rmean,
        // rvar, weight, bias, scale, shift, mean, invstd, rmean_out, rvar_out): every buffer holds
        // c floats or is null where the kernel allows it; one thread per channel writes them.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_exact(c))? };
    }
    if let (Some(r), Some(rm), Some(rv)) = (running, new_rm, new_rv) {
        r.mean = wrap(&gpu, rm, r.mean.shape())?;
        r.var = wrap(&gpu, rv, r.var.shape())?;
    }
    let out = apply(&gpu, BN, x, &scale, &shift, 0)?;
    let saved = NormSaved {
        mean: wrap(&gpu, mean, [c])?,
        invstd: wrap(&gpu, invstd, [c])?,
        batch: !use_running,
    };
    Ok((out, saved))
}

/// Gradients of [`batch_norm`]: `(grad_x, grad_weight, grad_bias)` (the last two `(C)`, returned
/// whether or not the norm is affine).
pub fn batch_norm_backward(
    x: &Tensor,
    weight: Option<&Tensor>,
    g: &Tensor,
    saved: &NormSaved,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, _, c) = layout(BN, x)?;
    check_param(BN, weight, c, "weight")?;
    if g.dims() != x.dims() {
        return Err(Error::shape(BN, x.dims(), g.dims()));
    }
    let gpu = common_gpu(BN, &[x, g, &saved.mean, &saved.invstd])?;
    let rows = x.numel() / c;
    let (rl, ci) = (long(rows), int(BN, c)?);
    let (sx, sg) = (f32_slice(BN, x)?, f32_slice(BN, g)?);
    let (smean, sinv) = (f32_slice(BN, &saved.mean)?, f32_slice(BN, &saved.invstd)?);

    let mut gsum = zeros(&gpu, c)?;
    let mut gxhat = zeros(&gpu, c)?;
    {
        let name = kernel_name(BN, Pass::BwdWeight, None, "f32");
        let f = gpu.function(STEM, &name)?;
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&rl).arg(&ci).arg(sx).arg(sg).arg(smean).arg(sinv).arg(&mut gsum).arg(&mut gxhat);
        // SAFETY: batch_norm_bwd_weight_f32(rows, c, x, g, mean, invstd, gsum, gxhat): x, g are
        // (rows, c); the four per-channel buffers hold c, the two outputs zeroed.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_channels(&gpu, rows, c))? };
    }
    let n = x.numel();
    let mut gx = alloc(&gpu, n)?;
    {
        let name = kernel_name(BN, Pass::BwdInput, None, "f32");
        let f = gpu.function(STEM, &name)?;
        let (nl, ur) = (long(n), i32::from(!saved.batch));
        let null: u64 = 0;
        let sw = nullable(weight, BN)?;
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&nl).arg(&ci).arg(&rl).arg(&ur).arg(sx).arg(sg);
        match sw {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        b.arg(smean).arg(sinv).arg(&gsum).arg(&gxhat).arg(&mut gx);
        // SAFETY: batch_norm_bwd_input_f32(n, c, rows, use_running, x, g, weight, mean, invstd,
        // gsum, gxhat, gx): x, g, gx hold n = rows * c; the rest c or null weight; all n written.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, n))? };
    }
    Ok((wrap(&gpu, gx, x.shape())?, wrap(&gpu, gxhat, [c])?, wrap(&gpu, gsum, [c])?))
}

fn group_grid(gpu: &Gpu, count: usize, stats: usize) -> Result<LaunchConfig> {
    if stats > 65535 {
        return Err(Error::arg(GN, format!("{stats} (sample, group) statistics exceed one grid")));
    }
    launch::grid_rows(gpu, count, stats)
}

fn group_check(x: &Tensor, groups: usize) -> Result<(usize, usize, usize)> {
    let (n, vox, c) = layout(GN, x)?;
    if groups == 0 || c % groups != 0 {
        return Err(Error::arg(GN, format!("{c} channels do not split into {groups} groups")));
    }
    Ok((n, vox, c))
}

/// Group norm over `(N, D, H, W, C)`: statistics per sample and group of `C / groups` channels.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<(Tensor, NormSaved)> {
    let (n, vox, c) = group_check(x, groups)?;
    check_param(GN, weight, c, "weight")?;
    check_param(GN, bias, c, "bias")?;
    let gpu = common_gpu(GN, &[x])?;
    let stats = n * groups;
    let count = vox * (c / groups);
    let (vl, ci, gi) = (long(vox), int(GN, c)?, int(GN, groups)?);
    let sx = f32_slice(GN, x)?;
    let mut sum = zeros(&gpu, stats)?;
    let mut m2 = zeros(&gpu, stats)?;
    let name = kernel_name(GN, Pass::Fwd, Some("stats"), "f32");
    let f = gpu.function(STEM, &name)?;
    for pass in [0i32, 1] {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&vl).arg(&ci).arg(&gi).arg(&pass).arg(sx).arg(&mut sum).arg(&mut m2);
        // SAFETY: group_norm_fwd_stats_f32(vox, c, groups, pass, x, sum, m2): x is (N, vox, c),
        // grid y = N * groups statistics, sum and m2 hold N * groups zeroed floats.
        unsafe { launch::launch(&gpu, &name, &mut b, group_grid(&gpu, count, stats)?)? };
    }
    let mut scale = alloc(&gpu, n * c)?;
    let mut shift = alloc(&gpu, n * c)?;
    let mut mean = alloc(&gpu, stats)?;
    let mut invstd = alloc(&gpu, stats)?;
    {
        let name = kernel_name(GN, Pass::Fwd, Some("affine"), "f32");
        let f = gpu.function(STEM, &name)?;
        let ni = int(GN, n)?;
        let null: u64 = 0;
        let (sw, sb) = (nullable(weight, GN)?, nullable(bias, GN)?);
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&ni).arg(&ci).arg(&gi).arg(&vl).arg(&eps).arg(&sum).arg(&m2);
        match sw {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        match sb {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        b.arg(&mut scale).arg(&mut shift).arg(&mut mean).arg(&mut invstd);
        // SAFETY: group_norm_fwd_affine_f32(n, c, groups, vox, eps, sum, m2, weight, bias, scale,
        // shift, mean, invstd): one thread per (sample, channel) < n * c writes scale/shift
        // (n * c) and, for the first channel of each group, mean/invstd (n * groups).
        unsafe { launch::launch(&gpu, &name, &mut b, grid_exact(n * c))? };
    }
    let out = apply(&gpu, GN, x, &scale, &shift, vox)?;
    let saved = NormSaved {
        mean: wrap(&gpu, mean, [n, groups])?,
        invstd: wrap(&gpu, invstd, [n, groups])?,
        batch: true,
    };
    Ok((out, saved))
}

/// Gradients of [`group_norm`]: `(grad_x, grad_weight, grad_bias)`, the last two `(C)`.
pub fn group_norm_backward(
    x: &Tensor,
    groups: usize,
    weight: Option<&Tensor>,
    g: &Tensor,
    saved: &NormSaved,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, vox, c) = group_check(x, groups)?;
    check_param(GN, weight, c, "weight")?;
    if g.dims() != x.dims() {
        return Err(Error::shape(GN, x.dims(), g.dims()));
    }
    let gpu = common_gpu(GN, &[x, g, &saved.mean, &saved.invstd])?;
    let stats = n * groups;
    let (vl, ci, gi) = (long(vox), int(GN, c)?, int(GN, groups)?);
    let (sx, sg) = (f32_slice(GN, x)?, f32_slice(GN, g)?);
    let (smean, sinv) = (f32_slice(GN, &saved.mean)?, f32_slice(GN, &saved.invstd)?);
    let sw = nullable(weight, GN)?;
    let null: u64 = 0;

    let mut s1 = zeros(&gpu, stats)?;
    let mut s2 = zeros(&gpu, stats)?;
    {
        let name = kernel_name(GN, Pass::BwdInput, Some("stats"), "f32");
        let f = gpu.function(STEM, &name)?;
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&vl).arg(&ci).arg(&gi).arg(sx).arg(sg);
        match sw {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        b.arg(smean).arg(sinv).arg(&mut s1).arg(&mut s2);
        // SAFETY: group_norm_bwd_input_stats_f32(vox, c, groups, x, g, weight, mean, invstd, s1, s2):
        // x, g (N, vox, c); weight (c) or null; the rest N * groups, s1/s2 zeroed.
        unsafe {
            launch::launch(&gpu, &name, &mut b, group_grid(&gpu, vox * (c / groups), stats)?)?
        };
    }
    let total = x.numel();
    let mut gx = alloc(&gpu, total)?;
    {
        let name = kernel_name(GN, Pass::BwdInput, None, "f32");
        let f = gpu.function(STEM, &name)?;
        let tl = long(total);
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&tl).arg(&vl).arg(&ci).arg(&gi).arg(sx).arg(sg);
        match sw {
            Some(s) => b.arg(s),
            None => b.arg(&null),
        };
        b.arg(smean).arg(sinv).arg(&s1).arg(&s2).arg(&mut gx);
        // SAFETY: group_norm_bwd_input_f32(n, vox, c, groups, x, g, weight, mean, invstd, s1, s2,
        // gx): x, g, gx hold total = N * vox * c; statistics N * groups; all of gx written.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, total))? };
    }
    let rows = total / c;
    let mut gw = zeros(&gpu, c)?;
    let mut gb = zeros(&gpu, c)?;
    {
        let name = kernel_name(GN, Pass::BwdWeight, None, "f32");
        let f = gpu.function(STEM, &name)?;
        let rl = long(rows);
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&rl).arg(&vl).arg(&ci).arg(&gi).arg(sx).arg(sg).arg(smean).arg(sinv);
        b.arg(&mut gw).arg(&mut gb);
        // SAFETY: group_norm_bwd_weight_f32(rows, vox, c, groups, x, g, mean, invstd, gw, gb):
        // x, g (rows, c) with rows = N * vox so the sample r / vox < N; gw, gb c zeroed floats.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_channels(&gpu, rows, c))? };
    }
    Ok((wrap(&gpu, gx, x.shape())?, wrap(&gpu, gw, [c])?, wrap(&gpu, gb, [c])?))
}
