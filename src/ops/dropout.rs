//! Channel dropout (PyTorch's `Dropout3d`): whole channels of a sample zeroed with probability `p`,
//! the rest scaled by `1 / (1 - p)`.

use crate::tensor::Tensor;
use crate::{Error, Result};

/// Seeded channel dropout; the identity when `p == 0`.
pub fn channel_dropout(_x: &Tensor, _p: f32, _seed: u64) -> Result<Tensor> {
    Err(Error::NotImplemented("channel_dropout"))
}
