//! CPU reference kernels (rayon), one file per op family, named as in `kernels/`.
//! They take contiguous channels-last slices; shapes are validated in `crate::ops` before a call.

pub mod conv3d;
pub mod conv_transpose3d;
