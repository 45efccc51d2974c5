//! Changing the voxel grid: resampling to a new spacing and cropping/padding to a box (a VOI),
//! always updating the affine so every voxel centre keeps its world position.

use rayon::prelude::*;

use super::orientation;
use crate::volume::Volume;
use crate::{Error, Result};

/// How values between voxel centres are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    /// Trilinear: for images.
    Linear,
    /// Nearest voxel: for label masks (labels stay labels).
    Nearest,
}

/// Resamples `vol` to voxels of `spacing` mm along its own array axes.
///
/// The first voxel centre stays where it was; the new extent along each axis is
/// `round(dims * old_spacing / new_spacing)` (at least 1), so the field of view is kept to within
/// one new voxel. New voxel `n` samples the old continuous index `n * new / old`; samples past the
/// last old centre take the edge value. The affine's columns are scaled by `new / old`.
///
/// # Errors
/// [`Error::Arg`] for a spacing that is not finite and positive, or an empty volume.
pub fn resample_to_spacing(vol: &Volume, spacing: [f64; 3], interp: Interp) -> Result<Volume> {
    resample_shifted(vol, spacing, [0.0; 3], interp)
}

/// [`resample_to_spacing`] on a lattice whose first voxel centre sits `shift` old voxels (each
/// finite and `>= 0`) past `vol`'s first centre: new voxel `n` samples the old continuous index
/// `n * new / old + shift`. Lattices shifted by fractions of a new voxel sample what a coarse
/// grid alone would fall between (`nn::model::infer`'s phases).
///
/// # Errors
/// As [`resample_to_spacing`], and [`Error::Arg`] for a negative or non-finite shift.
pub fn resample_shifted(
    vol: &Volume,
    spacing: [f64; 3],
    shift: [f64; 3],
    interp: Interp,
) -> Result<Volume> {
    if shift.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
        return Err(Error::arg("resample_shifted", format!("shift {shift:?} must be >= 0")));
    }
    if spacing.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(Error::arg("resample_to_spacing", format!("spacing {spacing:?} must be > 0")));
    }
    if vol.is_empty() || vol.spacing.iter().any(|s| s.is_nan() || *s <= 0.0) {
        return Err(Error::arg(
            "resample_to_spacing",
            format!("volume {:?} with spacing {:?} cannot be resampled", vol.dims, vol.spacing),
        ));
    }
    let ratio = [0, 1, 2].map(|a| spacing[a] / vol.spacing[a]);
    let dims = [0, 1, 2].map(|a| ((vol.dims[a] as f64 / ratio[a]).round() as usize).max(1));

    let mut scale = orientation::identity();
    for (a, r) in ratio.iter().enumerate() {
        scale[a][a] = *r;
    }
    for (a, sh) in shift.iter().enumerate() {
        scale[a][3] = *sh;
    }
    let affine = orientation::mul(&vol.affine, &scale);

    // Per axis: for each new index, the two old indices and the weight of the second.
    let taps: Vec<Vec<(usize, usize, f32)>> = (0..3)
        .map(|a| {
            let last = vol.dims[a] - 1;
            (0..dims[a])
                .map(|n| {
                    let x = (n as f64 * ratio[a] + shift[a]).min(last as f64);
                    match interp {
                        Interp::Nearest => {
                            let i = (x.round() as usize).min(last);
                            (i, i, 0.0)
                        }
                        Interp::Linear => {
                            let i0 = x.floor() as usize;
                            let i1 = (i0 + 1).min(last);
                            (i0, i1, (x - i0 as f64) as f32)
                        }
                    }
                })
                .collect()
        })
        .collect();
    let [_, oh, ow] = vol.dims;
    let src = &vol.data;
    let at = |i: usize, j: usize, k: usize| src[(i * oh + j) * ow + k];
    let mut data = vec![0f32; dims.iter().product()];
    data.par_chunks_mut(dims[1] * dims[2]).enumerate().for_each(|(a, plane)| {
        let (i0, i1, wi) = taps[0][a];
        for (b, &(j0, j1, wj)) in taps[1].iter().enumerate() {
            for (c, &(k0, k1, wk)) in taps[2].iter().enumerate() {
                let lerp =
                    |v0: f32, v1: f32, w: f32| if w == 0.0 { v0 } else { v0 + (v1 - v0) * w };
                let plane_at = |i| {
                    lerp(
                        lerp(at(i, j0, k0), at(i, j0, k1), wk),
                        lerp(at(i, j1, k0), at(i, j1, k1), wk),
                        wj,
                    )
                };
                plane[b * dims[2] + c] = lerp(plane_at(i0), plane_at(i1), wi);
            }
        }
    });
    Ok(Volume { data, dims, spacing, affine, header: vol.header.clone() })
}

/// The box of `size` voxels whose first voxel is old voxel `start` (which may be negative or
/// reach past the end): voxels inside the old grid are copied, the rest set to `fill`. The
/// affine's origin moves to old voxel `start`, so world positions are unchanged.
///
/// # Errors
/// [`Error::Arg`] for a zero size.
pub fn crop_or_pad(vol: &Volume, start: [i64; 3], size: [usize; 3], fill: f32) -> Result<Volume> {
    if size.contains(&0) {
        return Err(Error::arg("crop_or_pad", format!("size {size:?} has a zero extent")));
    }
    let mut affine = vol.affine;
    let origin = orientation::apply(&vol.affine, start.map(|s| s as f64));
    for (row, o) in origin.iter().enumerate() {
        affine[row][3] = *o;
    }
    let old = vol.dims;
    let inside = |a: usize, n: usize| -> Option<usize> {
        let x = start[a] + n as i64;
        (x >= 0 && (x as usize) < old[a]).then_some(x as usize)
    };
    let mut data = vec![fill; size.iter().product()];
    data.par_chunks_mut(size[1] * size[2]).enumerate().for_each(|(a, plane)| {
        let Some(i) = inside(0, a) else { return };
        for b in 0..size[1] {
            let Some(j) = inside(1, b) else { continue };
            for c in 0..size[2] {
                if let Some(k) = inside(2, c) {
                    plane[b * size[2] + c] = vol.data[(i * old[1] + j) * old[2] + k];
                }
            }
        }
    });
    Ok(Volume { data, dims: size, spacing: vol.spacing, affine, header: vol.header.clone() })
}

/// The `size` box centred on voxel `center` (cropped or padded with `fill` as needed): a VOI
/// around a landmark.
///
/// # Errors
/// As [`crop_or_pad`].
pub fn crop_centered(
    vol: &Volume,
    center: [usize; 3],
    size: [usize; 3],
    fill: f32,
) -> Result<Volume> {
    let start = [0, 1, 2].map(|a| center[a] as i64 - (size[a] / 2) as i64);
    crop_or_pad(vol, start, size, fill)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(dims: [usize; 3], spacing: [f64; 3]) -> Volume {
        let mut v = Volume::zeros(dims, spacing);
        v.affine[0][3] = 5.0;
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                for k in 0..dims[2] {
                    let at = v.index(i, j, k);
                    // linear in world position, so trilinear resampling is exact inside
                    v.data[at] = (i as f64 * spacing[0] + 2.0 * j as f64 * spacing[1]
                        - k as f64 * spacing[2]) as f32;
                }
            }
        }
        v
    }

    #[test]
    fn a_shifted_lattice_keeps_world_positions() {
        let v = ramp([8, 6, 5], [1.0, 1.0, 2.0]);
        let r = resample_shifted(&v, [2.0, 1.0, 2.0], [1.0, 0.5, 0.0], Interp::Linear).unwrap();
        assert_eq!(r.dims, [4, 6, 5]);
        // The first centre moved by one old voxel along i and half of one along j.
        assert_eq!(orientation::apply(&r.affine, [0.0; 3]), [6.0, 0.5, 0.0]);
        assert_ramp_inside(&r, [3, 5, 5]);
        assert!(resample_shifted(&v, [2.0; 3], [-0.5, 0.0, 0.0], Interp::Linear).is_err());
    }

    #[test]
    fn linear_resampling_is_exact_on_a_linear_field() {
        let v = ramp([8, 6, 5], [1.0, 1.0, 2.0]);
        let r = resample_to_spacing(&v, [0.5, 2.0, 1.0], Interp::Linear).unwrap();
        assert_eq!(r.dims, [16, 3, 10]);
        assert_ramp_inside(&r, [15, 3, 9]);
    }

    /// `r`, a resampling of [`ramp`], holds the ramp's world values at its voxels below `upto`
    /// (those inside the old grid, where trilinear sampling of a linear field is exact).
    fn assert_ramp_inside(r: &Volume, upto: [usize; 3]) {
        for i in 0..upto[0] {
            for j in 0..upto[1] {
                for k in 0..upto[2] {
                    let p = orientation::apply(&r.affine, [i as f64, j as f64, k as f64]);
                    let want = (p[0] - 5.0) + 2.0 * p[1] - p[2];
                    let got = r.data[r.index(i, j, k)] as f64;
                    assert!((got - want).abs() < 1e-4, "({i},{j},{k}) {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn nearest_keeps_labels_and_crop_keeps_world_positions() {
        let mut v = Volume::zeros([4, 4, 4], [1.0; 3]);
        for (n, x) in v.data.iter_mut().enumerate() {
            *x = (n % 3) as f32;
        }
        let r = resample_to_spacing(&v, [0.5; 3], Interp::Nearest).unwrap();
        assert!(r.data.iter().all(|x| [0.0, 1.0, 2.0].contains(x)));
        let c = crop_or_pad(&v, [-1, 1, 2], [3, 3, 3], -5.0).unwrap();
        assert_eq!(c.data[c.index(0, 0, 0)], -5.0);
        assert_eq!(c.data[c.index(1, 0, 0)], v.data[v.index(0, 1, 2)]);
        let p = orientation::apply(&c.affine, [1.0, 0.0, 0.0]);
        assert_eq!(p, orientation::apply(&v.affine, [0.0, 1.0, 2.0]));
    }
}
