//! Nearest-neighbour upsampling (PyTorch's `mode="nearest"`: source index `floor(i * in / out)`).

use super::{data, ndhwc};
use crate::autograd::record;
use crate::backend::cpu::upsample as k;
use crate::backend::cuda::upsample as cu;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// Nearest upsampling (or downsampling) to `size = [D', H', W']`, as
/// `F.interpolate(x, size, mode="nearest")`; the gradient sums over the copies of each voxel.
///
/// # Shapes
/// `(N, D, H, W, C)` -> `(N, D', H', W', C)`.
///
/// # Errors
/// [`Error::Shape`](crate::Error::Shape) when `x` is not 5-D, or a size is zero while the input axis is not (or the
/// reverse).
pub fn upsample_nearest(x: &Tensor, size: [usize; 3]) -> Result<Tensor> {
    let op = "upsample_nearest";
    let dims = ndhwc(op, x)?;
    let [n, d, h, w, c] = dims;
    if [d, h, w].iter().zip(&size).any(|(&i, &o)| (i == 0) != (o == 0)) {
        return Err(Error::shape(
            op,
            format!("non-empty spatial axes for size {size:?}"),
            x.dims(),
        ));
    }
    let src = [k::nearest_src(size[0], d), k::nearest_src(size[1], h), k::nearest_src(size[2], w)];
    let idx = [src[0].as_slice(), &src[1], &src[2]];
    let dev = x.device();
    let out = match dev {
        Device::Cpu => {
            let out = k::nearest_fwd(data(op, x)?, dims, idx);
            Tensor::from_vec(out, [n, size[0], size[1], size[2], c])?
        }
        Device::Cuda(_) => cu::upsample_nearest(x, size)?,
    };
    Ok(record(op, out, &[x], move |g| {
        let gx = match dev {
            Device::Cpu => {
                let gx = k::nearest_bwd(data(op, g)?, dims, [&src[0], &src[1], &src[2]]);
                Tensor::from_vec(gx, dims)?
            }
            Device::Cuda(_) => cu::upsample_nearest_backward(g, &dims)?,
        };
        Ok(vec![Some(gx)])
    }))
}

/// Nearest upsampling by 2 on every spatial axis.
///
/// # Shapes
/// `(N, D, H, W, C)` -> `(N, 2D, 2H, 2W, C)`.
pub fn upsample_nearest_x2(x: &Tensor) -> Result<Tensor> {
    let [_, d, h, w, _] = ndhwc("upsample_nearest_x2", x)?;
    upsample_nearest(x, [2 * d, 2 * h, 2 * w])
}
