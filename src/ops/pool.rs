//! Max pooling.

use super::elementwise::{data, ndhwc, shape_err};
use crate::autograd::{needs_grad, record};
use crate::backend::cpu::pool as k;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Max pool with kernel 2 and stride 2 (odd trailing voxels dropped, as PyTorch does). The
/// gradient goes to the maximum of each window, the first one on ties.
///
/// # Shapes
/// `(N, D, H, W, C)` -> `(N, D/2, H/2, W/2, C)`.
///
/// # Errors
/// [`Error::Shape`] when `x` is not 5-D or a spatial axis is shorter than 2.
pub fn max_pool3d_k2(x: &Tensor) -> Result<Tensor> {
    if super::cuda::any_cuda(&[x]) {
        return super::cuda::max_pool3d_k2(x);
    }
    let op = "max_pool3d_k2";
    let [n, d, h, w, c] = ndhwc(op, x)?;
    if d < 2 || h < 2 || w < 2 {
        return Err(shape_err(op, "(N, D >= 2, H >= 2, W >= 2, C)", x.dims()));
    }
    if x.numel() > u32::MAX as usize {
        return Err(Error::arg(op, format!("{:?} has more than 2^32 elements", x.dims())));
    }
    let (out, arg) = k::max_pool_k2_fwd(data(op, x)?, [n, d, h, w, c]);
    let out = Tensor::from_vec(out, [n, d / 2, h / 2, w / 2, c])?;
    if !needs_grad(&[x]) {
        return Ok(out);
    }
    let in_dims = x.dims().to_vec();
    Ok(record(op, out, &[x], move |g| {
        let gx = k::max_pool_k2_bwd(data(op, g)?, &arg, in_dims.iter().product());
        Ok(vec![Some(Tensor::from_vec(gx, in_dims.clone())?)])
    }))
}
