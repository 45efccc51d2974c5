//! Batch norm and group norm over channels-last activations.
//!
//! Both are "normalise with per-channel statistics, then a per-channel affine map", so they share
//! the kernels of `backend::cpu::norm`; they differ only in which voxels a statistic covers (the
//! whole batch per channel, or one sample per group of contiguous channels). Each op checks its
//! shapes once, runs the CPU kernels or the `backend::cuda::norm` launchers by device, and records
//! one backward closure over what the forward saved on that device.

use super::{as_rows5, channels, data, device_of, inputs, like};
use crate::autograd::{needs_grad, record};
use crate::backend::cpu::norm::{self as k, BwdCoef};
use crate::backend::cuda::norm::{self as cu, NormSaved};
use crate::backend::norm::{BatchStats, RunningStats};
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// What a norm's forward keeps for its backward, by device.
enum Saved {
    /// Batch norm on the CPU: per-channel mean, 1/std, the folded scale `invstd * weight`, and
    /// whether the statistics were the batch's (their gradient flows) or stored.
    CpuBatch { mean: Vec<f32>, invstd: Vec<f32>, a: Vec<f32>, batch: bool, rows: usize },
    /// Group norm on the CPU: per-sample, per-channel mean and 1/std, and the weight.
    CpuGroup { groups: usize, mean: Vec<f32>, invstd: Vec<f32>, w: Vec<f32> },
    /// Either norm on a GPU: the 5-D view of `x` the launcher saw, its saved statistics, and the
    /// group count of a group norm (`None`: batch norm).
    Cuda { x5: Tensor, saved: NormSaved, groups: Option<usize> },
}

/// Checks an optional per-channel parameter's shape.
fn check_affine(op: &'static str, p: Option<&Tensor>, c: usize) -> Result<()> {
    match p {
        Some(t) if t.dims() != [c] => {
            Err(Error::shape(op, format!("[{c}] (one value per channel)"), t.dims()))
        }
        _ => Ok(()),
    }
}

/// The values of an optional per-channel parameter on the CPU (`default` when absent).
fn affine_values(op: &'static str, p: Option<&Tensor>, c: usize, default: f32) -> Result<Vec<f32>> {
    match p {
        None => Ok(vec![default; c]),
        Some(t) => Ok(data(op, t)?.to_vec()),
    }
}

fn check_running(rs: &RunningStats, c: usize) -> Result<()> {
    if rs.mean.dims() != [c] || rs.var.dims() != [c] {
        let got = format!("mean {:?}, var {:?}", rs.mean.dims(), rs.var.dims());
        return Err(Error::shape("batch_norm", format!("running stats of [{c}]"), got));
    }
    Ok(())
}

/// Batch norm per channel over all other axes: `(x - mean) / sqrt(var + eps) * weight + bias`,
/// with the batch's mean and biased variance ([`BatchStats::Batch`], which also moves `running`
/// towards the batch's mean and *unbiased* variance as PyTorch does) or stored running
/// statistics ([`BatchStats::Running`]). Differentiable in `x`, `weight` and `bias`. Running
/// statistics live on the device of `x`.
///
/// # Shapes
/// `x: (N, D, H, W, C)` (any rank >= 2, channels last), `weight`, `bias`: `(C)` -> shape of `x`.
///
/// # Errors
/// [`Error::Shape`] for parameters or running stats that are not `(C)`; [`Error::Arg`] when batch
/// statistics are asked of a single value per channel (PyTorch refuses it too).
pub fn batch_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    stats: BatchStats<'_>,
    eps: f32,
) -> Result<Tensor> {
    let op = "batch_norm";
    let ins = inputs(&[x], &[weight, bias]);
    let mut all = ins.clone();
    let running: Option<&RunningStats> = match &stats {
        BatchStats::Batch { running } => running.as_deref(),
        BatchStats::Running(r) => Some(r),
    };
    if let Some(r) = running {
        all.extend([&r.mean, &r.var]);
    }
    let dev = device_of(op, &all)?;
    if x.rank() < 2 {
        return Err(Error::shape(op, "(N, D, H, W, C)", x.dims()));
    }
    let c = channels(op, x)?;
    check_affine(op, weight, c)?;
    check_affine(op, bias, c)?;
    if let Some(r) = running {
        check_running(r, c)?;
    }
    let rows = x.numel().checked_div(c).unwrap_or(0);
    if matches!(stats, BatchStats::Batch { .. }) && rows < 2 {
        return Err(Error::arg(
            op,
            format!("batch statistics need more than 1 value per channel, x is {:?}", x.dims()),
        ));
    }
    let (out, saved) = match dev {
        Device::Cpu => batch_norm_cpu(x, weight, bias, stats, eps, c)?,
        Device::Cuda(_) => {
            let x5 = if x.rank() == 5 { x.clone() } else { as_rows5(x)? };
            let (out5, saved) = cu::batch_norm(&x5, weight, bias, stats, eps)?;
            (out5.reshape_detached(x.shape())?, Saved::Cuda { x5, saved, groups: None })
        }
    };
    if !needs_grad(&ins) {
        return Ok(out);
    }
    Ok(record_norm(op, out, &ins, x, weight, bias.is_some(), saved))
}

/// Records the backward of a norm over what its forward saved: the CPU batch- or group-norm
/// gradient, or the matching CUDA launcher. One closure for both norms and both devices.
fn record_norm(
    op: &'static str,
    out: Tensor,
    ins: &[&Tensor],
    x: &Tensor,
    weight: Option<&Tensor>,
    has_b: bool,
    saved: Saved,
) -> Tensor {
    let (sx, sw) = (x.clone(), weight.cloned());
    record(op, out, ins, move |g| {
        let (gx, gw, gb) = match &saved {
            Saved::CpuBatch { mean, invstd, a, batch, rows } => {
                batch_norm_cpu_bwd(&sx, g, mean, invstd, a, *batch, *rows)?
            }
            Saved::CpuGroup { groups, mean, invstd, w } => {
                group_norm_cpu_bwd(&sx, g, *groups, mean, invstd, w)?
            }
            Saved::Cuda { x5, saved, groups } => {
                let g5 = g.reshape_detached(x5.shape())?;
                let (gx, gw, gb) = match groups {
                    None => cu::batch_norm_backward(x5, sw.as_ref(), &g5, saved)?,
                    Some(n) => cu::group_norm_backward(x5, *n, sw.as_ref(), &g5, saved)?,
                };
                let gx = sx.tracks_grad().then(|| gx.reshape_detached(g.shape())).transpose()?;
                (gx, gw, gb)
            }
        };
        let mut grads = vec![gx];
        grads.extend(sw.is_some().then_some(Some(gw)));
        grads.extend(has_b.then_some(Some(gb)));
        Ok(grads)
    })
}

/// The CPU backward of [`batch_norm`]: gradients of `x` (when it tracks them), weight and bias.
fn batch_norm_cpu_bwd(
    sx: &Tensor,
    g: &Tensor,
    mean: &[f32],
    invstd: &[f32],
    a: &[f32],
    batch: bool,
    rows: usize,
) -> Result<(Option<Tensor>, Tensor, Tensor)> {
    let op = "batch_norm";
    let c = a.len();
    let (xs, gs) = (data(op, sx)?, data(op, g)?);
    let (sum_g, sum_gx) = k::channel_grad_sums(xs, gs, c, mean, invstd);
    let gx = if sx.tracks_grad() {
        let m = rows as f64;
        let zero = vec![0.0f32; c];
        let (k2, k3): (Vec<f32>, Vec<f32>) = if batch {
            (0..c)
                .map(|ch| {
                    let w = f64::from(a[ch]);
                    ((-w * sum_gx[ch] / m) as f32, (-w * sum_g[ch] / m) as f32)
                })
                .unzip()
        } else {
            (zero.clone(), zero)
        };
        let coef = BwdCoef { mean, invstd, k1: a, k2: &k2, k3: &k3 };
        Some(like(k::channel_bwd(xs, gs, c, &coef), sx)?)
    } else {
        None
    };
    Ok((gx, Tensor::from_vec(to_f32(&sum_gx), [c])?, Tensor::from_vec(to_f32(&sum_g), [c])?))
}

/// The CPU forward of [`batch_norm`] (shapes already checked).
fn batch_norm_cpu(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    stats: BatchStats<'_>,
    eps: f32,
    c: usize,
) -> Result<(Tensor, Saved)> {
    let op = "batch_norm";
    let w = affine_values(op, weight, c, 1.0)?;
    let b = affine_values(op, bias, c, 0.0)?;
    let xs = data(op, x)?;
    let rows = xs.len().checked_div(c).unwrap_or(0);
    let (mean, var, batch) = match stats {
        BatchStats::Batch { running } => {
            let (mean, var) = k::channel_mean_var(xs, c);
            if let Some(rs) = running {
                update_running(rs, &mean, &var, rows, c)?;
            }
            (mean, var, true)
        }
        BatchStats::Running(rs) => {
            let (m, v) = (data(op, &rs.mean)?, data(op, &rs.var)?);
            (
                m.iter().map(|&a| f64::from(a)).collect(),
                v.iter().map(|&a| f64::from(a)).collect(),
                false,
            )
        }
    };
    let invstd64: Vec<f64> = var.iter().map(|v| 1.0 / (v + f64::from(eps)).sqrt()).collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let invstd: Vec<f32> = invstd64.iter().map(|&s| s as f32).collect();
    let a: Vec<f32> = invstd64.iter().zip(&w).map(|(s, &wc)| (s * f64::from(wc)) as f32).collect();
    let out = like(k::channel_affine(xs, c, &mean, &a, &b), x)?;
    Ok((out, Saved::CpuBatch { mean, invstd, a, batch, rows }))
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&a| a as f32).collect()
}

/// PyTorch's update: `running = (1 - m) * running + m * batch`, with the unbiased variance.
fn update_running(
    rs: &mut RunningStats,
    mean: &[f64],
    var: &[f64],
    rows: usize,
    c: usize,
) -> Result<()> {
    check_running(rs, c)?;
    let (rm, rv) = (data("batch_norm", &rs.mean)?, data("batch_norm", &rs.var)?);
    let m = f64::from(rs.momentum);
    let unbias = rows as f64 / (rows as f64 - 1.0);
    let new_mean: Vec<f32> =
        rm.iter().zip(mean).map(|(&o, &b)| ((1.0 - m) * f64::from(o) + m * b) as f32).collect();
    let new_var: Vec<f32> = rv
        .iter()
        .zip(var)
        .map(|(&o, &b)| ((1.0 - m) * f64::from(o) + m * b * unbias) as f32)
        .collect();
    rs.mean = Tensor::from_vec(new_mean, [c])?;
    rs.var = Tensor::from_vec(new_var, [c])?;
    Ok(())
}

/// Group norm: the channels split into `groups` groups of contiguous channels, each normalised
/// per sample over its channels and voxels (biased variance), then the per-channel affine map.
/// Differentiable in `x`, `weight` and `bias`.
///
/// # Shapes
/// `x: (N, D, H, W, C)` (any rank >= 2, samples first, channels last) with `C % groups == 0`,
/// `weight`, `bias`: `(C)` -> shape of `x`.
///
/// # Errors
/// [`Error::Shape`] when `groups` does not divide `C` or a parameter is not `(C)`.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<Tensor> {
    let op = "group_norm";
    let ins = inputs(&[x], &[weight, bias]);
    let dev = device_of(op, &ins)?;
    if x.rank() < 2 {
        return Err(Error::shape(op, "(N, D, H, W, C)", x.dims()));
    }
    let c = channels(op, x)?;
    if groups == 0 || c % groups != 0 {
        return Err(Error::shape(op, format!("channels divisible by {groups} groups"), x.dims()));
    }
    check_affine(op, weight, c)?;
    check_affine(op, bias, c)?;
    let n = x.dims()[0];
    let (out, saved) = match dev {
        Device::Cpu => group_norm_cpu(x, groups, weight, bias, eps, c)?,
        Device::Cuda(_) => {
            let x5 = if x.rank() == 5 {
                x.clone()
            } else {
                let rows = x.numel().checked_div(n * c).unwrap_or(0);
                x.reshape_detached([n, 1, 1, rows, c])?
            };
            let (out5, saved) = cu::group_norm(&x5, groups, weight, bias, eps)?;
            (out5.reshape_detached(x.shape())?, Saved::Cuda { x5, saved, groups: Some(groups) })
        }
    };
    if !needs_grad(&ins) {
        return Ok(out);
    }
    Ok(record_norm(op, out, &ins, x, weight, bias.is_some(), saved))
}

/// The CPU forward of [`group_norm`] (shapes already checked).
fn group_norm_cpu(
    x: &Tensor,
    groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
    c: usize,
) -> Result<(Tensor, Saved)> {
    let op = "group_norm";
    let w = affine_values(op, weight, c, 1.0)?;
    let b = affine_values(op, bias, c, 0.0)?;
    let n = x.dims()[0];
    let xs = data(op, x)?;
    let per = xs.len().checked_div(n).unwrap_or(0);
    let cg = c / groups;

    // Per sample: channel stats pooled into group stats, expanded back to one value per channel.
    let mut mean = vec![0.0f32; n * c];
    let mut invstd = vec![0.0f32; n * c];
    let mut out = Vec::with_capacity(xs.len());
    for s in 0..n {
        let xn = &xs[s * per..(s + 1) * per];
        let (cm, cv) = k::channel_mean_var(xn, c);
        for gi in 0..groups {
            let span = gi * cg..(gi + 1) * cg;
            let gm = cm[span.clone()].iter().sum::<f64>() / cg as f64;
            let gv = span.clone().map(|ch| cv[ch] + (cm[ch] - gm).powi(2)).sum::<f64>() / cg as f64;
            let is = 1.0 / (gv + f64::from(eps)).sqrt();
            for ch in span {
                mean[s * c + ch] = gm as f32;
                invstd[s * c + ch] = is as f32;
            }
        }
        let ms = &mean[s * c..(s + 1) * c];
        let a: Vec<f32> = (0..c).map(|ch| invstd[s * c + ch] * w[ch]).collect();
        out.extend(k::channel_affine(xn, c, ms, &a, &b));
    }
    Ok((like(out, x)?, Saved::CpuGroup { groups, mean, invstd, w }))
}

/// The CPU backward of [`group_norm`]: gradients of `x` (when it tracks them), weight and bias.
fn group_norm_cpu_bwd(
    sx: &Tensor,
    g: &Tensor,
    groups: usize,
    mean: &[f32],
    invstd: &[f32],
    w: &[f32],
) -> Result<(Option<Tensor>, Tensor, Tensor)> {
    let op = "group_norm";
    let c = w.len();
    let n = sx.dims()[0];
    let cg = c / groups;
    let (xs, gs) = (data(op, sx)?, data(op, g)?);
    let per = xs.len().checked_div(n).unwrap_or(0);
    let mut gx = Vec::with_capacity(if sx.tracks_grad() { xs.len() } else { 0 });
    let (mut gw, mut gb) = (vec![0.0f64; c], vec![0.0f64; c]);
    let k_count = (per / c.max(1) * cg) as f64;
    for s in 0..n {
        let span = s * per..(s + 1) * per;
        let (xn, gn) = (&xs[span.clone()], &gs[span]);
        let (ms, is) = (&mean[s * c..(s + 1) * c], &invstd[s * c..(s + 1) * c]);
        let (sum_g, sum_gx) = k::channel_grad_sums(xn, gn, c, ms, is);
        for ch in 0..c {
            gb[ch] += sum_g[ch];
            gw[ch] += sum_gx[ch];
        }
        if !sx.tracks_grad() {
            continue;
        }
        // dx = invstd * (w g - mean_group(w g) - xhat * mean_group(w g xhat)).
        let (mut k1, mut k2, mut k3) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        for gi in 0..groups {
            let chans = gi * cg..(gi + 1) * cg;
            let sg: f64 = chans.clone().map(|ch| f64::from(w[ch]) * sum_g[ch]).sum();
            let sgx: f64 = chans.clone().map(|ch| f64::from(w[ch]) * sum_gx[ch]).sum();
            let inv = f64::from(is[gi * cg]);
            for ch in chans {
                k1[ch] = (inv * f64::from(w[ch])) as f32;
                k2[ch] = (-inv * sgx / k_count) as f32;
                k3[ch] = (-inv * sg / k_count) as f32;
            }
        }
        let coef = BwdCoef { mean: ms, invstd: is, k1: &k1, k2: &k2, k3: &k3 };
        gx.extend(k::channel_bwd(xn, gn, c, &coef));
    }
    let gx = if sx.tracks_grad() { Some(like(gx, sx)?) } else { None };
    Ok((gx, Tensor::from_vec(to_f32(&gw), [c])?, Tensor::from_vec(to_f32(&gb), [c])?))
}
