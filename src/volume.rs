//! A medical volume: voxels plus the geometry that places them in the patient (RAS millimetres).
//!
//! A base module: io reads and writes it, geometry, nn, synth, train and the pipeline compute on
//! it. It names nothing of the crate but the error type, so none of those rooms has to depend on
//! file formats to hold a volume (`tests/layering.rs` keeps it so).

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

/// Trilinear value of `data` (row-major `dims`) at continuous voxel index `x`, clamped to the
/// grid: points beyond the edge voxels take the edge's values.
pub fn trilinear(data: &[f32], dims: [usize; 3], x: [f64; 3]) -> f32 {
    let mut i0 = [0usize; 3];
    let mut t = [0f32; 3];
    for a in 0..3 {
        let top = dims[a].saturating_sub(1);
        let c = x[a].clamp(0.0, top as f64);
        i0[a] = (c.floor() as usize).min(top.saturating_sub(1));
        t[a] = (c - i0[a] as f64) as f32;
    }
    let at = |di: usize, dj: usize, dk: usize| {
        let i = (i0[0] + di).min(dims[0] - 1);
        let j = (i0[1] + dj).min(dims[1] - 1);
        let k = (i0[2] + dk).min(dims[2] - 1);
        data[(i * dims[1] + j) * dims[2] + k]
    };
    let lerp = |a: f32, b: f32, w: f32| a + (b - a) * w;
    let plane = |di| {
        lerp(lerp(at(di, 0, 0), at(di, 0, 1), t[2]), lerp(at(di, 1, 0), at(di, 1, 1), t[2]), t[1])
    };
    lerp(plane(0), plane(1), t[0])
}

/// How many voxels of `vol` are NaN or infinite.
pub fn count_non_finite(vol: &Volume) -> usize {
    vol.data.iter().filter(|v| !v.is_finite()).count()
}

/// Replaces every NaN or infinite voxel by `value` (e.g. `--nan-to -1024`); returns how many
/// were replaced.
pub fn replace_non_finite(vol: &mut Volume, value: f32) -> usize {
    let mut n = 0;
    for v in vol.data.iter_mut().filter(|v| !v.is_finite()) {
        *v = value;
        n += 1;
    }
    n
}

/// Refuses a volume holding NaN or infinite voxels: a network, a threshold or a distance fed
/// with them returns garbage without failing. `source` names the file in the error.
///
/// # Errors
/// [`Error::Format`] naming `source` and the count, suggesting `--nan-to HU`.
pub fn require_finite(vol: &Volume, source: &std::path::Path) -> Result<()> {
    let n = count_non_finite(vol);
    if n == 0 {
        return Ok(());
    }
    Err(Error::format(
        source,
        format!(
            "{n} of {} voxels are NaN or infinite; repair the file or say what to put there \
             with --nan-to HU",
            vol.len()
        ),
    ))
}

/// Value statistics gathered in one pass (possibly over several blocks): what `info` prints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ValueStats {
    /// Smallest and largest finite value.
    pub range: Option<(f32, f32)>,
    /// NaN voxels.
    pub nan: usize,
    /// +/- infinite voxels.
    pub infinite: usize,
    /// Voxels seen.
    pub count: usize,
}

impl ValueStats {
    /// Adds `values` to the statistics.
    pub fn add(&mut self, values: &[f32]) {
        for &v in values {
            if v.is_nan() {
                self.nan += 1;
            } else if v.is_infinite() {
                self.infinite += 1;
            } else {
                self.range = Some(match self.range {
                    Some((lo, hi)) => (lo.min(v), hi.max(v)),
                    None => (v, v),
                });
            }
        }
        self.count += values.len();
    }

    /// Statistics of a whole volume.
    pub fn of(vol: &Volume) -> ValueStats {
        let mut s = ValueStats::default();
        s.add(&vol.data);
        s
    }
}

/// What a label mask holds beyond the integers 0..=255 it should: found by [`mask_values`] so a
/// caller can say what it found and what it did, instead of rounding silently.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MaskValues {
    /// The distinct integer values 0..=255 present, ascending.
    pub labels: Vec<u8>,
    /// Voxels that are not integers (e.g. 0.3, 0.7 from interpolation), with up to 5 examples.
    pub fractional: usize,
    pub fractional_examples: Vec<f32>,
    /// Voxels below 0 or above 255 (or not finite), with up to 5 examples.
    pub out_of_range: usize,
    pub out_of_range_examples: Vec<f32>,
}

impl MaskValues {
    /// True when the mask is a plain binary 0/1 mask (empty, all 0, all 1, or both).
    pub fn is_binary(&self) -> bool {
        self.fractional == 0 && self.out_of_range == 0 && self.labels.iter().all(|&l| l <= 1)
    }

    /// One line describing anything beyond integer labels 0..=255, or `None` when all values
    /// are such labels.
    pub fn problems(&self) -> Option<String> {
        let mut parts = Vec::new();
        if self.fractional > 0 {
            parts.push(format!(
                "{} voxels are not whole numbers (e.g. {:?})",
                self.fractional, self.fractional_examples
            ));
        }
        if self.out_of_range > 0 {
            parts.push(format!(
                "{} voxels are outside 0..=255 (e.g. {:?})",
                self.out_of_range, self.out_of_range_examples
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Surveys the values of a label mask (see [`MaskValues`]).
pub fn mask_values(data: &[f32]) -> MaskValues {
    let mut present = [false; 256];
    let mut m = MaskValues::default();
    for &v in data {
        if !(v.is_finite() && (0.0..=255.0).contains(&v)) {
            m.out_of_range += 1;
            if m.out_of_range_examples.len() < 5 && !m.out_of_range_examples.contains(&v) {
                m.out_of_range_examples.push(v);
            }
        } else if v.fract() != 0.0 {
            m.fractional += 1;
            if m.fractional_examples.len() < 5 && !m.fractional_examples.contains(&v) {
                m.fractional_examples.push(v);
            }
        } else {
            present[v as usize] = true;
        }
    }
    m.labels = (0..=255u8).filter(|&l| present[l as usize]).collect();
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_helpers_count_replace_and_refuse() {
        let mut v = Volume::zeros([2, 2, 2], [1.0; 3]);
        v.data[1] = f32::NAN;
        v.data[5] = f32::NEG_INFINITY;
        assert_eq!(count_non_finite(&v), 2);
        let msg = require_finite(&v, std::path::Path::new("ct.nii.gz")).unwrap_err().to_string();
        assert!(msg.contains("ct.nii.gz") && msg.contains("2 of 8") && msg.contains("--nan-to"));
        let s = ValueStats::of(&v);
        assert_eq!((s.nan, s.infinite, s.count, s.range), (1, 1, 8, Some((0.0, 0.0))));
        assert_eq!(replace_non_finite(&mut v, -1024.0), 2);
        assert_eq!(v.data[5], -1024.0);
        require_finite(&v, std::path::Path::new("ct.nii.gz")).unwrap();
    }

    #[test]
    fn mask_values_name_what_is_not_a_label() {
        let m = mask_values(&[0.0, 1.0, 2.0, 255.0, 0.3, 0.7, -1.0, 300.0, f32::NAN]);
        assert_eq!(m.labels, vec![0, 1, 2, 255]);
        assert_eq!((m.fractional, m.out_of_range), (2, 3));
        assert!(!m.is_binary());
        let p = m.problems().unwrap();
        assert!(p.contains("0.3") && p.contains("-1.0") && p.contains("300.0"), "{p}");
        let b = mask_values(&[0.0, 1.0, 1.0]);
        assert!(b.is_binary() && b.problems().is_none());
    }
}
