//! 3-D convolution.

use crate::tensor::Tensor;
use crate::{Error, Result};

/// 3-D convolution with the same `stride` and zero `padding` on every axis.
///
/// # Shapes
/// `x: (N, D, H, W, C)`, `w: (K, kd, kh, kw, C)`, `b: (K)` -> `(N, D', H', W', K)` with
/// `D' = (D + 2*padding - kd) / stride + 1`.
///
/// # Errors
/// [`Error::Shape`] when channels disagree or the kernel is larger than the padded input.
pub fn conv3d(
    _x: &Tensor,
    _w: &Tensor,
    _b: Option<&Tensor>,
    _stride: usize,
    _padding: usize,
) -> Result<Tensor> {
    Err(Error::NotImplemented("conv3d"))
}
