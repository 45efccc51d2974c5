//! Nearest-neighbour upsampling (PyTorch's `mode="nearest"`: source index `floor(i * in / out)`).

use super::elementwise::{data, ndhwc, shape_err};
use crate::autograd::record;
use crate::backend::cpu::upsample as k;
use crate::tensor::Tensor;
use crate::Result;

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
    if super::cuda::any_cuda(&[x]) {
        return super::cuda::upsample_nearest(x, size);
    }
    let op = "upsample_nearest";
    let dims = ndhwc(op, x)?;
    let [n, d, h, w, c] = dims;
    if [d, h, w].iter().zip(&size).any(|(&i, &o)| (i == 0) != (o == 0)) {
        return Err(shape_err(op, format!("non-empty spatial axes for size {size:?}"), x.dims()));
    }
    let src = [k::nearest_src(size[0], d), k::nearest_src(size[1], h), k::nearest_src(size[2], w)];
    let idx = [src[0].as_slice(), &src[1], &src[2]];
    let out = k::nearest_fwd(data(op, x)?, dims, idx);
    let out = Tensor::from_vec(out, [n, size[0], size[1], size[2], c])?;
    Ok(record(op, out, &[x], move |g| {
        let gx = k::nearest_bwd(data(op, g)?, dims, [&src[0], &src[1], &src[2]]);
        Ok(vec![Some(Tensor::from_vec(gx, dims)?)])
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
