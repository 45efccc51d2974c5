//! The three model-driven stages of the `nv` pipeline behind small traits, so the pipeline runs
//! end to end with stand-ins (tests, manual joint centres, HU thresholds) and with the trained
//! models alike.
//!
//! - [`Localizer`]: head CT -> per side the condyle centre and the CT cut on the VOI grid;
//! - [`Segmenter`]: VOI CT -> MC and TB probabilities on the VOI grid;
//! - [`NvMeasure`]: MC and TB masks -> negative volume, joint spaces, NV mesh.
//!
//! [`ModelSegmenter`] (the cards' models) and [`NegativeVolume`] (`geometry::negative_volume`)
//! are the real stages. ADAPTER until issue 10 lands on main: [`FixedCenters`] cuts the VOI
//! itself (not through `pipeline::localize::cut_voi`) from given centres; the pipeline code does
//! not change when the localiser replaces it.

use serde::{Deserialize, Serialize};

use crate::geometry::components::try_fill_cavities;
use crate::geometry::components::{label, Connectivity};
use crate::geometry::{self, negative_volume, HitStats, JointSpaces, Mesh, NvParams};
use crate::io::orientation::{self, Affine};
use crate::nn::model::LoadedModel;
use crate::synth::Side;
use crate::volume::Volume;
use crate::{Device, Error, Result};

/// A joint the localiser found.
#[derive(Clone, Debug)]
pub struct Located {
    /// Centre of the condylar head, world RAS mm.
    pub center_ras_mm: [f64; 3],
    /// The CT resampled on the VOI grid.
    pub voi: Volume,
    /// The localiser's confidence in [0, 1] (1 for given centres).
    pub score: f64,
}

/// One side's localisation outcome.
#[derive(Clone, Debug)]
pub enum SideFound {
    Found(Box<Located>),
    Missing { reason: String },
}

/// Head CT -> both joints, `[L, R]`.
pub trait Localizer {
    fn localize(&mut self, ct: &Volume) -> Result<[SideFound; 2]>;
    /// The model card (JSON), `None` when no model is involved.
    fn card(&self) -> Option<serde_json::Value> {
        None
    }
}

/// Foreground probabilities of MC and TB on the VOI grid.
#[derive(Clone, Debug)]
pub struct SegProbs {
    pub mc: Volume,
    pub tb: Volume,
}

/// VOI CT -> MC and TB probabilities.
pub trait Segmenter {
    /// `center_ras_mm` is the localiser's condyle centre (stand-ins use it; networks do not).
    fn segment(&mut self, voi: &Volume, center_ras_mm: [f64; 3]) -> Result<SegProbs>;
    /// Model cards of the MC and TB models.
    fn cards(&self) -> [Option<serde_json::Value>; 2] {
        [None, None]
    }
}

/// A negative-volume measurement on one VOI.
#[derive(Clone, Debug)]
pub struct NvOut {
    /// 0/1 mask on the MC grid.
    pub nv: Volume,
    pub volume_mm3: f64,
    pub joint_space_mm: JointSpaces,
    pub stats: HitStats,
    /// NV mesh in world mm.
    pub mesh: Mesh,
    /// MC with its internal cavities filled (what was inflated).
    pub mc_filled: Volume,
}

/// MC and TB masks -> NV.
pub trait NvMeasure {
    fn measure(&mut self, mc: &Volume, tb: &Volume) -> Result<NvOut>;
    /// The parameters, for the report.
    fn params(&self) -> serde_json::Value;
}

/// The stage set one pipeline run uses.
pub struct Stages {
    pub localizer: Box<dyn Localizer>,
    pub segmenter: Box<dyn Segmenter>,
    pub nv: Box<dyn NvMeasure>,
}

// ---- VOI geometry -----------------------------------------------------------------------------

/// The VOI grid: world-axis-aligned (RAS), `dims` voxels of `spacing_mm`, centred `raise_mm`
/// above the condyle centre so the fossa roof fits. Defaults are `synth`'s.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoiSpec {
    pub dims: [usize; 3],
    pub spacing_mm: f64,
    pub raise_mm: f64,
}

impl Default for VoiSpec {
    fn default() -> Self {
        VoiSpec { dims: [120, 150, 70], spacing_mm: crate::synth::VOI_SPACING, raise_mm: 2.0 }
    }
}

impl VoiSpec {
    /// The VOI's voxel-to-world affine around a condyle centre.
    pub fn affine(&self, center_ras_mm: [f64; 3]) -> Affine {
        let mut a = geometry::spacing_affine([self.spacing_mm; 3]);
        let raise = [0.0, 0.0, self.raise_mm];
        for ax in 0..3 {
            let half = self.spacing_mm * (self.dims[ax] as f64 - 1.0) / 2.0;
            a[ax][3] = center_ras_mm[ax] + raise[ax] - half;
        }
        a
    }

    /// An empty volume on the VOI grid (geometry only, zero data).
    pub fn grid(&self, center_ras_mm: [f64; 3]) -> Volume {
        let mut v = Volume::zeros(self.dims, [self.spacing_mm; 3]);
        v.affine = self.affine(center_ras_mm);
        v
    }
}

/// The inverse of a voxel-to-world affine.
///
/// # Errors
/// [`Error::Arg`] for a singular affine.
pub fn invert(a: &Affine) -> Result<Affine> {
    orientation::invert_affine(a)
        .ok_or_else(|| Error::arg("invert affine", format!("singular affine {a:?}")))
}

/// Whether world point `p` lies inside `vol`'s voxel footprint.
pub fn contains(vol: &Volume, p: [f64; 3]) -> Result<bool> {
    let ijk = orientation::apply(&invert(&vol.affine)?, p);
    Ok((0..3).all(|a| ijk[a] >= -0.5 && ijk[a] <= vol.dims[a] as f64 - 0.5))
}

/// How [`resample_onto`] reads between voxel centres.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sample {
    Linear,
    Nearest,
}

/// `src` resampled on `target`'s grid (dims and affine; `target.data` is ignored), through both
/// affines: any orientation, spacing and origin. Points outside `src` get `fill`.
///
/// # Errors
/// [`Error::Arg`] for a singular affine.
pub fn resample_onto(src: &Volume, target: &Volume, how: Sample, fill: f32) -> Result<Volume> {
    use rayon::prelude::*;
    let to_src = orientation::mul(&invert(&src.affine)?, &target.affine);
    let [_, h, w] = target.dims;
    let [sd, sh, sw] = src.dims;
    let at = |i: usize, j: usize, k: usize| src.data[(i * sh + j) * sw + k];
    let mut data = vec![fill; target.dims.iter().product()];
    data.par_chunks_mut((h * w).max(1)).enumerate().for_each(|(i, plane)| {
        for j in 0..h {
            for k in 0..w {
                let x = orientation::apply(&to_src, [i as f64, j as f64, k as f64]);
                let inside = (0..3).all(|a| x[a] >= -0.5 && x[a] <= src.dims[a] as f64 - 0.5);
                if !inside {
                    continue;
                }
                plane[j * w + k] = match how {
                    Sample::Nearest => {
                        let n = [0, 1, 2]
                            .map(|a| (x[a].round().max(0.0) as usize).min(src.dims[a] - 1));
                        at(n[0], n[1], n[2])
                    }
                    Sample::Linear => {
                        let c = [0, 1, 2].map(|a| x[a].clamp(0.0, (src.dims[a] - 1) as f64));
                        let b = [0, 1, 2]
                            .map(|a| (c[a].floor() as usize).min(src.dims[a].saturating_sub(2)));
                        let f = [0, 1, 2].map(|a| (c[a] - b[a] as f64) as f32);
                        let mut v = 0.0;
                        for corner in 0..8 {
                            let o = [corner & 1, (corner >> 1) & 1, (corner >> 2) & 1];
                            let idx = [0, 1, 2].map(|a| (b[a] + o[a]).min([sd, sh, sw][a] - 1));
                            let wgt: f32 =
                                (0..3).map(|a| if o[a] == 1 { f[a] } else { 1.0 - f[a] }).product();
                            if wgt != 0.0 {
                                v += wgt * at(idx[0], idx[1], idx[2]);
                            }
                        }
                        v
                    }
                };
            }
        }
    });
    Ok(Volume {
        data,
        dims: target.dims,
        spacing: target.spacing,
        affine: target.affine,
        header: src.header.clone(),
    })
}

/// The CT cut on the VOI grid around a condyle centre (trilinear; air outside the CT).
///
/// ADAPTER: the one shared VOI geometry is `pipeline::localize::cut_voi` (issue 10); this is
/// used until it lands.
pub fn cut_voi(ct: &Volume, center_ras_mm: [f64; 3], spec: &VoiSpec) -> Result<Volume> {
    resample_onto(ct, &spec.grid(center_ras_mm), Sample::Linear, -1024.0)
}

// ---- stand-ins and adapters -------------------------------------------------------------------

/// Localisation from known condyle centres (a phantom's truth, `dataset.json`, or a user's
/// `--joints`): a side without a centre, or whose centre is outside the CT, is missing.
pub struct FixedCenters {
    pub centers: [Option<[f64; 3]>; 2],
    pub voi: VoiSpec,
}

impl Localizer for FixedCenters {
    fn localize(&mut self, ct: &Volume) -> Result<[SideFound; 2]> {
        let one = |side: Side| -> Result<SideFound> {
            let Some(c) = self.centers[side.index()] else {
                return Ok(SideFound::Missing { reason: format!("no {side} joint centre given") });
            };
            if !contains(ct, c)? {
                return Ok(SideFound::Missing {
                    reason: format!(
                        "the {side} condyle centre ({:.1}, {:.1}, {:.1}) mm lies outside the CT's \
                         field of view",
                        c[0], c[1], c[2]
                    ),
                });
            }
            let voi = cut_voi(ct, c, &self.voi)?;
            Ok(SideFound::Found(Box::new(Located { center_ras_mm: c, voi, score: 1.0 })))
        };
        Ok([one(Side::L)?, one(Side::R)?])
    }
}

/// The localisation networks ([`super::localize`]): both condyle centres from the whole head
/// (refined by the fine network when there is one) and their VOIs on `synth`'s VOI geometry, or
/// the reason a side was refused.
pub struct ModelLocalizer {
    pub model: LoadedModel,
    pub fine: Option<LoadedModel>,
    pub opts: super::localize::LocalizeOptions,
}

impl Localizer for ModelLocalizer {
    fn localize(&mut self, ct: &Volume) -> Result<[SideFound; 2]> {
        let fine = self.fine.as_mut().map(|m| m as &mut dyn super::localize::JointNet);
        let joints = super::localize::localize(ct, &mut self.model, fine, &self.opts)?;
        Ok(Side::BOTH.map(|side| match joints.side(side) {
            super::localize::SideResult::Found(j) => SideFound::Found(Box::new(Located {
                center_ras_mm: j.condyle_center_ras_mm,
                voi: j.voi.clone(),
                score: j.score,
            })),
            super::localize::SideResult::Missing { reason } => {
                SideFound::Missing { reason: reason.clone() }
            }
        }))
    }

    /// The coarse network's card, with the fine network's under `"fine"` (`null` without one).
    fn card(&self) -> Option<serde_json::Value> {
        let mut card = serde_json::to_value(self.model.card()).ok()?;
        let fine = self.fine.as_ref().and_then(|m| serde_json::to_value(m.card()).ok());
        if let Some(obj) = card.as_object_mut() {
            obj.insert("fine".into(), fine.unwrap_or(serde_json::Value::Null));
        }
        Some(card)
    }
}

/// Segmentation by HU threshold (a stand-in for tests and a sanity baseline): bone above
/// `bone_hu`; MC is the 6-connected bone component nearest the condyle centre, TB all other
/// bone. Where condyle and fossa touch at this threshold, TB is empty and so is the NV.
pub struct ThresholdSegmenter {
    pub bone_hu: f32,
}

impl Default for ThresholdSegmenter {
    fn default() -> Self {
        ThresholdSegmenter { bone_hu: 350.0 }
    }
}

impl Segmenter for ThresholdSegmenter {
    fn segment(&mut self, voi: &Volume, center_ras_mm: [f64; 3]) -> Result<SegProbs> {
        let bone: Vec<bool> = voi.data.iter().map(|&v| v > self.bone_hu).collect();
        let comps = label(&bone, voi.dims, Connectivity::Six)?;
        let c = orientation::apply(&invert(&voi.affine)?, center_ras_mm);
        // The component of the bone voxel nearest the centre (within the VOI).
        let mut best = (f64::INFINITY, 0u32);
        for (q, &l) in comps.labels.iter().enumerate() {
            if l == 0 {
                continue;
            }
            let idx =
                [q / (voi.dims[1] * voi.dims[2]), (q / voi.dims[2]) % voi.dims[1], q % voi.dims[2]];
            let d2: f64 = (0..3).map(|a| ((idx[a] as f64 - c[a]) * voi.spacing[a]).powi(2)).sum();
            if d2 < best.0 {
                best = (d2, l);
            }
        }
        let mc_label = best.1;
        let mc =
            comps.labels.iter().map(|&l| f32::from(u8::from(l != 0 && l == mc_label))).collect();
        let tb =
            comps.labels.iter().map(|&l| f32::from(u8::from(l != 0 && l != mc_label))).collect();
        Ok(SegProbs { mc: voi.with_data(mc), tb: voi.with_data(tb) })
    }
}

/// Segmentation read from a label map in the CT's geometry (1 MC, 2 TB, as `synth` writes
/// `labelsTr`): a stand-in that isolates everything after segmentation (tests, and measuring the
/// NV stage against a phantom's truth).
pub struct LabelSegmenter {
    pub labels: Volume,
}

impl Segmenter for LabelSegmenter {
    fn segment(&mut self, voi: &Volume, _center: [f64; 3]) -> Result<SegProbs> {
        let l = resample_onto(&self.labels, voi, Sample::Nearest, 0.0)?;
        let pick =
            |id: f32| voi.with_data(l.data.iter().map(|&x| f32::from(u8::from(x == id))).collect());
        Ok(SegProbs { mc: pick(1.0), tb: pick(2.0) })
    }
}

/// The trained MC and TB models (`nn::model::LoadedModel`): each card decides normalisation,
/// spacing and window; the foreground probability (class 1) of each, on the VOI grid. A structure
/// with several models (an ensemble, e.g. one per training fold) takes the mean of their
/// probabilities: their errors are partly independent, so the mean wanders less than any one.
pub struct ModelSegmenter {
    pub mc: Vec<LoadedModel>,
    pub tb: Vec<LoadedModel>,
}

fn foreground(m: &mut LoadedModel, voi: &Volume) -> Result<Volume> {
    let p = m.predict(voi)?;
    let path = m.path().display().to_string();
    p.probs
        .into_iter()
        .nth(1)
        .ok_or_else(|| Error::arg("segment", format!("{path}: the model has no foreground class")))
}

/// The mean foreground probability of `members` (at least one) on `voi`'s grid.
fn mean_foreground(members: &mut [LoadedModel], voi: &Volume) -> Result<Volume> {
    let inv = 1.0 / members.len() as f32;
    let mut sum: Option<Volume> = None;
    for m in members.iter_mut() {
        let p = foreground(m, voi)?;
        match &mut sum {
            None => sum = Some(p),
            Some(s) => s.data.iter_mut().zip(&p.data).for_each(|(a, b)| *a += b),
        }
    }
    let mut mean = sum.ok_or_else(|| Error::arg("segment", "a structure without a model"))?;
    // Exact for one member: x * 1.0 == x.
    mean.data.iter_mut().for_each(|v| *v *= inv);
    Ok(mean)
}

/// The first member's card; with more members, the others' cards under `"ensemble"`.
fn ensemble_card(members: &[LoadedModel]) -> Option<serde_json::Value> {
    let mut cards = members.iter().filter_map(|m| serde_json::to_value(m.card()).ok());
    let mut first = cards.next()?;
    let rest: Vec<serde_json::Value> = cards.collect();
    if let (false, Some(obj)) = (rest.is_empty(), first.as_object_mut()) {
        obj.insert("ensemble".into(), serde_json::Value::Array(rest));
    }
    Some(first)
}

impl Segmenter for ModelSegmenter {
    fn segment(&mut self, voi: &Volume, _center: [f64; 3]) -> Result<SegProbs> {
        Ok(SegProbs {
            mc: mean_foreground(&mut self.mc, voi)?,
            tb: mean_foreground(&mut self.tb, voi)?,
        })
    }

    fn cards(&self) -> [Option<serde_json::Value>; 2] {
        [ensemble_card(&self.mc), ensemble_card(&self.tb)]
    }
}

/// The negative volume by the paper's definition (`geometry::negative_volume`): MC's cavities
/// filled, the condylar head inflated along its normals until it meets TB.
pub struct NegativeVolume {
    pub params: NvParams,
    pub device: Device,
}

impl NvMeasure for NegativeVolume {
    fn measure(&mut self, mc: &Volume, tb: &Volume) -> Result<NvOut> {
        let filled = try_fill_cavities(&geometry::mask_from(&mc.data, 0.5), mc.dims)?;
        let mc_filled = mc.with_data(filled.iter().map(|&b| f32::from(u8::from(b))).collect());
        let res = negative_volume(&mc_filled, tb, &self.params, self.device)?;
        Ok(NvOut {
            nv: res.nv,
            volume_mm3: res.volume_mm3,
            joint_space_mm: res.joint_space_mm,
            stats: res.stats,
            mesh: res.mesh,
            mc_filled,
        })
    }

    fn params(&self) -> serde_json::Value {
        let p = &self.params;
        serde_json::json!({
            "head_depth_mm": p.head_depth_mm,
            "min_up": p.min_up,
            "max_mm": p.max_mm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invert_round_trips_an_oblique_affine() {
        let a: Affine = [
            [0.0, -0.8, 0.1, 10.0],
            [0.9, 0.0, 0.0, -20.0],
            [0.0, 0.05, 2.4, 5.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let inv = invert(&a).unwrap();
        let p = [3.0, -7.0, 11.0];
        let back = orientation::apply(&inv, orientation::apply(&a, p));
        for x in 0..3 {
            assert!((back[x] - p[x]).abs() < 1e-9);
        }
    }

    #[test]
    fn nearest_resampling_onto_a_finer_grid_keeps_labels_in_place() {
        let mut src = Volume::zeros([4, 4, 4], [2.0; 3]);
        src.affine[0][3] = -3.0;
        let q = src.index(1, 2, 3);
        src.data[q] = 5.0;
        let mut fine = Volume::zeros([8, 8, 8], [1.0; 3]);
        fine.affine[0][3] = -3.5;
        fine.affine[1][3] = -0.5;
        fine.affine[2][3] = -0.5;
        let r = resample_onto(&src, &fine, Sample::Nearest, -1.0).unwrap();
        // World x of src voxel 1 is -1; fine voxel i sits at -3.5 + i: i = 2 (x=-1.5) rounds to
        // src index 0.75 -> 1, i = 3 (x = -0.5) to 1.25 -> 1.
        assert_eq!(r.data[r.index(2, 4, 6)], 5.0);
        assert_eq!(r.data[r.index(3, 5, 7)], 5.0);
        assert_eq!(r.data.iter().filter(|&&v| v == 5.0).count(), 8);
        assert_eq!(r.data.iter().filter(|&&v| v == -1.0).count(), 0, "all inside");
    }
}
