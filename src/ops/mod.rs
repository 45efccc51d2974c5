//! The public, differentiable ops. Each checks shapes (an `Err` naming the op and the shapes, never
//! a panic), dispatches to the tensor's backend, and records its backward on the autograd tape.
//! Activations are channels-last `(N, D, H, W, C)`; conv weights `(K, kd, kh, kw, C)`.

mod concat;
mod conv3d;
mod conv_transpose3d;
pub(crate) mod cuda;
mod dropout;
mod elementwise;
mod norm;
mod pool;
mod softmax;
mod upsample;

pub use concat::{concat_channels, reshape};
pub use conv3d::conv3d;
pub use conv_transpose3d::conv_transpose3d;
pub use cuda::{conv_precision, set_conv_precision};
pub use dropout::channel_dropout;
pub use elementwise::{add, elu, gate_mul, mul, prelu, relu, scale, sigmoid};
pub use norm::{batch_norm, group_norm, BatchStats, RunningStats};
pub use pool::max_pool3d_k2;
pub use softmax::{log_softmax_channels, softmax_channels};
pub use upsample::{upsample_nearest, upsample_nearest_x2};
