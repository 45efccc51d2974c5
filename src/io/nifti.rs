//! NIfTI-1 read (.nii, .nii.gz) and write, keeping the geometry exactly.

use std::path::Path;

use super::volume::{Volume, VoxelKind};
use crate::{Error, Result};

/// Reads a 3-D NIfTI-1 file (`.nii` or `.nii.gz`), applying scl_slope/scl_inter and choosing the
/// affine as nibabel does (sform when its code > 0, else qform, else the spacing diagonal).
pub fn read_nifti(_path: &Path) -> Result<Volume> {
    Err(Error::NotImplemented("read_nifti"))
}

/// Writes `vol` to `path` (`.nii` or `.nii.gz`) atomically (temp file + rename), as uint8 for
/// masks and float32 otherwise, keeping the affine, qform/sform codes, spacing and units of the
/// header the volume came with.
pub fn write_nifti(_path: &Path, _vol: &Volume, _kind: VoxelKind) -> Result<()> {
    Err(Error::NotImplemented("write_nifti"))
}
