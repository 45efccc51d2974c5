//! Reading and writing: NIfTI, DICOM series, meshes (STL, PLY, OBJ), safetensors with PyTorch names.

pub mod nifti;
pub mod volume;
pub mod weights;

pub use nifti::{read_nifti, write_nifti};
pub use volume::{Volume, VoxelKind};
