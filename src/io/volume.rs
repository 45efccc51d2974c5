//! A medical volume: voxels plus the geometry that places them in the patient (RAS millimetres).

use crate::{Error, Result};

/// How the voxels of a volume are meant: a CT in HU, a label mask, a probability map. Decides the
/// datatype a volume is written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoxelKind {
    /// Intensities (CT HU): written as float32 unless the source header says otherwise.
    Image,
    /// Integer labels: written as uint8.
    Mask,
    /// Probabilities in [0, 1]: written as float32.
    Probability,
}

/// Voxel data with its geometry. Array axes `(D, H, W)` are the NIfTI array axes `(i, j, k)` as
/// nibabel indexes them; `data` is row-major over `(D, H, W)` (k fastest).
#[derive(Clone, Debug)]
pub struct Volume {
    /// `dims[0] * dims[1] * dims[2]` values.
    pub data: Vec<f32>,
    /// `(D, H, W)` = NIfTI `(i, j, k)` extents.
    pub dims: [usize; 3],
    /// Voxel size in millimetres along `(i, j, k)`.
    pub spacing: [f64; 3],
    /// Voxel index `(i, j, k, 1)` -> world RAS millimetres (NIfTI convention).
    pub affine: [[f64; 4]; 4],
    /// The raw header bytes of the file this came from (348 bytes for NIfTI-1), kept so outputs
    /// can be written in the same frame with the same codes. `None` for generated volumes.
    pub header: Option<Vec<u8>>,
}

impl Volume {
    /// A volume of zeros with a diagonal affine of `spacing` and origin 0.
    pub fn zeros(dims: [usize; 3], spacing: [f64; 3]) -> Self {
        let mut affine = [[0.0; 4]; 4];
        for (a, s) in spacing.iter().enumerate() {
            affine[a][a] = *s;
        }
        affine[3][3] = 1.0;
        Volume { data: vec![0.0; dims.iter().product()], dims, spacing, affine, header: None }
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when the volume holds no voxels.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Linear index of voxel `(i, j, k)`.
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        (i * self.dims[1] + j) * self.dims[2] + k
    }

    /// A volume with the same geometry and other data (same length).
    pub fn with_data(&self, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), self.data.len());
        Volume { data, ..self.clone_geometry() }
    }

    /// Geometry only (empty data).
    pub fn clone_geometry(&self) -> Self {
        Volume {
            data: Vec::new(),
            dims: self.dims,
            spacing: self.spacing,
            affine: self.affine,
            header: self.header.clone(),
        }
    }
}

/// Largest difference between two affines (mm for the translation, mm per voxel for the rest)
/// that still counts as the same geometry: float32 header rounding stays far below it.
pub const ALIGN_TOL_MM: f64 = 1e-3;

/// Checks that `b` lies on the same voxel grid as `a` (same dims, affines within
/// [`ALIGN_TOL_MM`]), e.g. a CT and its mask. `what` names the pair in the error.
///
/// # Errors
/// [`Error::Shape`] for different dims, [`Error::Arg`] for different geometry, both saying which
/// values differ.
pub fn check_aligned(a: &Volume, b: &Volume, what: &str) -> Result<()> {
    if a.dims != b.dims {
        return Err(Error::Shape {
            op: "check_aligned",
            expected: format!("{what}: dims {:?}", a.dims),
            got: format!("{:?}", b.dims),
        });
    }
    for row in 0..3 {
        for col in 0..4 {
            let d = (a.affine[row][col] - b.affine[row][col]).abs();
            if d.is_nan() || d > ALIGN_TOL_MM {
                return Err(Error::arg(
                    "check_aligned",
                    format!(
                        "{what}: geometry differs: affine[{row}][{col}] is {} vs {} (affines {:?} vs {:?})",
                        a.affine[row][col], b.affine[row][col], a.affine, b.affine
                    ),
                ));
            }
        }
    }
    Ok(())
}

impl Volume {
    /// Smallest and largest finite value, `None` when there is none.
    pub fn value_range(&self) -> Option<(f32, f32)> {
        let mut it = self.data.iter().copied().filter(|v| v.is_finite());
        let first = it.next()?;
        Some(it.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
    }
}

/// Number of NaN or infinite values (a CT holding any is refused unless the user says what to put
/// there, see [`replace_non_finite`]).
pub fn count_non_finite(data: &[f32]) -> usize {
    data.iter().filter(|v| !v.is_finite()).count()
}

/// Replaces every NaN or infinite value by `value`; returns how many were replaced.
pub fn replace_non_finite(data: &mut [f32], value: f32) -> usize {
    let mut n = 0;
    for v in data.iter_mut().filter(|v| !v.is_finite()) {
        *v = value;
        n += 1;
    }
    n
}
