//! The negative volume: the mandibular condyle (MC) surface grows along its outward normals until
//! it meets the temporal bone (TB); the swept region is the joint's negative volume (NV).
//!
//! Exactly as ARCHITECTURE.md ("The negative volume, precisely") defines it:
//! 1. marching cubes of the MC mask at 0.5 gives surface points `p` with outward normals `n`;
//! 2. from each `p`, march `p + t n` for `0 < t <= t_max` through the signed distance field of TB
//!    (trilinear, mm) with conservative sphere-tracing steps; the first `t` where the field turns
//!    negative (refined linearly between the last two samples) is the hit distance `h(p)`;
//! 3. a voxel outside MC and TB belongs to NV when its nearest surface point `p` (feature
//!    transform over the voxels holding the surface points) has a hit and the voxel lies within
//!    `h(p)` of `p` on the normal side (`(v - p) . n > 0`, `|v - p| <= h(p) + e/2`, where `e` is
//!    the voxel's extent along `n`: the segment's end lies on the TB boundary, inside the cell of
//!    the last voxel it reaches, and that voxel is counted).
//!
//! Work happens in the axis-aligned millimetre frame `index * spacing`; only the NV mesh is mapped
//! through the volume's affine at the end.

use rayon::prelude::*;
use serde::Serialize;

use super::edt::{feature_transform, signed_distance, NO_FEATURE};
use super::marching_cubes::marching_cubes;
use super::mesh::Mesh;
use super::{check_len, check_spacing, spacing_affine};
use crate::io::Volume;
use crate::{Error, Result};

/// Settings of [`inflate`].
#[derive(Clone, Copy, Debug)]
pub struct InflateConfig {
    /// Longest march along a normal (mm): surface points that meet no TB within it contribute
    /// nothing.
    pub max_mm: f64,
}

impl Default for InflateConfig {
    fn default() -> Self {
        InflateConfig { max_mm: 10.0 }
    }
}

/// Hit statistics of the normal marches.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct HitStats {
    /// MC surface points (mesh vertices).
    pub surface_points: usize,
    /// Points whose ray entered TB within `max_mm`.
    pub hits: usize,
    /// Mean, minimum and maximum hit distance (mm) over the hits (0 without hits).
    pub mean_hit_mm: f64,
    pub min_hit_mm: f64,
    pub max_hit_mm: f64,
}

/// The result of [`inflate`].
#[derive(Clone, Debug)]
pub struct Inflation {
    /// NV mask, row-major `(D, H, W)` in the input's geometry.
    pub nv: Vec<bool>,
    /// NV volume: voxel count times voxel volume (mm^3).
    pub volume_mm3: f64,
    /// Marching-cubes mesh of the NV mask in world millimetres.
    pub mesh: Mesh,
    pub stats: HitStats,
}

/// Inflation of two aligned mask volumes (foreground `> 0.5`); the NV mesh is in the MC volume's
/// world frame.
///
/// # Errors
/// [`Error::Shape`] when the volumes do not have the same dims and spacing.
pub fn inflate(mc: &Volume, tb: &Volume, cfg: InflateConfig) -> Result<Inflation> {
    if mc.dims != tb.dims {
        return Err(Error::shape("inflate", mc.dims, tb.dims));
    }
    if mc.spacing.iter().zip(&tb.spacing).any(|(a, b)| (a - b).abs() > 1e-6 * a.abs()) {
        return Err(Error::shape("inflate (spacing)", mc.spacing, tb.spacing));
    }
    let m = super::mask_from(&mc.data, 0.5);
    let t = super::mask_from(&tb.data, 0.5);
    inflate_masks(&m, &t, mc.dims, mc.spacing, &mc.affine, cfg)
}

/// The argument checks every inflation (CPU or GPU) makes: mask lengths, spacing, `max_mm`.
pub(crate) fn check_inflate_args(
    mc: &[bool],
    tb: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    cfg: InflateConfig,
) -> Result<()> {
    check_len("inflate", mc.len(), dims)?;
    check_len("inflate", tb.len(), dims)?;
    check_spacing("inflate", spacing)?;
    if !(cfg.max_mm.is_finite() && cfg.max_mm > 0.0) {
        return Err(Error::arg("inflate", format!("max_mm must be > 0, got {}", cfg.max_mm)));
    }
    Ok(())
}

/// Inflation of boolean masks; `affine` maps voxel indices to the frame of the returned mesh.
pub fn inflate_masks(
    mc: &[bool],
    tb: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    affine: &[[f64; 4]; 4],
    cfg: InflateConfig,
) -> Result<Inflation> {
    check_inflate_args(mc, tb, dims, spacing, cfg)?;
    let mcf: Vec<f32> = mc.iter().map(|&b| b as u8 as f32).collect();
    let surface = marching_cubes(&mcf, dims, 0.5, &spacing_affine(spacing))?;
    let phi = signed_distance(tb, dims, spacing)?;
    let field = Field { phi: &phi, dims, spacing };
    let hits: Vec<Option<f64>> = surface
        .vertices
        .par_iter()
        .zip(surface.normals.par_iter())
        .map(|(p, n)| field.march(p.map(|x| x as f64), n.map(|x| x as f64), cfg.max_mm))
        .collect();
    let stats = hit_stats(&hits);
    let nv = voxelise(mc, tb, dims, spacing, &surface, &hits)?;
    let count = nv.iter().filter(|&&b| b).count();
    let volume_mm3 = count as f64 * spacing.iter().product::<f64>();
    let nvf: Vec<f32> = nv.iter().map(|&b| b as u8 as f32).collect();
    let mesh = marching_cubes(&nvf, dims, 0.5, affine)?;
    Ok(Inflation { nv, volume_mm3, mesh, stats })
}

fn hit_stats(hits: &[Option<f64>]) -> HitStats {
    let h: Vec<f64> = hits.iter().flatten().copied().collect();
    let mut s = HitStats { surface_points: hits.len(), hits: h.len(), ..Default::default() };
    if !h.is_empty() {
        s.mean_hit_mm = h.iter().sum::<f64>() / h.len() as f64;
        s.min_hit_mm = h.iter().copied().fold(f64::INFINITY, f64::min);
        s.max_hit_mm = h.iter().copied().fold(0.0, f64::max);
    }
    s
}

/// TB's signed distance field, trilinear in the millimetre frame.
struct Field<'a> {
    phi: &'a [f32],
    dims: [usize; 3],
    spacing: [f64; 3],
}

impl Field<'_> {
    /// Trilinear value at `x` (mm); `None` outside the voxel-centre box.
    fn at(&self, x: [f64; 3]) -> Option<f64> {
        let mut base = [0usize; 3];
        let mut frac = [0f64; 3];
        for a in 0..3 {
            let u = x[a] / self.spacing[a];
            let top = (self.dims[a] - 1) as f64;
            if !(0.0..=top).contains(&u) {
                return None;
            }
            let b = (u.floor() as usize).min(self.dims[a].saturating_sub(2));
            base[a] = b;
            frac[a] = u - b as f64;
        }
        let [_, h, w] = self.dims;
        let mut v = 0.0;
        for c in 0..8 {
            let o = [c & 1, (c >> 1) & 1, (c >> 2) & 1];
            let mut wgt = 1.0;
            let mut idx = [0usize; 3];
            for a in 0..3 {
                idx[a] = (base[a] + o[a]).min(self.dims[a] - 1);
                wgt *= if o[a] == 1 { frac[a] } else { 1.0 - frac[a] };
            }
            if wgt != 0.0 {
                v += wgt * self.phi[(idx[0] * h + idx[1]) * w + idx[2]] as f64;
            }
        }
        Some(v)
    }

    /// First `t` in `(0, t_max]` where `p + t n` enters TB (`phi <= 0`).
    fn march(&self, p: [f64; 3], n: [f64; 3], t_max: f64) -> Option<f64> {
        let smin = self.spacing.iter().copied().fold(f64::INFINITY, f64::min);
        let smax = self.spacing.iter().copied().fold(0.0, f64::max);
        let point = |t: f64| [p[0] + t * n[0], p[1] + t * n[1], p[2] + t * n[2]];
        let mut t = 0.0;
        let mut phi = self.at(p)?;
        if !phi.is_finite() {
            return None;
        }
        if phi <= 0.0 {
            return Some(0.0);
        }
        while t < t_max {
            // phi is a distance to voxel centres, at most one voxel diagonal off the distance to
            // the TB boundary; a quarter voxel is the floor so thin TB is never stepped over.
            let dt = (0.5 * (phi - smax)).max(0.25 * smin);
            let tn = (t + dt).min(t_max);
            let phin = self.at(point(tn))?;
            if phin <= 0.0 {
                return Some(t + (tn - t) * phi / (phi - phin));
            }
            t = tn;
            phi = phin;
        }
        None
    }
}

/// Voxels outside MC and TB whose nearest surface point has a hit and lies within its reach.
fn voxelise(
    mc: &[bool],
    tb: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    surface: &Mesh,
    hits: &[Option<f64>],
) -> Result<Vec<bool>> {
    let [d, h, w] = dims;
    let n = d * h * w;
    // Each surface point marks the voxel it falls in; a voxel keeps its closest point.
    let mut owner = vec![u32::MAX; n];
    let mut owner_d = vec![f64::INFINITY; n];
    for (vi, p) in surface.vertices.iter().enumerate() {
        let mut idx = [0usize; 3];
        let mut dd = 0.0;
        for a in 0..3 {
            let u = (p[a] as f64 / spacing[a]).round().clamp(0.0, (dims[a] - 1) as f64);
            idx[a] = u as usize;
            let e = p[a] as f64 - u * spacing[a];
            dd += e * e;
        }
        let q = (idx[0] * h + idx[1]) * w + idx[2];
        if dd < owner_d[q] {
            owner_d[q] = dd;
            owner[q] = vi as u32;
        }
    }
    let seeds: Vec<bool> = owner.iter().map(|&o| o != u32::MAX).collect();
    let ft = feature_transform(&seeds, dims, spacing)?;
    let reach = hits.iter().flatten().copied().fold(0.0, f64::max);
    // A voxel's nearest seed voxel is at most a voxel diagonal from its nearest surface point.
    let slack = spacing.iter().map(|s| s * s).sum::<f64>().sqrt();
    Ok((0..n)
        .into_par_iter()
        .map(|q| {
            if mc[q] || tb[q] || ft.nearest[q] == NO_FEATURE || ft.dist[q] as f64 > reach + slack {
                return false;
            }
            let vi = owner[ft.nearest[q] as usize] as usize;
            let Some(hp) = hits[vi] else { return false };
            let p = surface.vertices[vi];
            let nrm = surface.normals[vi];
            let idx = [q / (h * w), (q / w) % h, q % w];
            let mut along = 0.0;
            let mut len2 = 0.0;
            for a in 0..3 {
                let x = idx[a] as f64 * spacing[a] - p[a] as f64;
                along += x * nrm[a] as f64;
                len2 += x * x;
            }
            // The segment ends on the TB boundary, inside the cell of the last NV voxel along
            // it: half the voxel's extent along the normal counts that cell in.
            let half: f64 =
                0.5 * (0..3).map(|a| (nrm[a] as f64 * spacing[a]).powi(2)).sum::<f64>().sqrt();
            along > 0.0 && len2.sqrt() <= hp + half
        })
        .collect())
}
