//! Reading and writing: NIfTI, DICOM series, meshes (STL, PLY, OBJ), safetensors with PyTorch names.
//! Also the volume plumbing around them: reorientation, resampling, cropping, normalisation.

pub mod dicom;
pub mod mesh;
pub mod nifti;
pub mod normalize;
pub mod orientation;
pub mod resample;
pub mod volume;
pub mod weights;

use std::path::Path;

pub use dicom::read_dicom_series;
pub use nifti::{read_nifti, write_nifti};
pub use orientation::as_closest_canonical;
pub use volume::{check_aligned, Volume, VoxelKind};

/// Reads a NIfTI file or, when `path` is a folder, the one DICOM series in it.
///
/// # Errors
/// As [`read_nifti`] / [`read_dicom_series`]; [`crate::Error::Io`] when `path` does not exist.
pub fn read_volume(path: &Path) -> crate::Result<Volume> {
    let meta = std::fs::metadata(path).map_err(|e| crate::Error::io(path, e))?;
    if meta.is_dir() {
        read_dicom_series(path, None)
    } else {
        read_nifti(path)
    }
}
