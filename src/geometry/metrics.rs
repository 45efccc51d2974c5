//! Overlap and surface-distance metrics between a predicted and a ground-truth mask, in
//! millimetres with anisotropic spacing.
//!
//! Surface voxels are foreground voxels with at least one 6-neighbour in the background (voxels
//! on the volume border count as surface: outside the volume is background), as MONAI extracts
//! them (`seg ^ binary_erosion(seg)`). Surface distances are exact EDT distances between voxel
//! centres, from each surface voxel of one mask to the nearest surface voxel of the other.
//!
//! # Empty masks
//! - both empty: Dice = IoU = 1, every distance 0 (nothing to disagree on);
//! - exactly one empty: Dice = IoU = 0, `hd_mm`, `hd95_mm`, `assd_mm` = `INFINITY` (MONAI's
//!   convention; JSON writes it as `null`);
//! - `hd_original_vox` is 0 when either mask is empty, as in the original project.

use rayon::prelude::*;
use serde::Serialize;

use super::edt::distance_to;
use super::{check_len, check_spacing};
use crate::{Error, Result};

/// The metrics of [`segmentation_metrics`].
#[derive(Clone, Copy, Debug, Serialize)]
pub struct SegMetrics {
    pub dice: f64,
    pub iou: f64,
    /// Symmetric Hausdorff distance between the surfaces (mm).
    pub hd_mm: f64,
    /// Symmetric 95th-percentile Hausdorff distance (mm): the larger of the two directed 95th
    /// percentiles (linear interpolation, as numpy and MONAI).
    pub hd95_mm: f64,
    /// Average symmetric surface distance (mm): the mean of both directed distance lists taken
    /// together.
    pub assd_mm: f64,
    /// The original project's Hausdorff: all foreground voxels, voxel units (spacing ignored),
    /// 0 when either mask is empty.
    pub hd_original_vox: f64,
}

/// Foreground voxels with a 6-neighbour in the background or on the volume border.
pub fn surface_voxels(mask: &[bool], dims: [usize; 3]) -> Result<Vec<bool>> {
    check_len("surface_voxels", mask.len(), dims)?;
    let [d, h, w] = dims;
    let mut out = vec![false; mask.len()];
    if out.is_empty() {
        return Ok(out);
    }
    out.par_chunks_mut(h * w).enumerate().for_each(|(i, plane)| {
        for j in 0..h {
            for k in 0..w {
                let q = (i * h + j) * w + k;
                if !mask[q] {
                    continue;
                }
                let border = i == 0 || j == 0 || k == 0 || i + 1 == d || j + 1 == h || k + 1 == w;
                plane[j * w + k] = border
                    || !mask[q - h * w]
                    || !mask[q + h * w]
                    || !mask[q - w]
                    || !mask[q + w]
                    || !mask[q - 1]
                    || !mask[q + 1];
            }
        }
    });
    Ok(out)
}

/// Distances (mm) from each surface voxel of `from` to the nearest surface voxel of `to`, in
/// voxel order. Empty when `from` has no surface; `INFINITY` entries when `to` has none.
pub fn directed_surface_distances(
    from: &[bool],
    to: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> Result<Vec<f32>> {
    check_spacing("surface_distances", spacing)?;
    let sf = surface_voxels(from, dims)?;
    let st = surface_voxels(to, dims)?;
    let dt = distance_to(&st, dims, spacing)?;
    Ok(sf.iter().zip(&dt).filter(|(s, _)| **s).map(|(_, d)| *d).collect())
}

/// numpy's default percentile (linear interpolation between order statistics).
pub fn percentile(values: &[f32], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
    v.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Directed Hausdorff distance (mm) from `from`'s surface to `to`'s surface (the maximum, or the
/// `q`-th percentile when given).
pub fn directed_hausdorff(
    from: &[bool],
    to: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    q: Option<f64>,
) -> Result<f64> {
    let d = directed_surface_distances(from, to, dims, spacing)?;
    Ok(reduce(&d, q))
}

fn reduce(d: &[f32], q: Option<f64>) -> f64 {
    match q {
        Some(q) => percentile(d, q),
        None => d.iter().fold(0f32, |a, &b| a.max(b)) as f64,
    }
}

/// Symmetric Hausdorff distance (mm) between the surfaces (maximum, or the larger directed
/// `q`-th percentile). Empty masks: 0 when both are empty, `INFINITY` when one is.
pub fn hausdorff(
    pred: &[bool],
    gt: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    q: Option<f64>,
) -> Result<f64> {
    let (pg, gp) = surface_distance_pair(pred, gt, dims, spacing)?;
    Ok(match (pg.is_empty(), gp.is_empty()) {
        (true, true) => 0.0,
        (true, false) | (false, true) => f64::INFINITY,
        _ => reduce(&pg, q).max(reduce(&gp, q)),
    })
}

/// Both directed surface-distance lists (pred -> gt, gt -> pred), each surface extracted once.
fn surface_distance_pair(
    pred: &[bool],
    gt: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> Result<(Vec<f32>, Vec<f32>)> {
    check_spacing("surface_distances", spacing)?;
    let sp = surface_voxels(pred, dims)?;
    let sg = surface_voxels(gt, dims)?;
    let gather = |from: &[bool], to: &[bool]| -> Result<Vec<f32>> {
        if !from.iter().any(|&x| x) {
            return Ok(Vec::new());
        }
        let dt = distance_to(to, dims, spacing)?;
        Ok(from.iter().zip(&dt).filter(|(s, _)| **s).map(|(_, d)| *d).collect())
    };
    Ok((gather(&sp, &sg)?, gather(&sg, &sp)?))
}

/// Dice, IoU, HD, HD95, ASSD (mm) and the original Hausdorff (voxels). See the module docs for
/// the conventions.
///
/// # Errors
/// [`Error::Shape`] when a mask does not match `dims`; [`Error::Arg`] for a bad spacing.
pub fn segmentation_metrics(
    pred: &[bool],
    gt: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> Result<SegMetrics> {
    segmentation_metrics_q(pred, gt, dims, spacing, 95.0)
}

fn segmentation_metrics_q(
    pred: &[bool],
    gt: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    q: f64,
) -> Result<SegMetrics> {
    check_len("metrics", pred.len(), dims)?;
    check_len("metrics", gt.len(), dims)?;
    check_spacing("metrics", spacing)?;
    if !(0.0..=100.0).contains(&q) {
        return Err(Error::arg("metrics", format!("percentile {q} outside [0, 100]")));
    }
    let (inter, np, ng) = pred
        .par_iter()
        .zip(gt.par_iter())
        .map(|(&p, &g)| ((p && g) as u64, p as u64, g as u64))
        .reduce(|| (0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    let union = np + ng - inter;
    let (dice, iou) = if np + ng == 0 {
        (1.0, 1.0)
    } else {
        (2.0 * inter as f64 / (np + ng) as f64, inter as f64 / union as f64)
    };
    let hd_original_vox = hausdorff_original(pred, gt, dims)?;
    let (hd_mm, hd95_mm, assd_mm) = match (np, ng) {
        (0, 0) => (0.0, 0.0, 0.0),
        (0, _) | (_, 0) => (f64::INFINITY, f64::INFINITY, f64::INFINITY),
        _ => {
            let (pg, gp) = surface_distance_pair(pred, gt, dims, spacing)?;
            let hd = reduce(&pg, None).max(reduce(&gp, None));
            let hd95 = percentile(&pg, q).max(percentile(&gp, q));
            let sum: f64 = pg.iter().chain(&gp).map(|&x| x as f64).sum();
            (hd, hd95, sum / (pg.len() + gp.len()) as f64)
        }
    };
    Ok(SegMetrics { dice, iou, hd_mm, hd95_mm, assd_mm, hd_original_vox })
}

/// The original project's Hausdorff distance: symmetric, over all foreground voxels (not just the
/// surface), in voxel units (spacing 1), and 0 when either mask is empty.
pub fn hausdorff_original(pred: &[bool], gt: &[bool], dims: [usize; 3]) -> Result<f64> {
    check_len("hausdorff_original", pred.len(), dims)?;
    check_len("hausdorff_original", gt.len(), dims)?;
    if !pred.iter().any(|&x| x) || !gt.iter().any(|&x| x) {
        return Ok(0.0);
    }
    let one = [1.0; 3];
    let to_gt = distance_to(gt, dims, one)?;
    let to_pred = distance_to(pred, dims, one)?;
    let a = pred.iter().zip(&to_gt).filter(|(p, _)| **p).fold(0f32, |m, (_, d)| m.max(*d));
    let b = gt.iter().zip(&to_pred).filter(|(g, _)| **g).fold(0f32, |m, (_, d)| m.max(*d));
    Ok(a.max(b) as f64)
}
