//! The statistics a batch norm normalises with, shared by the CPU and CUDA kernels and the op
//! (`ops::batch_norm` re-exports them). They live in the backend, below `ops`, because the CUDA
//! launchers read and update them.

use crate::tensor::Tensor;

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

impl RunningStats {
    /// PyTorch's initial state: mean 0, variance 1, for `c` channels.
    pub fn new(c: usize, momentum: f32) -> Self {
        let mean = Tensor::from_vec(vec![0.0; c], [c]).expect("c zeros fit shape [c]");
        let var = Tensor::from_vec(vec![1.0; c], [c]).expect("c ones fit shape [c]");
        RunningStats { mean, var, momentum }
    }
}

/// Which statistics a batch norm normalises with.
pub enum BatchStats<'a> {
    /// Batch statistics (training, and the V-Net's ContBatchNorm3d always); updates `running`
    /// when given.
    Batch { running: Option<&'a mut RunningStats> },
    /// Stored running statistics (eval mode of an ordinary BatchNorm3d).
    Running(&'a RunningStats),
}
