//! Concatenation over channels, and reshape.

use crate::tensor::{Shape, Tensor};
use crate::{Error, Result};

/// Concatenates along the channel (last) axis.
///
/// # Shapes
/// `(N, D, H, W, C_i)` each -> `(N, D, H, W, sum C_i)`.
pub fn concat_channels(_xs: &[&Tensor]) -> Result<Tensor> {
    Err(Error::NotImplemented("concat_channels"))
}

/// The same elements with another shape (row-major order kept); differentiable.
pub fn reshape(_x: &Tensor, _shape: impl Into<Shape>) -> Result<Tensor> {
    Err(Error::NotImplemented("reshape"))
}
