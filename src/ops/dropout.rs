//! Channel dropout (PyTorch's `Dropout3d`): whole channels of a sample zeroed with probability `p`,
//! the rest scaled by `1 / (1 - p)`.

use super::{channels, data, like};
use crate::autograd::record;
use crate::backend::cpu::dropout as k;
use crate::backend::cuda::elementwise as cu;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// Seeded channel dropout; the identity (the same tensor) when `p == 0`. The mask depends only
/// on `(seed, sample, channel)`, so a seed reproduces it exactly; the gradient is masked and
/// scaled alike.
///
/// # Shapes
/// `(N, D, H, W, C)` (any rank >= 2, samples first, channels last) -> the same.
///
/// # Errors
/// [`Error::Arg`] when `p` is outside `[0, 1]`; [`Error::Shape`] for rank < 2.
pub fn channel_dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    let op = "channel_dropout";
    if !(0.0..=1.0).contains(&p) {
        return Err(Error::arg(op, format!("p = {p} is not a probability in [0, 1]")));
    }
    if x.rank() < 2 {
        return Err(Error::shape(op, "(N, D, H, W, C)", x.dims()));
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let c = channels(op, x)?;
    let n = x.dims()[0];
    let per = x.numel().checked_div(n).unwrap_or(0);
    if let Device::Cuda(_) = x.device() {
        // The same (N, C) mask as the CPU's, drawn by the kernel itself: no host copy.
        let (keep, base) = (k::keep_scale(p), k::mask_base(seed));
        let out = cu::channel_dropout(x, p, keep, base)?;
        return Ok(record(op, out, &[x], move |g| {
            Ok(vec![Some(cu::channel_dropout(g, p, keep, base)?)])
        }));
    }
    let mask = k::channel_mask(n, c, p, seed);
    let out = like(k::apply_mask(data(op, x)?, &mask, c, per), x)?;
    let dims = x.dims().to_vec();
    Ok(record(op, out, &[x], move |g| {
        Ok(vec![Some(Tensor::from_vec(k::apply_mask(data(op, g)?, &mask, c, per), dims.clone())?)])
    }))
}
