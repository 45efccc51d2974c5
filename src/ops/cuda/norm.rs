//! Batch norm and group norm on the GPU (`backend::cuda::norm`). The launchers want 5-D
//! activations; other ranks are viewed as 5-D without a copy (`(1, 1, 1, rows, C)` for batch norm,
//! `(N, 1, 1, rows, C)` for group norm), which covers the same voxels per statistic.

use super::{as_rows5, channels, grad_on, same_device, shape_err};
use crate::autograd::{needs_grad, record};
use crate::backend::cuda::norm as k;
use crate::ops::{BatchStats, RunningStats};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// The CPU op's check of an optional per-channel parameter.
fn affine_param(op: &'static str, p: Option<&Tensor>, c: usize) -> Result<()> {
    match p {
        Some(t) if t.dims() != [c] => {
            Err(shape_err(op, format!("[{c}] (one value per channel)"), t.dims()))
        }
        _ => Ok(()),
    }
}

fn running_ok(rs: &RunningStats, c: usize) -> Result<()> {
    if rs.mean.dims() != [c] || rs.var.dims() != [c] {
        let got = format!("mean {:?}, var {:?}", rs.mean.dims(), rs.var.dims());
        return Err(Error::Shape {
            op: "batch_norm",
            expected: format!("running stats of [{c}]"),
            got,
        });
    }
    Ok(())
}

fn inputs<'a>(x: &'a Tensor, w: Option<&'a Tensor>, b: Option<&'a Tensor>) -> Vec<&'a Tensor> {
    let mut v = vec![x];
    v.extend(w);
    v.extend(b);
    v
}

/// GPU `crate::ops::batch_norm`; running statistics must live on the GPU of `x` as well (the
/// update replaces them by GPU tensors).
pub(crate) fn batch_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    stats: BatchStats<'_>,
    eps: f32,
) -> Result<Tensor> {
    let op = "batch_norm";
    let ins = inputs(x, weight, bias);
    let mut all = ins.clone();
    let running: Option<&RunningStats> = match &stats {
        BatchStats::Batch { running } => running.as_deref(),
        BatchStats::Running(r) => Some(r),
    };
    if let Some(r) = running {
        all.extend([&r.mean, &r.var]);
    }
    let dev = same_device(op, &all)?;
    if x.rank() < 2 {
        return Err(shape_err(op, "(N, D, H, W, C)", x.dims()));
    }
    let c = channels(op, x)?;
    affine_param(op, weight, c)?;
    affine_param(op, bias, c)?;
    if let Some(r) = running {
        running_ok(r, c)?;
    }
    if matches!(stats, BatchStats::Batch { .. }) && x.numel().checked_div(c).unwrap_or(0) < 2 {
        return Err(Error::arg(
            op,
            format!("batch statistics need more than 1 value per channel, x is {:?}", x.dims()),
        ));
    }
    let x5 = if x.rank() == 5 { x.clone() } else { as_rows5(x)? };
    let (out5, saved) = k::batch_norm(&x5, weight, bias, stats, eps)?;
    let out = out5.reshape_detached(x.shape())?;
    if !needs_grad(&ins) {
        return Ok(out);
    }
    let (sw, has_w, has_b) = (weight.cloned(), weight.is_some(), bias.is_some());
    let tracks_x = x.tracks_grad();
    Ok(record(op, out, &ins, move |g| {
        let g5 = grad_on(g, dev)?.reshape_detached(x5.shape())?;
        let (gx, gw, gb) = k::batch_norm_backward(&x5, sw.as_ref(), &g5, &saved)?;
        let mut grads = vec![tracks_x.then(|| gx.reshape_detached(g.shape())).transpose()?];
        if has_w {
            grads.push(Some(gw));
        }
        if has_b {
            grads.push(Some(gb));
        }
        Ok(grads)
    }))
}

/// GPU `crate::ops::group_norm`.
pub(crate) fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<Tensor> {
    let op = "group_norm";
    let ins = inputs(x, weight, bias);
    let dev = same_device(op, &ins)?;
    if x.rank() < 2 {
        return Err(shape_err(op, "(N, D, H, W, C)", x.dims()));
    }
    let c = channels(op, x)?;
    if groups == 0 || c % groups != 0 {
        return Err(shape_err(op, format!("channels divisible by {groups} groups"), x.dims()));
    }
    affine_param(op, weight, c)?;
    affine_param(op, bias, c)?;
    let x5 = if x.rank() == 5 {
        x.clone()
    } else {
        let n = x.dims()[0];
        let rows = x.numel().checked_div(n * c).unwrap_or(0);
        x.reshape_detached([n, 1, 1, rows, c])?
    };
    let (out5, saved) = k::group_norm(&x5, groups, weight, bias, eps)?;
    let out = out5.reshape_detached(x.shape())?;
    if !needs_grad(&ins) {
        return Ok(out);
    }
    let (sw, has_w, has_b) = (weight.cloned(), weight.is_some(), bias.is_some());
    let tracks_x = x.tracks_grad();
    Ok(record(op, out, &ins, move |g| {
        let g5 = grad_on(g, dev)?.reshape_detached(x5.shape())?;
        let (gx, gw, gb) = k::group_norm_backward(&x5, groups, sw.as_ref(), &g5, &saved)?;
        let mut grads = vec![tracks_x.then(|| gx.reshape_detached(g.shape())).transpose()?];
        if has_w {
            grads.push(Some(gw));
        }
        if has_b {
            grads.push(Some(gb));
        }
        Ok(grads)
    }))
}
