//! CPU reference kernels (rayon), one file per op family, named as in `kernels/`.
//! They take contiguous channels-last slices; shapes are validated in `crate::ops` before a call.

pub mod concat;
pub mod conv3d;
pub mod conv_transpose3d;
pub mod dropout;
pub mod elementwise;
pub mod loss;
pub mod memory;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod profile;
pub mod softmax;
pub mod upsample;
