//! The fine look: a second network on a small box around each coarse centre.
//!
//! The coarse network sees the whole head at 4 mm, so its centre depends on the whole field of
//! view and on how the scan's voxels fall on that grid: an oblique scan of the same head, whose
//! field of view covers other parts of the neck and skull, moved the coarse centre by up to
//! 1.05 mm. The fine network sees only a [`FINE_CROP`] box of [`FINE_MM`] voxels (64 mm) around
//! the coarse centre, in world axes, and paints a [`FINE_LABEL_RADIUS_MM`] ball on the condylar
//! head; the mean-shift centre of that map ([`super::refine_centre`]), averaged over the box and
//! eight copies shifted by a quarter voxel each way, replaces the coarse centre.
//!
//! The box is sampled the same way from any CT ([`FineSource`]): a fine CT is first averaged
//! over blocks of about [`super::VIEW_BLOCK_MM`], then each fine voxel is the mean of the
//! trilinear values at the eight points a quarter voxel from its centre (a 2 mm box filter),
//! so the training heads (1.5-4 mm voxels) and a 0.4 mm scan look alike and the scan's
//! orientation does not change what the network sees.

use std::borrow::Cow;

use rayon::prelude::*;

use super::{refine_centre, JointNet, Sampler, AIR_HU};
use crate::io::Volume;
use crate::synth::phantom::Grid;
use crate::Result;

/// Voxel size (mm) of the fine box.
pub const FINE_MM: f64 = 2.0;
/// The fine network's window in voxels of [`FINE_MM`]: a 64 mm cube, which holds the condylar
/// head and its fossa with the coarse centre's error (< 3 mm) to spare.
pub const FINE_CROP: [usize; 3] = [32, 32, 32];
/// The card target of a fine localisation model.
pub const FINE_TARGET: &str = "joints_fine";
/// Radius (mm) of the fine label ball: the condylar head itself (r 4-5 mm), about 65 voxels of
/// [`FINE_MM`].
pub const FINE_LABEL_RADIUS_MM: f64 = 5.0;
/// Radius (mm) of the mean-shift window on the fine map: the ball plus the coarse centre's
/// usual error, so the first window already overlaps most of the ball.
pub const FINE_REFINE_RADIUS_MM: f64 = 8.0;
/// A fine centre farther than this (mm) from the coarse one is not trusted: the coarse
/// network errs by under 3 mm, so the fine network has then found some other bright knob in
/// its box (the coarse centre stands).
pub const FINE_MAX_MOVE_MM: f64 = 4.0;
/// The fine map must reach this probability within [`FINE_REFINE_RADIUS_MM`] of the coarse
/// centre, or the coarse centre stands (the fine network did not see a condylar head there).
const FINE_MIN_PEAK: f32 = 0.5;

/// The CT as the fine box samples it: block-averaged once when its voxels are fine.
pub struct FineSource<'a> {
    vol: Cow<'a, Volume>,
}

impl<'a> FineSource<'a> {
    /// `ct`, averaged over blocks of about [`super::VIEW_BLOCK_MM`] when its voxels are finer.
    pub fn new(ct: &'a Volume) -> Self {
        match super::block_mean(ct, super::VIEW_BLOCK_MM) {
            Some(b) => FineSource { vol: Cow::Owned(b) },
            None => FineSource { vol: Cow::Borrowed(ct) },
        }
    }

    /// A CT that is already block-averaged ([`super::CoarseHeads::blocked`]).
    pub fn borrowed(vol: &'a Volume) -> Self {
        FineSource { vol: Cow::Borrowed(vol) }
    }

    /// The HU box of `dims` voxels of [`FINE_MM`] centred on `centre` (world RAS mm, axis
    /// aligned), each voxel the mean of the trilinear CT at the eight points `FINE_MM / 4` from
    /// its centre; points outside the scan count as air ([`AIR_HU`]).
    ///
    /// # Errors
    /// [`crate::Error::Arg`] for an empty CT or a singular affine.
    pub fn crop(&self, centre: [f64; 3], dims: [usize; 3]) -> Result<Volume> {
        let sampler = Sampler::new(&self.vol)?;
        let grid = Grid::centered(centre, dims, [FINE_MM; 3]);
        let q = FINE_MM / 4.0;
        let [_, h, w] = dims;
        let mut data = vec![0f32; grid.len()];
        data.par_chunks_mut(h * w).enumerate().for_each(|(i, slab)| {
            for (n, v) in slab.iter_mut().enumerate() {
                let c = grid.world(i, n / w, n % w);
                let mut s = 0f32;
                for corner in 0..8 {
                    let p = [0, 1, 2].map(|a| c[a] + if corner >> a & 1 == 1 { q } else { -q });
                    s += sampler.at_world(p).unwrap_or(AIR_HU);
                }
                *v = s / 8.0;
            }
        });
        Ok(grid.volume(data))
    }
}

/// The shifts (mm) of the fine views: the box itself and eight copies moved by a quarter of a
/// fine voxel along each axis (sign from a bit of the view's number), half a voxel apart, so
/// the average does not depend on where the scan's voxels fall on the 2 mm grid.
fn fine_shifts() -> [[f64; 3]; 9] {
    std::array::from_fn(|v| {
        if v == 0 {
            return [0.0; 3];
        }
        let q = v - 1;
        [0, 1, 2].map(|a| if q >> a & 1 == 1 { FINE_MM / 4.0 } else { -FINE_MM / 4.0 })
    })
}

/// The condyle centre refined by the fine network around the coarse centre `start`, or `None`
/// when no view's map reaches [`FINE_MIN_PEAK`] near it or the refined centre lies more than
/// [`FINE_MAX_MOVE_MM`] from `start` (then the caller keeps `start`).
///
/// # Errors
/// The network's, and [`FineSource::crop`]'s.
pub fn refine_fine(
    src: &FineSource,
    net: &mut dyn JointNet,
    start: [f64; 3],
) -> Result<Option<[f64; 3]>> {
    let (mut acc, mut n) = ([0f64; 3], 0usize);
    for shift in fine_shifts() {
        let centre = [0, 1, 2].map(|a| start[a] + shift[a]);
        let prob = net.condyle_probability(&src.crop(centre, FINE_CROP)?)?;
        super::check_map(&prob)?;
        if peak_near(&prob, start, FINE_REFINE_RADIUS_MM) < FINE_MIN_PEAK {
            continue;
        }
        let c = refine_centre(&prob, start, FINE_REFINE_RADIUS_MM);
        (0..3).for_each(|a| acc[a] += c[a]);
        n += 1;
    }
    if n == 0 {
        return Ok(None);
    }
    let c = acc.map(|v| v / n as f64);
    let moved = (0..3).map(|a| (c[a] - start[a]).powi(2)).sum::<f64>().sqrt();
    Ok((moved <= FINE_MAX_MOVE_MM).then_some(c))
}

/// The largest probability of `prob` within `radius` mm of `at`.
fn peak_near(prob: &Volume, at: [f64; 3], radius: f64) -> f32 {
    let [_, h, w] = prob.dims;
    prob.data
        .iter()
        .enumerate()
        .filter(|(q, _)| {
            let p = crate::io::orientation::apply(
                &prob.affine,
                [(q / (h * w)) as f64, ((q / w) % h) as f64, (q % w) as f64],
            );
            (0..3).map(|a| (p[a] - at[a]).powi(2)).sum::<f64>() <= radius * radius
        })
        .map(|(_, &p)| p)
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::orientation;

    /// A 1 mm CT of air with a bright ball of radius 5 mm at `c`, its grid rotated or not.
    fn ball_ct(c: [f64; 3], affine: orientation::Affine) -> Volume {
        let dims = [90, 90, 90];
        let mut v = Volume::zeros(dims, [1.0; 3]);
        v.affine = affine;
        for q in 0..v.data.len() {
            let p = orientation::apply(
                &affine,
                [(q / 8100) as f64, ((q / 90) % 90) as f64, (q % 90) as f64],
            );
            let r2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
            v.data[q] = if r2 <= 25.0 { 1000.0 } else { -1000.0 };
        }
        v
    }

    fn centred_affine(rot: [[f64; 3]; 3]) -> orientation::Affine {
        let mut a = orientation::identity();
        for r in 0..3 {
            for c in 0..3 {
                a[r][c] = rot[r][c];
            }
            a[r][3] = -(0..3).map(|c| rot[r][c] * 44.5).sum::<f64>();
        }
        a
    }

    #[test]
    fn the_fine_box_looks_the_same_through_an_oblique_grid() {
        let c = [3.3, -2.1, 4.7];
        let straight =
            ball_ct(c, centred_affine([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]));
        let rot = crate::synth::anatomy::rotation_xyz(0.2, 0.0, 0.14);
        let oblique = ball_ct(c, centred_affine(rot));
        let a = FineSource::new(&straight).crop([0.0; 3], FINE_CROP).unwrap();
        let b = FineSource::new(&oblique).crop([0.0; 3], FINE_CROP).unwrap();
        assert_eq!(a.dims, FINE_CROP);
        assert!((a.spacing[0] - FINE_MM).abs() < 1e-12);
        // The box's mass centre is the ball's in both, to a tenth of a millimetre.
        for v in [&a, &b] {
            let (mut m, mut s) = ([0f64; 3], 0f64);
            for (q, &x) in v.data.iter().enumerate() {
                let wgt = f64::from(x + 1000.0);
                let p = orientation::apply(
                    &v.affine,
                    [(q / 1024) as f64, ((q / 32) % 32) as f64, (q % 32) as f64],
                );
                (0..3).for_each(|k| m[k] += wgt * p[k]);
                s += wgt;
            }
            let m = m.map(|x| x / s);
            let d: f64 = (0..3).map(|k| (m[k] - c[k]).powi(2)).sum::<f64>().sqrt();
            assert!(d < 0.1, "mass centre {m:?} vs ball {c:?}");
        }
        // Voxel by voxel the two differ only along the ball's edge (a 2000 HU step sampled
        // through differently placed 1 mm voxels).
        let n = a.data.len() as f32;
        let mad = a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).sum::<f32>() / n;
        assert!(mad < 10.0, "mean voxel difference {mad} HU");
    }

    #[test]
    fn fine_shifts_are_the_box_and_eight_half_voxel_corners() {
        let s = fine_shifts();
        assert_eq!(s[0], [0.0; 3]);
        for v in &s[1..] {
            assert!(v.iter().all(|x| (x.abs() - FINE_MM / 4.0).abs() < 1e-12));
        }
    }

    /// A network that paints the label ball around a fixed world point.
    struct Oracle([f64; 3]);

    impl JointNet for Oracle {
        fn condyle_probability(&mut self, hu: &Volume) -> Result<Volume> {
            let data = crate::train::joints::ball_label(hu, &[self.0], FINE_LABEL_RADIUS_MM);
            Ok(hu.with_data(data))
        }
    }

    #[test]
    fn refine_fine_moves_to_the_networks_ball_and_keeps_start_without_one() {
        let ct =
            ball_ct([0.0; 3], centred_affine([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]));
        let src = FineSource::new(&ct);
        let truth = [1.2, -0.7, 2.1];
        let got = refine_fine(&src, &mut Oracle(truth), [-1.0, 1.5, 0.0]).unwrap().unwrap();
        let d: f64 = (0..3).map(|a| (got[a] - truth[a]).powi(2)).sum::<f64>().sqrt();
        assert!(d < 0.3, "refined {got:?} vs {truth:?}");
        let far = refine_fine(&src, &mut Oracle([25.0, 0.0, 0.0]), [0.0; 3]).unwrap();
        assert!(far.is_none(), "a ball 25 mm away must not move the centre: {far:?}");
    }
}
