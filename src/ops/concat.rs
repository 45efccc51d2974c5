//! Concatenation over channels, and reshape.

use super::{data, device_of};
use crate::autograd::record;
use crate::backend::cpu::concat as k;
use crate::backend::cuda::elementwise as cu;
use crate::tensor::{Device, Shape, Tensor};
use crate::{Error, Result};

/// Concatenates any number of tensors along the channel (last) axis, like `torch.cat(xs, 1)` on
/// PyTorch's layout. The gradient is split back into each input's channels.
///
/// # Shapes
/// `(N, D, H, W, C_i)` each (any rank >= 1, equal except the last axis) -> `(N, D, H, W, sum C_i)`.
///
/// # Errors
/// [`Error::Shape`](crate::Error::Shape) for an empty list, or inputs whose leading dims differ.
pub fn concat_channels(xs: &[&Tensor]) -> Result<Tensor> {
    let op = "concat_channels";
    let first = xs.first().ok_or_else(|| Error::shape(op, "at least one tensor", 0))?;
    let dev = device_of(op, xs)?;
    if first.rank() == 0 {
        return Err(Error::shape(op, "tensors with a channel axis", first.dims()));
    }
    let lead = &first.dims()[..first.rank() - 1];
    for x in xs {
        if x.rank() != first.rank() || &x.dims()[..x.rank() - 1] != lead {
            let got: Vec<&[usize]> = xs.iter().map(|t| t.dims()).collect();
            return Err(Error::shape(
                op,
                format!("equal dims but the last, like {:?}", first.dims()),
                got,
            ));
        }
    }
    let cs: Vec<usize> = xs.iter().map(|x| x.dims()[x.rank() - 1]).collect();
    let rows: usize = lead.iter().product();
    let total: usize = cs.iter().sum();
    let out = match dev {
        Device::Cpu => {
            let slices = xs.iter().map(|x| data(op, x)).collect::<Result<Vec<_>>>()?;
            let mut dims = lead.to_vec();
            dims.push(total);
            Tensor::from_vec(k::concat_fwd(&slices, &cs, rows), dims)?
        }
        Device::Cuda(_) => cu::concat_channels(xs)?,
    };
    let parts: Vec<(Vec<usize>, bool)> =
        xs.iter().map(|x| (x.dims().to_vec(), x.tracks_grad())).collect();
    Ok(record(op, out, xs, move |g| {
        if dev.is_cuda() {
            let grads = cu::concat_channels_backward(g, &cs)?;
            return Ok(grads.into_iter().zip(&parts).map(|(t, p)| p.1.then_some(t)).collect());
        }
        let gs = data(op, g)?;
        let mut off = 0;
        let mut grads = Vec::with_capacity(parts.len());
        for ((dims, tracks), &c) in parts.iter().zip(&cs) {
            grads.push(if *tracks {
                Some(Tensor::from_vec(k::split_channels(gs, total, off, c), dims.clone())?)
            } else {
                None
            });
            off += c;
        }
        Ok(grads)
    }))
}

/// The same elements with another shape (row-major order kept); differentiable.
///
/// # Errors
/// [`Error::Shape`](crate::Error::Shape) when the element counts differ.
pub fn reshape(x: &Tensor, shape: impl Into<Shape>) -> Result<Tensor> {
    let shape = shape.into();
    if shape.numel() != x.numel() {
        return Err(Error::shape(
            "reshape",
            format!("{} elements like {:?}", x.numel(), x.dims()),
            shape,
        ));
    }
    let out = x.reshape_detached(shape)?;
    let in_dims = x.dims().to_vec();
    Ok(record("reshape", out, &[x], move |g| Ok(vec![Some(g.reshape_detached(in_dims.clone())?)])))
}
