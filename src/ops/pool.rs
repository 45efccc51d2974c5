//! Max pooling.

use crate::tensor::Tensor;
use crate::{Error, Result};

/// Max pool with kernel 2 and stride 2 (odd trailing voxels dropped, as PyTorch does).
///
/// # Shapes
/// `(N, D, H, W, C)` -> `(N, D/2, H/2, W/2, C)`.
pub fn max_pool3d_k2(_x: &Tensor) -> Result<Tensor> {
    Err(Error::NotImplemented("max_pool3d_k2"))
}
