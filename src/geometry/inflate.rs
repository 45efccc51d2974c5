//! The negative volume (NV) of one joint: the condylar head's surface inflated along its outward
//! normals until the temporal bone (TB) confines it (the paper's definition, made exact in
//! ARCHITECTURE.md, "The negative volume, precisely").
//!
//! The steps, each with one CPU and one GPU arm chosen by the `device` argument:
//! 1. fill MC's internal cavities (marrow is not joint space; host, both devices);
//! 2. **surface**: marching cubes of MC's largest 26-connected piece (the condyle: a stray fragment
//!    standing higher is not its top) at 0.5, points `p` with outward normals `n`, in the
//!    millimetre frame `index * spacing`; the normals are averaged over their neighbourhood
//!    (host, both devices) so they follow the smooth surface rather than the voxel staircase;
//! 3. **head**: the points within `head_depth_mm` of MC's highest point along the patient's
//!    superior direction (world +z through the affine) whose normal points up (`n . up > min_up`)
//!    and which connect to the highest point through such points (not a coronoid process);
//! 4. **SDF** of TB, then **march** `p + t n`, `0 < t <= max_mm`, from every head point through it
//!    (trilinear, conservative sphere-tracing steps); the first entry into TB is the hit `h(p)`;
//! 5. **owners**: every surface point marks the voxel it falls in; a **feature transform** over
//!    those seed voxels gives every voxel its nearest point on the *whole* MC surface;
//! 6. **voxelise**: a voxel outside MC and TB is NV when its nearest surface point is a head point
//!    with a hit, it lies on the normal side (`(v - p) . n > 0`) and within `h(p) + e/2` of `p`
//!    (`e`: the voxel's extent along `n`; the segment ends on the TB boundary inside the cell of
//!    the last voxel it reaches, and that voxel is counted);
//! 7. **mesh**: marching cubes of the NV mask, through the volume's affine.
//!
//! Beside the volume it reports the joint spaces clinicians read (anterior, superior, posterior:
//! the hits along 45 deg anterior-superior, superior and 45 deg posterior-superior in the sagittal
//! plane through the condyle's top) and min, mean, median over all hits. The CPU arm is the
//! reference; `tests/geometry_gpu.rs` checks that the GPU arm agrees voxel for voxel.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::components::{fill_cavities, largest, Connectivity};
use super::edt::{FeatureTransform, NO_FEATURE};
use super::mesh::Mesh;
use super::smooth::{neighbours, smooth_normals};
use super::{check_len, check_spacing, spacing_affine};
use crate::tensor::Device;
use crate::volume::Volume;
use crate::{Error, Result};

const OP: &str = "negative_volume";

/// Rounds of normal averaging on the MC surface ([`smooth_normals`]): enough to span the
/// staircase walls of a voxelised condyle (about `sqrt(2 r / s)` voxels high, 5 for r = 5 mm at
/// 0.4 mm), so head selection and the march follow the smooth surface, not the voxel faces.
const NORMAL_SMOOTHING: usize = 16;

/// The definition's three numbers (ARCHITECTURE.md, "The negative volume, precisely").
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NvParams {
    /// Depth of the condylar head below MC's highest point (mm): only surface within it inflates.
    pub head_depth_mm: f64,
    /// Smallest superior component of an inflated point's normal (`n . up > min_up`).
    pub min_up: f64,
    /// Longest march along a normal (mm): head points that meet no TB within it are not
    /// confined and contribute nothing.
    pub max_mm: f64,
}

impl Default for NvParams {
    fn default() -> Self {
        NvParams { head_depth_mm: 7.0, min_up: 0.0, max_mm: 10.0 }
    }
}

impl NvParams {
    /// # Errors
    /// [`Error::Arg`] naming the value that is not finite or out of range.
    pub fn validate(&self) -> Result<()> {
        if !(self.head_depth_mm.is_finite() && self.head_depth_mm > 0.0) {
            return Err(Error::arg(
                OP,
                format!("head_depth_mm must be > 0, got {}", self.head_depth_mm),
            ));
        }
        if !(self.min_up.is_finite() && (-1.0..1.0).contains(&self.min_up)) {
            return Err(Error::arg(OP, format!("min_up must be in [-1, 1), got {}", self.min_up)));
        }
        if !(self.max_mm.is_finite() && self.max_mm > 0.0) {
            return Err(Error::arg(OP, format!("max_mm must be > 0, got {}", self.max_mm)));
        }
        Ok(())
    }
}

/// Hit statistics of the normal marches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct HitStats {
    /// MC surface points (mesh vertices).
    pub surface_points: usize,
    /// Points of the condylar head (the ones inflated).
    pub head_points: usize,
    /// Head points whose ray entered TB within `max_mm`.
    pub hits: usize,
    /// Mean, minimum and maximum hit distance (mm) over the hits (0 without hits).
    pub mean_hit_mm: f64,
    pub min_hit_mm: f64,
    pub max_hit_mm: f64,
}

/// Joint spaces (mm); `None` where no head point in that direction met TB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JointSpaces {
    /// Along 45 deg anterior-superior in the sagittal plane through the condyle's top.
    pub anterior: Option<f64>,
    /// Along superior.
    pub superior: Option<f64>,
    /// Along 45 deg posterior-superior.
    pub posterior: Option<f64>,
    /// Over all hits of the head.
    pub min: Option<f64>,
    pub mean: Option<f64>,
    pub median: Option<f64>,
}

/// What [`negative_volume`] returns.
#[derive(Clone, Debug)]
pub struct NvResult {
    /// NV mask, 0/1, in MC's grid (same dims, spacing and affine).
    pub nv: Volume,
    /// NV voxel count times voxel volume (mm^3).
    pub volume_mm3: f64,
    pub joint_space_mm: JointSpaces,
    pub stats: HitStats,
    /// Marching-cubes mesh of the NV mask in world millimetres (MC's affine).
    pub mesh: Mesh,
}

/// The negative volume between aligned MC and TB masks (foreground `> 0.5`).
///
/// Values other than 0 and 1 are read as `> 0.5` with a one-line warning on stderr naming them.
///
/// # Errors
/// [`Error::Shape`] when the volumes differ in dims or spacing; [`Error::Arg`] for an empty MC or
/// TB mask, bad `params` or an affine without a superior direction; [`Error::Cuda`] when `device`
/// is a GPU that cannot be used.
pub fn negative_volume(
    mc: &Volume,
    tb: &Volume,
    params: &NvParams,
    device: Device,
) -> Result<NvResult> {
    if mc.dims != tb.dims {
        return Err(Error::shape(OP, mc.dims, tb.dims));
    }
    if mc.spacing.iter().zip(&tb.spacing).any(|(a, b)| (a - b).abs() > 1e-6 * a.abs()) {
        return Err(Error::shape("negative_volume (spacing)", mc.spacing, tb.spacing));
    }
    params.validate()?;
    for (what, v) in [("MC", mc), ("TB", tb)] {
        if let Some(w) = mask_warning(what, &v.data) {
            eprintln!("dnvs-engine: warning: {w}");
        }
    }
    let m = super::mask_from(&mc.data, 0.5);
    let t = super::mask_from(&tb.data, 0.5);
    for (what, mask) in [("MC", &m), ("TB", &t)] {
        if !mask.iter().any(|&b| b) {
            return Err(Error::arg(
                OP,
                format!("the {what} mask is empty (no voxel > 0.5): there is no joint to measure"),
            ));
        }
    }
    let frame = Frame::of(&mc.affine, mc.spacing)?;
    let core = inflate_masks(&m, &t, mc.dims, mc.spacing, &frame, params, device)?;
    let count = core.nv.iter().filter(|&&b| b).count();
    let volume_mm3 = count as f64 * mc.spacing.iter().product::<f64>();
    let nvf: Vec<f32> = core.nv.iter().map(|&b| b as u8 as f32).collect();
    let mesh = surface_of(&nvf, mc.dims, &mc.affine, device)?;
    let joint_space_mm = joint_spaces(&core, &frame, mc.spacing);
    Ok(NvResult { nv: mc.with_data(nvf), volume_mm3, joint_space_mm, stats: core.stats, mesh })
}

/// A one-line description of the values of a mask that are neither 0 nor 1, or `None`.
pub fn mask_warning(what: &str, data: &[f32]) -> Option<String> {
    let odd: Vec<f32> = data.iter().copied().filter(|&v| v != 0.0 && v != 1.0).collect();
    if odd.is_empty() {
        return None;
    }
    let mut seen: Vec<f32> = Vec::new();
    for &v in &odd {
        if seen.len() >= 5 {
            break;
        }
        if !seen.iter().any(|&s| s == v || (s.is_nan() && v.is_nan())) {
            seen.push(v);
        }
    }
    let list: Vec<String> = seen.iter().map(|v| format!("{v}")).collect();
    Some(format!(
        "the {what} mask is not 0/1: {} voxels hold other values ({}{}); foreground is taken as > 0.5",
        odd.len(),
        list.join(", "),
        if seen.len() == 5 { ", ..." } else { "" }
    ))
}

// ---- frame ------------------------------------------------------------------------------------

/// The patient's directions in the millimetre frame `index * spacing`: unit gradients of world
/// x (right), y (anterior) and z (superior) through the affine, so oblique and LPS volumes
/// inflate the same anatomy.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    pub right: [f64; 3],
    pub anterior: [f64; 3],
    pub up: [f64; 3],
}

impl Frame {
    pub(crate) fn of(affine: &[[f64; 4]; 4], spacing: [f64; 3]) -> Result<Frame> {
        check_spacing(OP, spacing)?;
        let row = |r: usize| -> Result<[f64; 3]> {
            let g = [0, 1, 2].map(|a| affine[r][a] / spacing[a]);
            let len = dot(g, g).sqrt();
            if !(len.is_finite() && len > 0.0) {
                return Err(Error::arg(
                    OP,
                    format!("the affine has no world axis {r} direction (row {:?})", affine[r]),
                ));
            }
            Ok(g.map(|x| x / len))
        };
        Ok(Frame { right: row(0)?, anterior: row(1)?, up: row(2)? })
    }
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn f64s(v: [f32; 3]) -> [f64; 3] {
    v.map(|x| x as f64)
}

// ---- the steps --------------------------------------------------------------------------------

/// Everything the inflation computed on the masks (millimetre frame).
pub(crate) struct Core {
    pub nv: Vec<bool>,
    pub surface: Mesh,
    pub head: Vec<bool>,
    /// Per surface point: its hit distance (head points that met TB only).
    pub hits: Vec<Option<f64>>,
    /// MC's highest surface point.
    pub top: [f64; 3],
    pub stats: HitStats,
}

/// Steps 1-6 on boolean masks; see the module docs.
pub(crate) fn inflate_masks(
    mc: &[bool],
    tb: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    frame: &Frame,
    params: &NvParams,
    device: Device,
) -> Result<Core> {
    check_len(OP, mc.len(), dims)?;
    check_len(OP, tb.len(), dims)?;
    check_spacing(OP, spacing)?;
    params.validate()?;
    let mc = fill_cavities(mc, dims);
    // The condyle is MC's largest piece: a stray fragment of a segmentation (or a coronoid tip)
    // standing higher must not become "the top" whose head is inflated.
    let condyle = largest(&mc, dims, Connectivity::TwentySix, 1)?;
    let mcf: Vec<f32> = condyle.iter().map(|&b| b as u8 as f32).collect();
    let mut surface = surface_of(&mcf, dims, &spacing_affine(spacing), device)?;
    smooth_normals(&mut surface, NORMAL_SMOOTHING);
    let (head, top) = head_points(&surface, frame.up, params);
    let phi = signed_distance_of(tb, dims, spacing, device)?;
    let hits = march(&phi, dims, spacing, &surface, &head, params.max_mm, device)?;
    let owner = owners(&surface, dims, spacing);
    let seeds: Vec<bool> = owner.iter().map(|&o| o != NO_FEATURE).collect();
    let ft = feature_transform_of(&seeds, dims, spacing, device)?;
    let input = VoxeliseInput { mc: &mc, tb, dims, spacing, surface: &surface, hits: &hits };
    let nv = voxelise(&input, &owner, &ft, device)?;
    let mut stats = hit_stats(&hits);
    stats.head_points = head.iter().filter(|&&h| h).count();
    Ok(Core { nv, surface, head, hits, top, stats })
}

/// Marching cubes of `field` at 0.5 through `affine`, on `device`.
fn surface_of(
    field: &[f32],
    dims: [usize; 3],
    affine: &[[f64; 4]; 4],
    device: Device,
) -> Result<Mesh> {
    match device {
        Device::Cpu => super::marching_cubes(field, dims, 0.5, affine),
        Device::Cuda(o) => super::gpu::marching_cubes(field, dims, 0.5, affine, o),
    }
}

fn signed_distance_of(
    mask: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    device: Device,
) -> Result<Vec<f32>> {
    match device {
        Device::Cpu => super::signed_distance(mask, dims, spacing),
        Device::Cuda(o) => super::gpu::signed_distance(mask, dims, spacing, o),
    }
}

fn feature_transform_of(
    seeds: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
    device: Device,
) -> Result<FeatureTransform> {
    match device {
        Device::Cpu => super::feature_transform(seeds, dims, spacing),
        Device::Cuda(o) => super::gpu::feature_transform(seeds, dims, spacing, o),
    }
}

/// The head's points and MC's highest point (along `up`): the vertices within `head_depth_mm`
/// below the top whose normals face up, and of those only the ones connected (along mesh
/// edges) to the highest: other bone of the mandible that rises into the depth band (a coronoid
/// process in a large VOI) is not the condylar head.
fn head_points(surface: &Mesh, up: [f64; 3], params: &NvParams) -> (Vec<bool>, [f64; 3]) {
    let height: Vec<f64> = surface.vertices.iter().map(|p| dot(f64s(*p), up)).collect();
    let Some(top_i) = (0..height.len()).max_by(|&a, &b| height[a].total_cmp(&height[b])) else {
        return (Vec::new(), [0.0; 3]);
    };
    let floor = height[top_i] - params.head_depth_mm;
    let candidate: Vec<bool> = (0..height.len())
        .map(|i| height[i] >= floor && dot(f64s(surface.normals[i]), up) > params.min_up)
        .collect();
    // Start from the highest candidate (the top vertex itself unless its normal is odd).
    let start = (0..height.len())
        .filter(|&i| candidate[i])
        .max_by(|&a, &b| height[a].total_cmp(&height[b]));
    let mut head = vec![false; height.len()];
    if let Some(start) = start {
        let (first, nbr) = neighbours(surface);
        let mut stack = vec![start];
        head[start] = true;
        while let Some(v) = stack.pop() {
            for &u in &nbr[first[v]..first[v + 1]] {
                let u = u as usize;
                if candidate[u] && !head[u] {
                    head[u] = true;
                    stack.push(u);
                }
            }
        }
    }
    (head, f64s(surface.vertices[top_i]))
}

/// Hit distance of every head point (`None` elsewhere and where no TB is met within `max_mm`).
fn march(
    phi: &[f32],
    dims: [usize; 3],
    spacing: [f64; 3],
    surface: &Mesh,
    head: &[bool],
    max_mm: f64,
    device: Device,
) -> Result<Vec<Option<f64>>> {
    let ids: Vec<usize> = (0..head.len()).filter(|&i| head[i]).collect();
    let marched: Vec<Option<f64>> = match device {
        Device::Cpu => {
            let field = Field { phi, dims, spacing };
            ids.par_iter()
                .map(|&i| {
                    let (p, n) = (f64s(surface.vertices[i]), f64s(surface.normals[i]));
                    field.march(p, n, max_mm)
                })
                .collect()
        }
        Device::Cuda(o) => {
            let pts: Vec<[f32; 3]> = ids.iter().map(|&i| surface.vertices[i]).collect();
            let nrm: Vec<[f32; 3]> = ids.iter().map(|&i| surface.normals[i]).collect();
            super::gpu::march(phi, dims, spacing, &pts, &nrm, max_mm, o)?
        }
    };
    let mut hits = vec![None; head.len()];
    for (&i, h) in ids.iter().zip(marched) {
        hits[i] = h;
    }
    Ok(hits)
}

/// Each surface point marks the voxel it falls in; a voxel keeps its closest point (the first on
/// ties). Voxels without a point hold [`NO_FEATURE`].
fn owners(surface: &Mesh, dims: [usize; 3], spacing: [f64; 3]) -> Vec<u32> {
    let [d, h, w] = dims;
    let mut owner = vec![NO_FEATURE; d * h * w];
    let mut owner_d = vec![f64::INFINITY; d * h * w];
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
    owner
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

/// Host inputs of the voxelisation.
pub(crate) struct VoxeliseInput<'a> {
    /// MC with its cavities filled.
    pub mc: &'a [bool],
    pub tb: &'a [bool],
    pub dims: [usize; 3],
    pub spacing: [f64; 3],
    pub surface: &'a Mesh,
    pub hits: &'a [Option<f64>],
}

impl VoxeliseInput<'_> {
    /// No voxel farther than the longest hit plus a voxel diagonal from its nearest seed voxel
    /// can be NV (its nearest seed is at most a diagonal from its nearest surface point).
    pub fn reach_and_slack(&self) -> (f64, f64) {
        let reach = self.hits.iter().flatten().copied().fold(0.0, f64::max);
        let slack = self.spacing.iter().map(|s| s * s).sum::<f64>().sqrt();
        (reach, slack)
    }
}

/// Step 6 on `device`.
fn voxelise(
    x: &VoxeliseInput,
    owner: &[u32],
    ft: &FeatureTransform,
    device: Device,
) -> Result<Vec<bool>> {
    if let Device::Cuda(o) = device {
        return super::gpu::voxelise(x, owner, ft, o);
    }
    let [_, h, w] = x.dims;
    let (reach, slack) = x.reach_and_slack();
    let n: usize = x.dims.iter().product();
    Ok((0..n)
        .into_par_iter()
        .map(|q| {
            if x.mc[q]
                || x.tb[q]
                || ft.nearest[q] == NO_FEATURE
                || ft.dist[q] as f64 > reach + slack
            {
                return false;
            }
            let vi = owner[ft.nearest[q] as usize] as usize;
            let Some(hp) = x.hits[vi] else { return false };
            let p = x.surface.vertices[vi];
            let nrm = x.surface.normals[vi];
            let idx = [q / (h * w), (q / w) % h, q % w];
            let mut along = 0.0;
            let mut len2 = 0.0;
            for a in 0..3 {
                let d = idx[a] as f64 * x.spacing[a] - p[a] as f64;
                along += d * nrm[a] as f64;
                len2 += d * d;
            }
            // The segment ends on the TB boundary, inside the cell of the last NV voxel along
            // it: half the voxel's extent along the normal counts that cell in.
            let half: f64 =
                0.5 * (0..3).map(|a| (nrm[a] as f64 * x.spacing[a]).powi(2)).sum::<f64>().sqrt();
            along > 0.0 && len2.sqrt() <= hp + half
        })
        .collect())
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

// ---- joint spaces -----------------------------------------------------------------------------

/// Normals within this angle of a measuring direction count for it.
const DIRECTION_TOL_DEG: f64 = 15.0;

/// The joint spaces of an inflation (see [`JointSpaces`]): per direction the mean hit of the head
/// points near the sagittal plane through MC's top (within a voxel diagonal, at least 1 mm)
/// whose normals lie within 15 deg of it, else of the single best-aligned one within 30 deg.
fn joint_spaces(core: &Core, frame: &Frame, spacing: [f64; 3]) -> JointSpaces {
    let all: Vec<f64> = core.hits.iter().flatten().copied().collect();
    let mut js = JointSpaces::default();
    if !all.is_empty() {
        let mut sorted = all.clone();
        sorted.sort_by(f64::total_cmp);
        let m = sorted.len();
        js.min = Some(sorted[0]);
        js.mean = Some(all.iter().sum::<f64>() / m as f64);
        js.median = Some(if m % 2 == 1 {
            sorted[m / 2]
        } else {
            0.5 * (sorted[m / 2 - 1] + sorted[m / 2])
        });
    }
    let band = spacing.iter().map(|s| s * s).sum::<f64>().sqrt().max(1.0);
    let near: Vec<usize> = (0..core.head.len())
        .filter(|&i| core.head[i])
        .filter(|&i| {
            let p = f64s(core.surface.vertices[i]);
            let d = [0, 1, 2].map(|a| p[a] - core.top[a]);
            dot(d, frame.right).abs() <= band
        })
        .collect();
    let s = std::f64::consts::FRAC_1_SQRT_2;
    let dir = |ant: f64, sup: f64| [0, 1, 2].map(|a| ant * frame.anterior[a] + sup * frame.up[a]);
    let along = |d: [f64; 3]| -> Option<f64> {
        let cos = |i: usize| dot(f64s(core.surface.normals[i]), d);
        let tol = DIRECTION_TOL_DEG.to_radians().cos();
        let close: Vec<usize> = near.iter().copied().filter(|&i| cos(i) >= tol).collect();
        let chosen = if close.is_empty() {
            let best = near.iter().copied().max_by(|&a, &b| cos(a).total_cmp(&cos(b)))?;
            (cos(best) >= (2.0 * DIRECTION_TOL_DEG).to_radians().cos()).then_some(vec![best])?
        } else {
            close
        };
        let h: Vec<f64> = chosen.iter().filter_map(|&i| core.hits[i]).collect();
        (!h.is_empty()).then(|| h.iter().sum::<f64>() / h.len() as f64)
    };
    js.anterior = along(dir(s, s));
    js.superior = along(dir(0.0, 1.0));
    js.posterior = along(dir(-s, s));
    js
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_checked() {
        assert!(NvParams::default().validate().is_ok());
        for bad in [
            NvParams { head_depth_mm: 0.0, ..Default::default() },
            NvParams { min_up: 1.0, ..Default::default() },
            NvParams { max_mm: f64::NAN, ..Default::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mask_warnings_name_the_values() {
        assert_eq!(mask_warning("MC", &[0.0, 1.0, 1.0]), None);
        let w = mask_warning("TB", &[0.0, 255.0, 2.0, 255.0, -1.0]).unwrap();
        assert!(w.contains("TB") && w.contains("4 voxels") && w.contains("255, 2, -1"), "{w}");
    }

    #[test]
    fn lps_frame_points_up() {
        // LPS-flipped x and y, z along -k (superior = decreasing k) with 2 mm slices.
        let mut aff = spacing_affine([0.5, 0.5, 2.0]);
        aff[0][0] = -0.5;
        aff[1][1] = -0.5;
        aff[2][2] = -2.0;
        let f = Frame::of(&aff, [0.5, 0.5, 2.0]).unwrap();
        assert_eq!(f.up, [0.0, 0.0, -1.0]);
        assert_eq!(f.anterior, [0.0, -1.0, 0.0]);
    }
}
