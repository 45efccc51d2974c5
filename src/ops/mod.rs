//! The public, differentiable ops. Each is one function for every device: it checks shapes once
//! (an `Err` naming the op and the shapes, never a panic), runs the backend function that matches
//! where the storage lives (`backend::cpu` or `backend::cuda`), and records one backward closure
//! on the tape that does the same. There is no second op layer for the GPU.
//! Activations are channels-last `(N, D, H, W, C)`; conv weights `(K, kd, kh, kw, C)`.

mod concat;
mod conv3d;
mod conv_transpose3d;
mod dropout;
mod elementwise;
mod norm;
mod pool;
mod softmax;
mod upsample;

pub use crate::backend::norm::{BatchStats, RunningStats};
pub use crate::tensor::Precision;
pub use concat::{concat_channels, reshape};
pub use conv3d::{conv3d, conv3d_prec};
pub use conv_transpose3d::{conv_transpose3d, conv_transpose3d_prec};
pub use dropout::channel_dropout;
pub use elementwise::{add, elu, gate_mul, mul, prelu, relu, scale, sigmoid};
pub use norm::{batch_norm, group_norm};
pub use pool::max_pool3d_k2;
pub use softmax::{log_softmax_channels, softmax_channels};
pub use upsample::{upsample_nearest, upsample_nearest_x2};

use crate::tensor::Tensor;
use crate::{Error, Result};

pub(crate) use crate::backend::device_of;

/// The f32 elements of a CPU tensor, or an [`Error::Device`] naming `op` (bf16 CPU storage).
pub(crate) fn data<'a>(op: &'static str, t: &'a Tensor) -> Result<&'a [f32]> {
    t.as_slice().map_err(|_| Error::Device {
        op,
        msg: format!("the CPU kernels need CPU f32 tensors, got {:?} {:?}", t.device(), t.dtype()),
    })
}

/// The channel count (last dim) of a tensor of rank >= 1.
pub(crate) fn channels(op: &'static str, x: &Tensor) -> Result<usize> {
    x.dims()
        .last()
        .copied()
        .ok_or_else(|| Error::shape(op, "a tensor with a channel axis", x.dims()))
}

/// The dims of an activation `(N, D, H, W, C)`.
pub(crate) fn ndhwc(op: &'static str, x: &Tensor) -> Result<[usize; 5]> {
    x.shape().ndhwc().ok_or_else(|| Error::shape(op, "(N, D, H, W, C)", x.dims()))
}

/// A CPU tensor with the dims of `like`.
pub(crate) fn like(v: Vec<f32>, like: &Tensor) -> Result<Tensor> {
    Tensor::from_vec(v, like.shape())
}

/// The inputs of an op with optional tensors (a bias, affine parameters), in order.
pub(crate) fn inputs<'a>(first: &[&'a Tensor], rest: &[Option<&'a Tensor>]) -> Vec<&'a Tensor> {
    first.iter().copied().chain(rest.iter().flatten().copied()).collect()
}

/// A channels-last tensor of any rank >= 1 viewed as `(1, 1, 1, rows, C)`, the 5-D form the
/// per-channel CUDA launchers want (no copy).
pub(crate) fn as_rows5(x: &Tensor) -> Result<Tensor> {
    let c = x.dims().last().copied().unwrap_or(1).max(1);
    x.reshape_detached([1, 1, 1, x.numel() / c, c])
}
