//! Batch norm and group norm over channels-last activations.

use crate::tensor::Tensor;
use crate::{Error, Result};

/// Running mean and (unbiased) variance of a batch norm, updated in training.
#[derive(Clone, Debug)]
pub struct RunningStats {
    /// `(C)`
    pub mean: Tensor,
    /// `(C)`
    pub var: Tensor,
    /// PyTorch's momentum: `new = (1 - m) * old + m * batch`.
    pub momentum: f32,
}

/// Which statistics a batch norm normalises with.
pub enum BatchStats<'a> {
    /// Batch statistics (training, and the V-Net's ContBatchNorm3d always); updates `running`
    /// when given.
    Batch { running: Option<&'a mut RunningStats> },
    /// Stored running statistics (eval mode of an ordinary BatchNorm3d).
    Running(&'a RunningStats),
}

/// Batch norm over `(N, D, H, W)` per channel.
///
/// # Shapes
/// `x: (N, D, H, W, C)`, `weight`, `bias`: `(C)` -> `(N, D, H, W, C)`.
pub fn batch_norm(
    _x: &Tensor,
    _weight: Option<&Tensor>,
    _bias: Option<&Tensor>,
    _stats: BatchStats<'_>,
    _eps: f32,
) -> Result<Tensor> {
    Err(Error::NotImplemented("batch_norm"))
}

/// Group norm: channels split into `groups` contiguous groups, normalised per sample and group.
///
/// # Shapes
/// `x: (N, D, H, W, C)` with `C % groups == 0`, `weight`, `bias`: `(C)` -> `(N, D, H, W, C)`.
pub fn group_norm(
    _x: &Tensor,
    _groups: usize,
    _weight: Option<&Tensor>,
    _bias: Option<&Tensor>,
    _eps: f32,
) -> Result<Tensor> {
    Err(Error::NotImplemented("group_norm"))
}
