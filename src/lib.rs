//! dnvs-engine: Deep Negative Volume Segmentation of the temporomandibular joint.
//!
//! Head CT in, per-side negative volume out: tensors and a tape autograd ([`tensor`],
//! [`autograd`], [`ops`]), CPU reference and CUDA kernels ([`backend`]), the paper's networks
//! ([`nn`]) and their training ([`train`]), medical volumes ([`volume`], read and written by
//! [`io`]), meshes, distance fields and the inflation that measures the joint space
//! ([`geometry`]), and synthetic phantoms ([`synth`]).

pub mod atomic;
pub mod autograd;
pub mod backend;
pub mod error;
pub mod geometry;
pub mod io;
pub mod loss;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod pipeline;
pub mod rng;
pub mod synth;
pub mod tensor;
pub mod train;
pub mod volume;

pub use error::{Error, Result};
pub use tensor::{DType, Device, Shape, Tensor};
pub use volume::{Volume, VoxelKind};

/// The engine's version, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
