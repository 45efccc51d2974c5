//! Nearest-neighbour upsampling (PyTorch's `mode="nearest"`: source index `floor(i * in / out)`).

use crate::tensor::Tensor;
use crate::{Error, Result};

/// Nearest upsampling to `size = [D', H', W']`.
pub fn upsample_nearest(_x: &Tensor, _size: [usize; 3]) -> Result<Tensor> {
    Err(Error::NotImplemented("upsample_nearest"))
}

/// Nearest upsampling by 2 on every spatial axis.
pub fn upsample_nearest_x2(x: &Tensor) -> Result<Tensor> {
    let [_, d, h, w, _] = x
        .shape()
        .ndhwc()
        .ok_or_else(|| Error::shape("upsample_nearest_x2", "(N, D, H, W, C)", x.dims()))?;
    upsample_nearest(x, [2 * d, 2 * h, 2 * w])
}
