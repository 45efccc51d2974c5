//! Batch norm and group norm over channels-last activations.
//!
//! Both are "normalise with per-channel statistics, then a per-channel affine map", so they share
//! the kernels of `backend::cpu::norm`; they differ only in which voxels a statistic covers (the
//! whole batch per channel, or one sample per group of contiguous channels).

use super::elementwise::{channels, data, like, shape_err};
use crate::autograd::record;
use crate::backend::cpu::norm::{self as k, BwdCoef};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Running mean and (unbiased) variance of a batch norm, updated in training.
#[derive(Clone, Debug)]
pub struct RunningStats {
    /// `(C)`
    pub mean: Tensor,
    /// `(C)`
    pub var: Tensor,
    /// PyTorch's momentum: `new = (1 - m) * old + m * batch`.
    pub momentum: f32,
}

impl RunningStats {
    /// PyTorch's initial state: mean 0, variance 1, for `c` channels.
    pub fn new(c: usize, momentum: f32) -> Self {
        let mean = Tensor::from_vec(vec![0.0; c], [c]).expect("c zeros fit shape [c]");
        let var = Tensor::from_vec(vec![1.0; c], [c]).expect("c ones fit shape [c]");
        RunningStats { mean, var, momentum }
    }
}

/// Which statistics a batch norm normalises with.
pub enum BatchStats<'a> {
    /// Batch statistics (training, and the V-Net's ContBatchNorm3d always); updates `running`
    /// when given.
    Batch { running: Option<&'a mut RunningStats> },
    /// Stored running statistics (eval mode of an ordinary BatchNorm3d).
    Running(&'a RunningStats),
}

/// Checks an optional per-channel parameter and returns its values (`default` when absent).
fn affine_param(op: &'static str, p: Option<&Tensor>, c: usize, default: f32) -> Result<Vec<f32>> {
    match p {
        None => Ok(vec![default; c]),
        Some(t) if t.dims() == [c] => Ok(data(op, t)?.to_vec()),
        Some(t) => Err(shape_err(op, format!("[{c}] (one value per channel)"), t.dims())),
    }
}

fn running_values(rs: &RunningStats, c: usize) -> Result<(&[f32], &[f32])> {
    let op = "batch_norm";
    if rs.mean.dims() != [c] || rs.var.dims() != [c] {
        let got = format!("mean {:?}, var {:?}", rs.mean.dims(), rs.var.dims());
        return Err(Error::Shape { op, expected: format!("running stats of [{c}]"), got });
    }
    Ok((data(op, &rs.mean)?, data(op, &rs.var)?))
}

/// Batch norm per channel over all other axes: `(x - mean) / sqrt(var + eps) * weight + bias`,
/// with the batch's mean and biased variance ([`BatchStats::Batch`], which also moves `running`
/// towards the batch's mean and *unbiased* variance as PyTorch does) or stored running
/// statistics ([`BatchStats::Running`]). Differentiable in `x`, `weight` and `bias`.
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
    if super::cuda::any_cuda(&[&[x], weight.as_slice(), bias.as_slice()].concat()) {
        return super::cuda::batch_norm(x, weight, bias, stats, eps);
    }
    if x.rank() < 2 {
        return Err(shape_err(op, "(N, D, H, W, C)", x.dims()));
    }
    let c = channels(op, x)?;
    let w = affine_param(op, weight, c, 1.0)?;
    let b = affine_param(op, bias, c, 0.0)?;
    let xs = data(op, x)?;
    let rows = xs.len().checked_div(c).unwrap_or(0);
    let (mean, var, batch) = match stats {
        BatchStats::Batch { running } => {
            if rows < 2 {
                return Err(Error::arg(
                    op,
                    format!(
                        "batch statistics need more than 1 value per channel, x is {:?}",
                        x.dims()
                    ),
                ));
            }
            let (mean, var) = k::channel_mean_var(xs, c);
            if let Some(rs) = running {
                update_running(rs, &mean, &var, rows, c)?;
            }
            (mean, var, true)
        }
        BatchStats::Running(rs) => {
            let (m, v) = running_values(rs, c)?;
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

    let (sx, sw, sb) = (x.clone(), weight.cloned(), bias.cloned());
    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    Ok(record(op, out, &inputs, move |g| {
        let (xs, gs) = (data(op, &sx)?, data(op, g)?);
        let (sum_g, sum_gx) = k::channel_grad_sums(xs, gs, c, &mean, &invstd);
        let mut grads = vec![None];
        if sx.tracks_grad() {
            let m = rows as f64;
            let ws: Vec<f64> = (0..c).map(|ch| f64::from(a[ch])).collect();
            let zero = vec![0.0f32; c];
            let (k2, k3): (Vec<f32>, Vec<f32>) = if batch {
                (0..c)
                    .map(|ch| ((-ws[ch] * sum_gx[ch] / m) as f32, (-ws[ch] * sum_g[ch] / m) as f32))
                    .unzip()
            } else {
                (zero.clone(), zero)
            };
            let coef = BwdCoef { mean: &mean, invstd: &invstd, k1: &a, k2: &k2, k3: &k3 };
            grads[0] = Some(like(k::channel_bwd(xs, gs, c, &coef), &sx)?);
        }
        if let Some(t) = &sw {
            grads.push(Some(Tensor::from_vec(to_f32(&sum_gx), t.shape())?));
        }
        if let Some(t) = &sb {
            grads.push(Some(Tensor::from_vec(to_f32(&sum_g), t.shape())?));
        }
        Ok(grads)
    }))
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
    let (rm, rv) = running_values(rs, c)?;
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
    if super::cuda::any_cuda(&[&[x], weight.as_slice(), bias.as_slice()].concat()) {
        return super::cuda::group_norm(x, groups, weight, bias, eps);
    }
    if x.rank() < 2 {
        return Err(shape_err(op, "(N, D, H, W, C)", x.dims()));
    }
    let c = channels(op, x)?;
    if groups == 0 || c % groups != 0 {
        return Err(shape_err(op, format!("channels divisible by {groups} groups"), x.dims()));
    }
    let w = affine_param(op, weight, c, 1.0)?;
    let b = affine_param(op, bias, c, 0.0)?;
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
    let out = like(out, x)?;

    let (sx, sw, sb) = (x.clone(), weight.cloned(), bias.cloned());
    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    Ok(record(op, out, &inputs, move |g| {
        let (xs, gs) = (data(op, &sx)?, data(op, g)?);
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
        let mut grads = vec![if sx.tracks_grad() { Some(like(gx, &sx)?) } else { None }];
        if let Some(t) = &sw {
            grads.push(Some(Tensor::from_vec(to_f32(&gw), t.shape())?));
        }
        if let Some(t) = &sb {
            grads.push(Some(Tensor::from_vec(to_f32(&gb), t.shape())?));
        }
        Ok(grads)
    }))
}
