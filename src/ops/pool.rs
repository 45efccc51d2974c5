//! Max pooling.

use super::{data, ndhwc};
use crate::autograd::{needs_grad, record};
use crate::backend::cpu::pool as k;
use crate::backend::cuda::pool as cu;
use crate::tensor::{Device, Tensor};
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
    let op = "max_pool3d_k2";
    let [n, d, h, w, c] = ndhwc(op, x)?;
    if d < 2 || h < 2 || w < 2 {
        return Err(Error::shape(op, "(N, D >= 2, H >= 2, W >= 2, C)", x.dims()));
    }
    if x.numel() > u32::MAX as usize {
        return Err(Error::arg(op, format!("{:?} has more than 2^32 elements", x.dims())));
    }
    // The CPU keeps each window's arg-max for backward; the GPU recomputes it from `x`.
    let (out, arg) = match x.device() {
        Device::Cpu => {
            let (out, arg) = k::max_pool_k2_fwd(data(op, x)?, [n, d, h, w, c]);
            (Tensor::from_vec(out, [n, d / 2, h / 2, w / 2, c])?, arg)
        }
        Device::Cuda(_) => (cu::max_pool3d_k2(x)?, Vec::new()),
    };
    if !needs_grad(&[x]) {
        return Ok(out);
    }
    // Only the GPU backward needs `x` itself: the CPU keeps the (4x smaller) arg-max alone.
    let (in_dims, gpu_x) = (x.dims().to_vec(), x.device().is_cuda().then(|| x.clone()));
    Ok(record(op, out, &[x], move |g| {
        let gx = match &gpu_x {
            None => {
                let gx = k::max_pool_k2_bwd(data(op, g)?, &arg, in_dims.iter().product());
                Tensor::from_vec(gx, in_dims.clone())?
            }
            Some(sx) => cu::max_pool3d_k2_backward(sx, g)?,
        };
        Ok(vec![Some(gx)])
    }))
}
