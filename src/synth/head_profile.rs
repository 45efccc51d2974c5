//! The `head` profile: whole-head scans that vary the way real head CTs do, for training and
//! testing localisation (issue 10). The default `synth` output does not use any of this.
//!
//! Per case, from `(seed, case)`: a pose (rotation up to `max_rotation_deg` about every axis,
//! any translation up to `max_shift_mm`), a field of view cropped at random levels (from the
//! upper teeth to the neck below, from just above the joints to the vertex above), voxel sizes
//! (in-plane and slice ranges; the matrix is capped as a scanner's is), an HU offset, one of
//! several noise levels, a table with a head rest under the occiput, dental metal (very bright
//! blobs with radial streaks in their slices) and, sometimes, one joint outside the field of view.
//!
//! Truth written to `dataset.json`: each joint's `condyle_center_ras_mm` and, for a joint outside
//! the scan, `"in_field_of_view": false`. A joint counts as in view only with its centre at least
//! [`IN_VIEW_MARGIN_MM`] inside the scan; one cut off has its centre outside, so no case sits on
//! the fence.

use rayon::prelude::*;

use super::anatomy::{mat_vec, rotation_xyz, Pose, V3};
use super::noise::{hash_words, Rng};
use super::phantom::{add_noise, blur, voxel_mean, Phantom, Tissue};
use super::Side;
use crate::io::orientation::{self, Affine};
use crate::volume::Volume;
use crate::{Error, Result};

/// A joint in view has its centre at least this far inside every face of the scan (mm).
pub const IN_VIEW_MARGIN_MM: f64 = 15.0;

/// The ranges scans are drawn from.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadProfile {
    /// In-plane (x, y) voxel size range (mm).
    pub inplane_mm: [f64; 2],
    /// Slice (z) spacing range (mm).
    pub slice_mm: [f64; 2],
    /// Largest rotation about each axis (degrees).
    pub max_rotation_deg: f64,
    /// Largest translation along each axis (mm).
    pub max_shift_mm: f64,
    /// Largest HU offset (added to every voxel, either sign).
    pub max_hu_offset: f64,
    /// Probability that one joint is outside the field of view.
    pub p_one_side_out: f64,
    /// Probability of a table with a head rest.
    pub p_table: f64,
    /// Probability of dental metal.
    pub p_metal: f64,
    /// Largest matrix (x, y, z voxels): finer voxels than the field of view allows are coarsened.
    pub max_matrix: [usize; 3],
}

impl Default for HeadProfile {
    fn default() -> Self {
        HeadProfile {
            inplane_mm: [0.3, 1.0],
            slice_mm: [0.5, 3.0],
            max_rotation_deg: 15.0,
            max_shift_mm: 30.0,
            max_hu_offset: 50.0,
            p_one_side_out: 0.15,
            p_table: 0.7,
            p_metal: 0.5,
            max_matrix: [512, 512, 400],
        }
    }
}

impl HeadProfile {
    /// Rejects ranges that cannot make a scan.
    ///
    /// # Errors
    /// [`Error::Arg`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        for (name, r) in [("in-plane spacing", self.inplane_mm), ("slice spacing", self.slice_mm)] {
            if !(r[0] >= 0.1 && r[1] >= r[0] && r[1] <= 10.0) {
                return Err(Error::arg(
                    "synth",
                    format!("{name} range {r:?} mm: need 0.1 <= lo <= hi <= 10"),
                ));
            }
        }
        let probs = [self.p_one_side_out, self.p_table, self.p_metal];
        if probs.iter().any(|p| !(0.0..=1.0).contains(p)) {
            return Err(Error::arg("synth", format!("probabilities {probs:?} must be in [0, 1]")));
        }
        if !(0.0..=45.0).contains(&self.max_rotation_deg)
            || !(0.0..=200.0).contains(&self.max_shift_mm)
        {
            return Err(Error::arg("synth", "rotation must be 0..=45 deg and shift 0..=200 mm"));
        }
        if self.max_matrix.iter().any(|&m| !(16..=2048).contains(&m)) {
            return Err(Error::arg(
                "synth",
                format!("matrix {:?}: each 16..=2048", self.max_matrix),
            ));
        }
        Ok(())
    }
}

/// A table top with a foam pad and a curved head rest, all in the scanner frame (the head lies
/// supine: the table is towards -y).
#[derive(Clone, Copy, Debug)]
pub struct Table {
    /// World y of the table's upper surface.
    pub top_y: f64,
    pub shell_mm: f64,
    pub core_mm: f64,
    pub shell_hu: f64,
    pub core_hu: f64,
    /// Head rest: a cylindrical shell along z under the occiput.
    pub rest_axis: [f64; 2],
    pub rest_radius: f64,
    pub rest_mm: f64,
    pub rest_hu: f64,
}

impl Table {
    /// HU of the table at world `w`, `None` where there is no table.
    fn hu(&self, w: V3) -> Option<f64> {
        let below = self.top_y - w[1];
        if below >= 0.0 {
            let total = 2.0 * self.shell_mm + self.core_mm;
            if below < self.shell_mm || (below >= total - self.shell_mm && below < total) {
                return Some(self.shell_hu);
            }
            if below < total {
                return Some(self.core_hu);
            }
            return None;
        }
        // The head rest: the lower part of a cylinder shell resting on the table.
        let (dx, dy) = (w[0] - self.rest_axis[0], w[1] - self.rest_axis[1]);
        let r = (dx * dx + dy * dy).sqrt();
        let lower = dy < -0.35 * self.rest_radius;
        (lower && r > self.rest_radius && r < self.rest_radius + self.rest_mm)
            .then_some(self.rest_hu)
    }
}

/// A dental filling: a very bright blob and the streaks it throws across its own slices.
#[derive(Clone, Copy, Debug)]
pub struct Metal {
    pub center: V3,
    pub radius: f64,
    /// Streak amplitude (HU), number of bright/dark ray pairs, phase, decay length (mm).
    pub streak_hu: f64,
    pub rays: f64,
    pub phase: f64,
    pub decay_mm: f64,
}

impl Metal {
    const HU: f64 = 3071.0;

    /// Whether `w` is inside the metal.
    fn inside(&self, w: V3) -> bool {
        let d = [w[0] - self.center[0], w[1] - self.center[1], w[2] - self.center[2]];
        d[0] * d[0] + d[1] * d[1] + d[2] * d[2] < self.radius * self.radius
    }

    /// The streak HU at `w`: radial rays in the axial slices through the blob (beam hardening
    /// and photon starvation lie in the scan plane), fading with distance.
    fn streak(&self, w: V3) -> f64 {
        let dz = (w[2] - self.center[2]).abs();
        if dz > self.radius {
            return 0.0;
        }
        let (dx, dy) = (w[0] - self.center[0], w[1] - self.center[1]);
        let r = (dx * dx + dy * dy).sqrt().max(self.radius);
        let theta = dy.atan2(dx);
        let along = (1.0 - dz / self.radius).sqrt();
        self.streak_hu * along * (self.rays * theta + self.phase).cos() * (-r / self.decay_mm).exp()
    }
}

/// One drawn scan of a phantom: where the scanner put its field of view and what else it saw.
#[derive(Clone, Debug)]
pub struct Scan {
    /// Anatomy -> scanner pose (replaces the phantom's default small pose).
    pub pose: Pose,
    /// World box of the field of view, `[lo, hi]` per axis (voxel footprints).
    pub fov: [[f64; 2]; 3],
    /// Voxel size (mm) along x, y, z.
    pub spacing: [f64; 3],
    pub hu_offset: f64,
    pub noise_sigma: f64,
    pub table: Option<Table>,
    pub metal: Vec<Metal>,
    /// The joint whose centre lies outside the field of view, if any.
    pub out_of_view: Option<Side>,
}

impl Scan {
    /// Voxel count per axis.
    pub fn dims(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| {
            (((self.fov[a][1] - self.fov[a][0]) / self.spacing[a]).round() as usize).max(1)
        })
    }

    /// The scan's diagonal RAS affine (voxel centres half a voxel inside the box).
    #[allow(clippy::needless_range_loop)] // diagonal matrix entries
    pub fn affine(&self) -> Affine {
        let mut a = orientation::identity();
        for ax in 0..3 {
            a[ax][ax] = self.spacing[ax];
            a[ax][3] = self.fov[ax][0] + 0.5 * self.spacing[ax];
        }
        a
    }

    /// Whether `side`'s joint is shown.
    pub fn in_view(&self, side: Side) -> bool {
        self.out_of_view != Some(side)
    }
}

/// Draws the scan of `ph` for `(seed, case)`; `ph.pose` is not used (the scan has its own).
pub fn draw_scan(profile: &HeadProfile, ph: &Phantom, seed: u64, case: u64) -> Scan {
    let mut rng = Rng::new(hash_words(&[seed, case, 0x6865_6164]));
    let rot = profile.max_rotation_deg.to_radians();
    let pose = Pose {
        rot: rotation_xyz(rng.sym(rot), rng.sym(rot), rng.sym(rot)),
        shift: [0, 1, 2].map(|_| rng.sym(profile.max_shift_mm)),
    };
    let joints = Side::BOTH.map(|s| pose.to_world(ph.joint(s).center()));
    let hc = pose.to_world([0.0, 5.0, -10.0]);
    let cz = 0.5 * (joints[0][2] + joints[1][2]);
    let half_x = rng.uniform(80.0, 95.0);
    let cx = hc[0] + rng.sym(8.0);
    let mut fov = [
        [cx - half_x, cx + half_x],
        [hc[1] - rng.uniform(112.0, 128.0), hc[1] + rng.uniform(108.0, 122.0)],
        [cz - rng.uniform(35.0, 120.0), cz + rng.uniform(40.0, 120.0)],
    ];
    fov[2][1] = fov[2][1].min(fov[2][0] + 250.0);
    let out_of_view = (rng.unit() < profile.p_one_side_out).then(|| {
        if rng.unit() < 0.5 {
            Side::L
        } else {
            Side::R
        }
    });
    // Every shown joint well inside; the hidden one's centre 5-35 mm outside its x face.
    for s in Side::BOTH {
        let c = joints[s.index()];
        if out_of_view == Some(s) {
            continue;
        }
        for a in 0..3 {
            fov[a][0] = fov[a][0].min(c[a] - IN_VIEW_MARGIN_MM);
            fov[a][1] = fov[a][1].max(c[a] + IN_VIEW_MARGIN_MM);
        }
    }
    if let Some(s) = out_of_view {
        let c = joints[s.index()][0];
        let cut = rng.uniform(5.0, 35.0);
        match s {
            Side::R => fov[0][1] = c - cut,
            Side::L => fov[0][0] = c + cut,
        }
    }
    let inplane = rng.uniform(profile.inplane_mm[0], profile.inplane_mm[1]);
    let slice = rng.uniform(profile.slice_mm[0], profile.slice_mm[1]);
    let spacing = [inplane, inplane, slice];
    // A scanner's matrix is bounded: a wide field of view gets bigger voxels. Then the box is
    // snapped to whole voxels (about its centre), so the affine is exact.
    let extent = [0, 1, 2].map(|a| fov[a][1] - fov[a][0]);
    let spacing = [0, 1, 2].map(|a| spacing[a].max(extent[a] / profile.max_matrix[a] as f64));
    for a in 0..3 {
        let n = (extent[a] / spacing[a]).round().max(1.0);
        let mid = 0.5 * (fov[a][0] + fov[a][1]);
        fov[a] = [mid - 0.5 * n * spacing[a], mid + 0.5 * n * spacing[a]];
    }
    let hu_offset = rng.sym(profile.max_hu_offset);
    let noise_sigma = [5.0, 12.0, 25.0, 45.0][(rng.unit() * 4.0).min(3.0) as usize];
    let table = (rng.unit() < profile.p_table).then(|| {
        let back = back_of_head(ph, &pose, &fov);
        let rest_radius = rng.uniform(85.0, 110.0);
        let top_y = back - rng.uniform(8.0, 25.0);
        Table {
            top_y,
            shell_mm: rng.uniform(2.0, 4.0),
            core_mm: rng.uniform(15.0, 35.0),
            shell_hu: rng.uniform(200.0, 700.0),
            core_hu: rng.uniform(-950.0, -700.0),
            rest_axis: [hc[0], back + rest_radius - rng.uniform(0.0, 3.0)],
            rest_radius,
            rest_mm: rng.uniform(3.0, 6.0),
            rest_hu: rng.uniform(50.0, 300.0),
        }
    });
    let mut metal = Vec::new();
    if rng.unit() < profile.p_metal {
        let n = 1 + (rng.unit() * 4.0).min(3.0) as usize;
        for _ in 0..n {
            let s = if rng.unit() < 0.5 { -1.0 } else { 1.0 };
            let a = rng.uniform(25.0, 90.0).to_radians();
            let p = [s * 42.0 * a.cos(), -2.0 + 74.0 * a.sin(), rng.uniform(-52.0, -38.0)];
            metal.push(Metal {
                center: pose.to_world(p),
                radius: rng.uniform(1.5, 3.0),
                streak_hu: rng.uniform(150.0, 500.0),
                rays: (6 + (rng.unit() * 9.0) as usize) as f64,
                phase: rng.uniform(0.0, std::f64::consts::PI),
                decay_mm: rng.uniform(30.0, 70.0),
            });
        }
    }
    Scan { pose, fov, spacing, hu_offset, noise_sigma, table, metal, out_of_view }
}

/// The lowest world y of the head (its occiput, where a supine head rests), probed on a 6 mm
/// lattice of x, z columns through the field of view.
fn back_of_head(ph: &Phantom, pose: &Pose, fov: &[[f64; 2]; 3]) -> f64 {
    let mut ph = ph.clone();
    ph.pose = *pose;
    let mut lowest = f64::INFINITY;
    let mut x = fov[0][0];
    while x <= fov[0][1] {
        let mut z = fov[2][0];
        while z <= fov[2][1] {
            let mut y = fov[1][0];
            while y < lowest.min(fov[1][1]) {
                if ph.eval([x, y, z]).tissue != Tissue::Air {
                    lowest = y;
                    break;
                }
                y += 2.0;
            }
            z += 6.0;
        }
        x += 6.0;
    }
    if lowest.is_finite() {
        lowest
    } else {
        fov[1][0] + 20.0
    }
}

/// Clean HU of the scan at world `w` (before blur, noise and offset): the phantom (already in the
/// scan's pose), the table where the phantom is air, metal and its streaks.
pub fn scan_hu(ph: &Phantom, scan: &Scan, w: V3) -> f64 {
    let e = ph.eval(w);
    if scan.metal.iter().any(|m| m.inside(w)) {
        return Metal::HU;
    }
    let mut hu = e.hu;
    if e.tissue == Tissue::Air {
        if let Some(t) = scan.table.and_then(|t| t.hu(w)) {
            hu = t;
        }
    }
    hu + scan.metal.iter().map(|m| m.streak(w)).sum::<f64>()
}

/// The scan rendered on any grid (`dims`, voxel -> world `affine`): blurred, noisy, offset,
/// whole HU in [-1024, 3071]. `ph` must carry the scan's pose. Tests use it to render the same
/// head in other orientations (LPS, oblique).
pub fn render_scan(ph: &Phantom, scan: &Scan, dims: [usize; 3], affine: &Affine) -> Volume {
    let [_, h, w] = dims;
    let edges = [0, 1, 2].map(|c| [0, 1, 2].map(|r| affine[r][c]));
    let mut ct = vec![0f32; dims.iter().product()];
    ct.par_chunks_mut(h * w).enumerate().for_each(|(i, slab)| {
        for j in 0..h {
            for k in 0..w {
                let p = orientation::apply(affine, [i as f64, j as f64, k as f64]);
                slab[j * w + k] = voxel_mean(p, edges, |q| scan_hu(ph, scan, q)) as f32;
            }
        }
    });
    finish_scan(&mut ct, dims, scan, ph.noise_key(0x5ca));
    let mut v = Volume::zeros([0, 0, 0], [1.0; 3]);
    v.dims = dims;
    v.spacing = [0, 1, 2].map(|c| orientation::column_norm(affine, c));
    v.affine = *affine;
    v.data = ct;
    v
}

/// Partial-volume blur (half a voxel), noise, the HU offset, then whole HU.
pub fn finish_scan(ct: &mut [f32], dims: [usize; 3], scan: &Scan, noise_key: u64) {
    blur(ct, dims, 0.5);
    add_noise(ct, noise_key, scan.noise_sigma);
    let off = scan.hu_offset as f32;
    ct.iter_mut().for_each(|v| *v = (*v + off).round().clamp(-1024.0, 3071.0));
}

/// World position of a phantom's joint centre under the scan's pose.
pub fn joint_center(ph: &Phantom, scan: &Scan, side: Side) -> V3 {
    scan.pose.to_world(ph.joint(side).center())
}

/// The superior direction of the head under the scan's pose.
pub fn head_up(scan: &Scan) -> V3 {
    mat_vec(&scan.pose.rot, [0.0, 0.0, 1.0])
}
