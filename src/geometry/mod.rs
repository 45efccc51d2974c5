//! Geometry on masks and fields: marching cubes, distance transforms, inflation (the negative
//! volume), connected components and surface metrics, all in millimetres.
//!
//! Volumes are row-major over `(D, H, W)` (the NIfTI `(i, j, k)` axes, `k` fastest); `spacing`
//! is the voxel size in millimetres along those axes and is a parameter of every distance and
//! mesh function. Meshes are compared by invariants (area, enclosed volume, watertightness),
//! never vertex by vertex.

pub mod components;
pub mod edt;
pub mod gpu;
pub mod inflate;
pub mod marching_cubes;
pub mod mc_tables;
pub mod mesh;
pub mod metrics;
pub mod refine;
pub mod smooth;

pub use components::fill_cavities;
pub use edt::{distance_to, edt, edt_sq, feature_transform, signed_distance, FeatureTransform};
pub use inflate::{negative_volume, HitStats, JointSpaces, NvParams, NvResult};
pub use marching_cubes::{marching_cubes, marching_cubes_spacing, mesh_volume};
pub use mesh::Mesh;
pub use metrics::{segmentation_metrics, SegMetrics};
pub use refine::{negative_volume_refined, too_coarse_for_nv, NV_VOXEL_MM};
pub use smooth::taubin_smooth;

use crate::{Error, Result};

/// Checks that a flat volume has `dims[0] * dims[1] * dims[2]` values.
pub(crate) fn check_len(op: &'static str, len: usize, dims: [usize; 3]) -> Result<()> {
    let want = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    match want {
        Some(n) if n == len => Ok(()),
        _ => Err(Error::shape(op, dims, len)),
    }
}

/// Checks that every spacing is finite and positive.
pub(crate) fn check_spacing(op: &'static str, spacing: [f64; 3]) -> Result<()> {
    if spacing.iter().all(|s| s.is_finite() && *s > 0.0) {
        Ok(())
    } else {
        Err(Error::arg(op, format!("spacing must be finite and > 0, got {spacing:?}")))
    }
}

/// Foreground mask of a field: `value > level` (NaN is background).
pub fn mask_from(data: &[f32], level: f32) -> Vec<bool> {
    data.iter().map(|&v| v > level).collect()
}

/// A diagonal voxel-to-world affine with the given spacing and origin 0.
pub fn spacing_affine(spacing: [f64; 3]) -> [[f64; 4]; 4] {
    let mut a = [[0.0; 4]; 4];
    for (i, s) in spacing.iter().enumerate() {
        a[i][i] = *s;
    }
    a[3][3] = 1.0;
    a
}
