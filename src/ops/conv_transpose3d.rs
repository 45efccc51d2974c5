//! 3-D transposed convolution (the V-Net's up convolution).

use crate::tensor::Tensor;
use crate::{Error, Result};

/// Transposed 3-D convolution, no padding.
///
/// # Shapes
/// `x: (N, D, H, W, C)`, `w: (K, kd, kh, kw, C)` (K output channels; PyTorch's
/// `(C, K, kd, kh, kw)` is converted at the boundary), `b: (K)` ->
/// `(N, (D-1)*stride + kd, (H-1)*stride + kh, (W-1)*stride + kw, K)`.
pub fn conv_transpose3d(
    _x: &Tensor,
    _w: &Tensor,
    _b: Option<&Tensor>,
    _stride: usize,
) -> Result<Tensor> {
    Err(Error::NotImplemented("conv_transpose3d"))
}
