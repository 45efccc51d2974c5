//! The negative volume on masks coarser than its definition resolves.
//!
//! The NV of a 1.5-4 mm joint space is a shell a few voxels thick, and its count depends on the
//! grid it is counted on: the last voxel before the temporal bone is counted when the march's hit
//! falls inside its cell (`inflate`, step 6), which on a tilted staircase face adds up to half a
//! voxel per column. Measured on 66 phantom truth joints (docs/PERF.md, "The NV on coarse
//! masks"): at 0.4 mm the count is within a few per cent of the analytic NV; at 0.8 mm it reads
//! -3.5 to +12.9 % (mean +4.8 %, +8.7 % on joints under 2 mm); the same 0.8 mm masks refined to
//! 0.4 mm by nearest neighbour read -6.8 to +4.5 % (mean -0.1 %, |error| 1.6 % against 5.0 %). So masks coarser than [`NV_VOXEL_MM`] are refined to it
//! before the inflation, inside a box around MC that holds every voxel the inflation can reach,
//! and the NV mask goes back onto the input grid (a voxel is NV when at least half of its
//! sub-voxels are); the volume is the fine count.
//!
//! Only up to [`MAX_REFINE`] per axis: at 1.6 mm the masks themselves no longer hold the joint
//! (its space is one voxel). On ten joints their refined staircase read up to 24 % low (mean
//! |error| 10.5 %) where the raw count was off by 6.4 % (on all 66: -8 to +22 %), and no
//! refinement recovers a shape the mask never had; such masks are counted on their own grid, and
//! [`too_coarse_for_nv`] says so.

use super::inflate::{negative_volume, NvParams, NvResult};
use crate::tensor::Device;
use crate::volume::Volume;
use crate::{Error, Result};

const OP: &str = "negative_volume_refined";

/// The coarsest voxel (mm) the NV is counted on: the phantoms' VOI grid, where the count agrees
/// with the analytic NV.
pub const NV_VOXEL_MM: f64 = 0.4;

/// The largest refinement per axis (see the module docs).
pub const MAX_REFINE: usize = 2;

/// A warning when masks of `spacing` are too coarse for a trustworthy NV (coarser than
/// [`MAX_REFINE`] x [`NV_VOXEL_MM`] on some axis), else `None`.
pub fn too_coarse_for_nv(spacing: [f64; 3]) -> Option<String> {
    let limit = MAX_REFINE as f64 * NV_VOXEL_MM;
    spacing.iter().any(|&s| s > limit * (1.0 + 1e-6)).then(|| {
        format!(
            "voxels of {:.2} x {:.2} x {:.2} mm are coarser than {limit} mm: a 1.5-4 mm joint \
             space is 1-3 of them, and on phantom truth masks at 1.6 mm the NV was off by up to \
             22 %; it is counted on this grid, unrefined",
            spacing[0], spacing[1], spacing[2]
        )
    })
}

/// Refined boxes larger than this many voxels are refused rather than allocated (a mask of a
/// whole head as "MC").
const MAX_REFINED_VOXELS: usize = 64 << 20;

/// The integer factor per axis that brings `spacing` to `finest_mm` or below (1 where it is
/// already there; `finest_mm <= 0` turns refinement off).
pub fn refine_factors(spacing: [f64; 3], finest_mm: f64) -> [usize; 3] {
    spacing.map(|s| {
        if finest_mm > 0.0 && s > finest_mm * (1.0 + 1e-6) {
            (s / finest_mm - 1e-6).ceil() as usize
        } else {
            1
        }
    })
}

/// The `(i, j, k)` of row-major linear index `q` in `dims`.
fn voxel_of(q: usize, dims: [usize; 3]) -> [usize; 3] {
    [q / (dims[1] * dims[2]), (q / dims[2]) % dims[1], q % dims[2]]
}

/// Each voxel split into `f[0] x f[1] x f[2]` sub-voxels of its value, centred in it: world
/// positions are kept.
pub fn refine_nearest(v: &Volume, f: [usize; 3]) -> Volume {
    let dims = [v.dims[0] * f[0], v.dims[1] * f[1], v.dims[2] * f[2]];
    let mut data = vec![0f32; dims.iter().product()];
    for (q, out) in data.iter_mut().enumerate() {
        let idx = voxel_of(q, dims);
        *out = v.data[v.index(idx[0] / f[0], idx[1] / f[1], idx[2] / f[2])];
    }
    let mut affine = v.affine;
    for row in affine.iter_mut().take(3) {
        // Sub-voxel 0's centre sits (f - 1) / (2 f) old voxels before the old centre 0.
        let shift: f64 = (0..3).map(|a| row[a] * -((f[a] - 1) as f64) / (2.0 * f[a] as f64)).sum();
        row[3] += shift;
        for a in 0..3 {
            row[a] /= f[a] as f64;
        }
    }
    let spacing = [0, 1, 2].map(|a| v.spacing[a] / f[a] as f64);
    Volume { data, dims, spacing, affine, header: None }
}

/// `fine` (a [`refine_nearest`] of a volume with `coarse_dims`) back onto the coarse grid: a
/// voxel is 1 when at least half of its sub-voxels are `> 0.5`.
fn coarsen_majority(fine: &[f32], coarse_dims: [usize; 3], f: [usize; 3]) -> Vec<f32> {
    let fd = [coarse_dims[0] * f[0], coarse_dims[1] * f[1], coarse_dims[2] * f[2]];
    let mut count = vec![0usize; coarse_dims.iter().product()];
    for (q, &v) in fine.iter().enumerate() {
        if v > 0.5 {
            let idx = voxel_of(q, fd);
            let c = [idx[0] / f[0], idx[1] / f[1], idx[2] / f[2]];
            count[(c[0] * coarse_dims[1] + c[1]) * coarse_dims[2] + c[2]] += 1;
        }
    }
    let half = f.iter().product::<usize>();
    count.into_iter().map(|n| f32::from(u8::from(2 * n >= half))).collect()
}

/// The voxel box `[lo, hi)` of MC's foreground grown by `margin_mm` and clipped to the grid:
/// every voxel the inflation reads or marks lies within `max_mm` (plus a voxel) of MC.
fn reach_box(mc: &Volume, margin_mm: f64) -> Option<([usize; 3], [usize; 3])> {
    let mut lo = mc.dims;
    let mut hi = [0usize; 3];
    for (q, &v) in mc.data.iter().enumerate() {
        if v > 0.5 {
            let idx = voxel_of(q, mc.dims);
            for a in 0..3 {
                lo[a] = lo[a].min(idx[a]);
                hi[a] = hi[a].max(idx[a] + 1);
            }
        }
    }
    if hi[0] == 0 {
        return None;
    }
    for a in 0..3 {
        let grow = (margin_mm / mc.spacing[a]).ceil() as usize + 1;
        lo[a] = lo[a].saturating_sub(grow);
        hi[a] = (hi[a] + grow).min(mc.dims[a]);
    }
    Some((lo, hi))
}

/// Calls `row(big, small)` for every row (along the last axis) of the box of `size` voxels at
/// `lo` in a volume of `dims`: `big` is the row's first index in the volume, `small` in the box.
fn for_box_rows(
    dims: [usize; 3],
    lo: [usize; 3],
    size: [usize; 3],
    mut row: impl FnMut(usize, usize),
) {
    for i in 0..size[0] {
        for j in 0..size[1] {
            row(((lo[0] + i) * dims[1] + lo[1] + j) * dims[2] + lo[2], (i * size[1] + j) * size[2]);
        }
    }
}

/// The sub-volume `[lo, hi)` of `v`, world positions kept. (`io::resample::crop_or_pad` does this
/// and padding too, but geometry does not name io: see tests/layering.rs.)
fn crop(v: &Volume, lo: [usize; 3], hi: [usize; 3]) -> Volume {
    let dims = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
    let mut data = Vec::with_capacity(dims.iter().product());
    for_box_rows(v.dims, lo, dims, |big, small| {
        debug_assert_eq!(small, data.len());
        data.extend_from_slice(&v.data[big..big + dims[2]]);
    });
    let mut affine = v.affine;
    for row in affine.iter_mut().take(3) {
        row[3] += (0..3).map(|a| row[a] * lo[a] as f64).sum::<f64>();
    }
    Volume { data, dims, spacing: v.spacing, affine, header: None }
}

/// [`negative_volume`] counted on voxels of at most `finest_mm` (see the module docs), with the
/// factor used per axis (`[1, 1, 1]`: the masks were fine enough, or too coarse for a
/// refinement of at most [`MAX_REFINE`], and nothing was refined). The
/// result's `nv` mask is on the input grid; its volume, joint spaces, hits and mesh are the fine
/// grid's.
///
/// # Errors
/// Those of [`negative_volume`], and [`Error::Arg`] when the refined box would exceed 64 Mi
/// voxels (MC is not a condyle, or `finest_mm` is far too small).
pub fn negative_volume_refined(
    mc: &Volume,
    tb: &Volume,
    params: &NvParams,
    device: Device,
    finest_mm: f64,
) -> Result<(NvResult, [usize; 3])> {
    let f = refine_factors(mc.spacing, finest_mm);
    if f == [1, 1, 1] || f.iter().any(|&x| x > MAX_REFINE) || mc.dims != tb.dims {
        // Unrefined, or shapes that negative_volume refuses with its own error.
        return Ok((negative_volume(mc, tb, params, device)?, [1, 1, 1]));
    }
    params.validate()?;
    let Some((lo, hi)) = reach_box(mc, params.max_mm) else {
        return Ok((negative_volume(mc, tb, params, device)?, [1, 1, 1]));
    };
    let n: usize = (0..3).map(|a| (hi[a] - lo[a]) * f[a]).product();
    if n > MAX_REFINED_VOXELS {
        return Err(Error::arg(
            OP,
            format!(
                "refining MC's reach ({:?} voxels of {:?} mm) to {finest_mm} mm needs {n} \
                 voxels, more than {MAX_REFINED_VOXELS}: is the MC mask one condyle?",
                [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]],
                mc.spacing
            ),
        ));
    }
    let (mc_box, tb_box) = (crop(mc, lo, hi), crop(tb, lo, hi));
    let mut res =
        negative_volume(&refine_nearest(&mc_box, f), &refine_nearest(&tb_box, f), params, device)?;
    let nv_box = coarsen_majority(&res.nv.data, mc_box.dims, f);
    let mut nv = mc.with_data(vec![0.0; mc.len()]);
    let row = mc_box.dims[2];
    for_box_rows(mc.dims, lo, mc_box.dims, |big, small| {
        nv.data[big..big + row].copy_from_slice(&nv_box[small..small + row]);
    });
    res.nv = nv;
    Ok((res, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(dims: [usize; 3], spacing: [f64; 3]) -> Volume {
        let mut v = Volume::zeros(dims, spacing);
        v.affine = [
            [0.0, 0.0, spacing[2], 10.0],
            [spacing[0], 0.0, 0.0, -5.0],
            [0.0, spacing[1], 0.0, 3.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        for (q, x) in v.data.iter_mut().enumerate() {
            *x = q as f32;
        }
        v
    }

    fn world(a: &[[f64; 4]; 4], p: [f64; 3]) -> [f64; 3] {
        [0, 1, 2].map(|r| a[r][0] * p[0] + a[r][1] * p[1] + a[r][2] * p[2] + a[r][3])
    }

    #[test]
    fn factors_bring_every_axis_to_the_finest_voxel() {
        assert_eq!(refine_factors([0.8, 0.4, 1.5], 0.4), [2, 1, 4]);
        assert_eq!(refine_factors([0.3, 0.4000001, 0.41], 0.4), [1, 1, 2]);
        assert_eq!(refine_factors([3.0, 3.0, 3.0], 0.0), [1, 1, 1]);
        assert!(too_coarse_for_nv([0.8, 0.8, 0.8]).is_none());
        let w = too_coarse_for_nv([0.8, 0.8, 1.5]).expect("1.5 mm slices are too coarse");
        assert!(w.contains("1.50 mm"), "{w}");
    }

    #[test]
    fn refined_sub_voxels_average_to_their_parent_centre() {
        let v = ramp([3, 4, 5], [0.8, 1.2, 0.4]);
        let f = [2, 3, 1];
        let r = refine_nearest(&v, f);
        assert_eq!(r.dims, [6, 12, 5]);
        assert!(r.spacing.iter().all(|s| (s - 0.4).abs() < 1e-12), "{:?}", r.spacing);
        // The mean world position of voxel (1, 2, 3)'s sub-voxels is its own centre.
        let mut mean = [0.0; 3];
        for a in 0..2 {
            for b in 0..3 {
                let p = world(&r.affine, [(2 + a) as f64, (6 + b) as f64, 3.0]);
                assert_eq!(r.data[r.index(2 + a, 6 + b, 3)], v.data[v.index(1, 2, 3)]);
                for k in 0..3 {
                    mean[k] += p[k] / 6.0;
                }
            }
        }
        let want = world(&v.affine, [1.0, 2.0, 3.0]);
        for k in 0..3 {
            assert!((mean[k] - want[k]).abs() < 1e-9, "{mean:?} vs {want:?}");
        }
        assert_eq!(
            coarsen_majority(&refine_nearest(&v.with_data(vec![1.0; 60]), f).data, v.dims, f),
            vec![1.0; 60]
        );
    }

    #[test]
    fn a_crop_keeps_world_positions() {
        let v = ramp([6, 7, 8], [0.5, 0.6, 0.7]);
        let c = crop(&v, [1, 2, 3], [4, 7, 8]);
        assert_eq!(c.dims, [3, 5, 5]);
        assert_eq!(c.data[c.index(0, 0, 0)], v.data[v.index(1, 2, 3)]);
        let a = world(&c.affine, [2.0, 1.0, 4.0]);
        let b = world(&v.affine, [3.0, 3.0, 7.0]);
        assert!((0..3).all(|k| (a[k] - b[k]).abs() < 1e-9));
    }
}
