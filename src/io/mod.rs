//! Reading and writing: NIfTI, DICOM series, meshes (STL, PLY, OBJ), safetensors with PyTorch names.
//! Also the volume plumbing around them: reorientation, resampling, cropping, normalisation.
//!
//! # Example
//! ```no_run
//! use std::path::Path;
//! use dnvs_engine::io::{self, resample::Interp, VoxelKind};
//!
//! # fn main() -> dnvs_engine::Result<()> {
//! let ct = io::read_volume(Path::new("dicom/CT_series"))?; // or a .nii.gz
//! let iso = io::resample::resample_to_spacing(&ct, [0.4; 3], Interp::Linear)?;
//! let x = iso.with_data(io::normalize::hu_window(&iso.data, -1000.0, 2000.0));
//! io::write_nifti(Path::new("ct_0.4mm.nii.gz"), &x, VoxelKind::Image)?;
//! # Ok(())
//! # }
//! ```

pub mod canvas;
pub mod dicom;
mod dicom_scan;
pub mod mesh;
pub mod nifti;
pub mod normalize;
pub mod orientation;
pub mod png;
pub mod resample;
pub mod weights;

use std::path::Path;

/// British spelling, as CONTRACTS.md names the module.
pub use self::normalize as normalise;
/// The volume type and its checks live in the base module [`crate::volume`] (geometry, nn, synth
/// and train use it without depending on file formats); re-exported here because almost every
/// reader of a file also names what it reads.
pub use crate::volume::{
    check_aligned, count_non_finite, mask_values, replace_non_finite, require_finite, MaskValues,
    ValueStats, Volume, VoxelKind,
};
pub use dicom::read_dicom_series;
pub use nifti::{read_nifti, write_nifti};
pub use orientation::as_closest_canonical;

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
