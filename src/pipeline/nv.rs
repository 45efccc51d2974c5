//! One `nv` run: head CT in, per joint the negative volume, masks, meshes and a report out.
//!
//! Read the CT -> localise both joints -> per side: segment MC and TB, enhance TB (3D Canny),
//! fill MC cavities and inflate (NV), mesh MC, TB and NV, score against `--gt` -> labels back in
//! the CT's own grid -> `report.json`, `report.png`. Everything is written into a temporary
//! sibling folder that replaces `out` only when complete, so a killed run leaves no output a
//! later run (or a cohort rerun) would trust.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::enhance::{enhance_tb, EnhanceParams};
use super::report::{self, SidePicture};
use super::stages::{Located, SideFound, Stages};
use crate::geometry::{self, marching_cubes, segmentation_metrics, JointSpaces, Mesh};
use crate::io::orientation;
use crate::io::{self, mesh::write_mesh};
use crate::nn::model::TrainingScan;
use crate::synth::Side;
use crate::volume::{self, check_aligned, Volume, VoxelKind};
use crate::{Error, Result};

/// What a run does besides the stages.
#[derive(Clone, Debug, Default)]
pub struct CaseOptions {
    /// TB enhancement parameters; `None` skips it (`--enhance off`).
    pub enhance: Option<EnhanceParams>,
    /// Also write the MC and TB probability maps per side.
    pub save_probs: bool,
    /// A label map in the CT's geometry (1 MC, 2 TB, 3 NV) to score against.
    pub gt: Option<PathBuf>,
    /// What to put in NaN/infinite CT voxels (HU); `None` refuses such a CT, naming the file
    /// and the count (a network, a threshold or a distance fed with them returns garbage).
    pub nan_to: Option<f32>,
}

/// `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub input: String,
    pub engine_version: String,
    /// `localize`, `mc`, `tb`: the model cards, `null` for stand-in stages.
    pub models: BTreeMap<String, Option<serde_json::Value>>,
    /// `L`, `R`: the side's results, `null` when it was not found (see `reasons`).
    pub sides: BTreeMap<String, Option<SideReport>>,
    /// Why a side is `null`, by side.
    pub reasons: BTreeMap<String, String>,
    pub asymmetry: Asymmetry,
    /// Enhancement (`null` when off) and NV parameters.
    pub parameters: serde_json::Value,
    /// Seconds per stage, summed over sides.
    pub timings_s: BTreeMap<String, f64>,
    /// `labels`, `report_png`: paths relative to the output folder.
    pub files: BTreeMap<String, String>,
    /// What makes this result less trustworthy (a CT coarser than the models were trained on, or
    /// values that are not Hounsfield units).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One joint in `report.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SideReport {
    pub condyle_center_ras_mm: [f64; 3],
    pub score: f64,
    pub voi: VoiInfo,
    pub mc_volume_mm3: f64,
    pub tb_volume_mm3: f64,
    pub nv_mm3: f64,
    pub joint_space_mm: JointSpaces,
    /// Surface points, hits and hit distances of the inflation.
    pub hits: serde_json::Value,
    /// Voxels the TB enhancement added (`null` when off).
    pub enhance_added_voxels: Option<usize>,
    /// With `--gt`.
    pub metrics: Option<SideMetrics>,
    /// Per-side files, relative to the output folder.
    pub files: BTreeMap<String, String>,
    /// What makes this joint's result less trustworthy (a joint space that closes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The VOI grid.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VoiInfo {
    pub shape: [usize; 3],
    pub spacing_mm: [f64; 3],
    pub affine: [[f64; 4]; 4],
}

/// Overlap and surface distances of one structure; distances `null` when one mask is empty.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct StructureMetrics {
    pub dice: f64,
    pub iou: f64,
    pub hd_mm: Option<f64>,
    pub hd95_mm: Option<f64>,
    pub assd_mm: Option<f64>,
}

/// Scores of one side against the ground truth (on the CT's grid, over the VOI's footprint).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SideMetrics {
    pub mc: StructureMetrics,
    pub tb: StructureMetrics,
    pub nv: StructureMetrics,
    pub nv_truth_mm3: f64,
    /// `nv_mm3 - nv_truth_mm3`.
    pub nv_error_mm3: f64,
    /// `|nv - truth| / truth`, `null` when the truth is empty.
    pub nv_error_rel: Option<f64>,
}

/// Left against right; `null` unless both sides were measured.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Asymmetry {
    pub nv_l_minus_r_mm3: Option<f64>,
    pub nv_ratio_l_over_r: Option<f64>,
    /// `|L - R| / (L + R)`.
    pub asymmetry_index: Option<f64>,
}

impl Asymmetry {
    pub fn of(l: Option<f64>, r: Option<f64>) -> Self {
        let (Some(l), Some(r)) = (l, r) else { return Self::default() };
        Asymmetry {
            nv_l_minus_r_mm3: Some(l - r),
            nv_ratio_l_over_r: (r > 0.0).then(|| l / r),
            asymmetry_index: (l + r > 0.0).then(|| (l - r).abs() / (l + r)),
        }
    }
}

/// The stage names `on_stage` reports and `timings_s` keys.
pub const STAGES: [&str; 8] =
    ["read", "localize", "segment", "enhance", "inflate", "mesh", "metrics", "write"];

/// Stage timings, summed per name.
#[derive(Default)]
struct Clock(BTreeMap<String, f64>);

impl Clock {
    fn time<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let r = f();
        *self.0.entry(name.to_string()).or_default() += t.elapsed().as_secs_f64();
        r
    }
}

/// What one side leaves for writing and the picture.
struct SideWork {
    side: Side,
    report: SideReport,
    voi: Volume,
    /// 0 bg, 1 MC, 2 TB, 3 NV on the VOI grid.
    labels: Volume,
    masks: [Volume; 3],
    probs: Option<[Volume; 2]>,
    meshes: [Mesh; 3],
}

/// Runs the pipeline on one CT and writes `out` (see the module docs). `on_stage` is called
/// with each stage name (and the side) as it starts, for a progress display.
///
/// # Errors
/// Any stage's error; [`Error::Arg`] when `out` holds something that is not an earlier `nv`
/// output (it is never overwritten) or `--gt` is not on the CT's grid.
pub fn run_case(
    input: &Path,
    out: &Path,
    stages: &mut Stages,
    opts: &CaseOptions,
    on_stage: &mut dyn FnMut(&str),
) -> Result<Report> {
    check_replaceable(out)?;
    let mut clock = Clock::default();
    on_stage("read");
    let (ct, gt) = clock.time("read", || read_inputs(input, opts.gt.as_deref(), opts.nan_to))?;
    on_stage("localize");
    let found = clock.time("localize", || stages.localizer.localize(&ct))?;
    let mut works: Vec<SideWork> = Vec::new();
    let mut reasons = BTreeMap::new();
    for (side, f) in Side::BOTH.into_iter().zip(found) {
        match f {
            SideFound::Found(loc) => {
                match run_side(side, *loc, stages, opts, gt.as_ref(), &mut clock, on_stage)? {
                    Ok(w) => works.push(w),
                    Err(reason) => {
                        reasons.insert(side.name().to_string(), reason);
                    }
                }
            }
            SideFound::Missing { reason } => {
                reasons.insert(side.name().to_string(), reason);
            }
        }
    }
    on_stage("write");
    let t = Instant::now();
    let mut report = build_report(input, stages, opts, &works, reasons, &clock);
    report.warnings = crate::io::normalize::not_hounsfield(&ct.data).into_iter().collect();
    report.warnings.extend(coarser_than_training(ct.spacing, &report.models));
    let report = write_outputs(out, &ct, report, &works, t)?;
    Ok(report)
}

/// A warning per segmentation model whose card says it was trained on finer scans than the
/// CT's voxels (models without that record, and stand-in stages, raise none).
pub fn coarser_than_training(
    spacing: [f64; 3],
    cards: &BTreeMap<String, Option<serde_json::Value>>,
) -> Vec<String> {
    let [x, y, z] = spacing;
    ["mc", "tb"]
        .into_iter()
        .filter_map(|k| {
            let card = cards.get(k)?.as_ref()?;
            let scan: TrainingScan = serde_json::from_value(card.get("scan_mm")?.clone()).ok()?;
            scan.is_exceeded_by(spacing).then(|| {
                format!(
                    "the CT's voxels ({x:.2} x {y:.2} x {z:.2} mm) are coarser than the {k} model \
                     was trained on (in-plane up to {} mm, slices up to {} mm): its segmentation \
                     and the NV are not to be trusted",
                    scan.inplane_mm[1], scan.slice_mm[1]
                )
            })
        })
        .collect()
}

/// A warning when the joint space closes: its narrowest hit is under one VOI voxel, so the
/// condyle's mask touches the temporal bone's. A joint always has a space (the disc), so this
/// is the segmentation failing, not anatomy: where a coarse scan's partial volume fills a narrow
/// joint space, the MC model takes the lower half of the dark band and the NV reads too small.
/// On the held-out phantom heads 12 of the 13 joints that closed (two model trainings) read
/// low, by up to 32 %. The README's real head (3.2 mm in-plane) closes on both sides.
pub fn closed_joint_space(side: Side, js: &JointSpaces, voi_spacing: [f64; 3]) -> Option<String> {
    let voxel = voi_spacing.iter().copied().fold(0.0, f64::max);
    let min = js.min?;
    (min < voxel).then(|| {
        format!(
            "the {side} joint space closes: its narrowest point is {min:.2} mm, under one \
             {voxel:.2} mm voxel, so the condyle's mask touches the temporal bone's somewhere. A \
             joint always has a space, so the segmentation fails there (on coarse scans of \
             narrow joints, partial volume fills the space), and the NV is likely too small \
             (held-out phantom joints that closed read up to 32 % low), the asymmetry index \
             with it: look at the slices in report.png"
        )
    })
}

fn read_inputs(
    input: &Path,
    gt: Option<&Path>,
    nan_to: Option<f32>,
) -> Result<(Volume, Option<Volume>)> {
    let mut ct = io::read_volume(input)?;
    match nan_to {
        Some(hu) => {
            volume::replace_non_finite(&mut ct, hu);
        }
        None => volume::require_finite(&ct, input)?,
    }
    let gt = match gt {
        Some(p) => {
            let g = io::read_volume(p)?;
            check_aligned(&ct, &g, "CT and --gt labels")
                .map_err(|e| Error::format(p, format!("not on the CT's grid: {e}")))?;
            Some(g)
        }
        None => None,
    };
    Ok((ct, gt))
}

fn mask_volume(like: &Volume, m: &[bool]) -> Volume {
    like.with_data(m.iter().map(|&b| f32::from(u8::from(b))).collect())
}

fn count_mm3(v: &Volume) -> f64 {
    v.data.iter().filter(|&&x| x > 0.5).count() as f64 * v.spacing.iter().product::<f64>()
}

/// Segment, enhance, inflate, mesh and score one side; `Ok(Err(reason))` when the segmentation
/// leaves nothing to measure (no MC or no TB in the VOI), which makes the side `null`.
fn run_side(
    side: Side,
    loc: Located,
    stages: &mut Stages,
    opts: &CaseOptions,
    gt: Option<&Volume>,
    clock: &mut Clock,
    on_stage: &mut dyn FnMut(&str),
) -> Result<std::result::Result<SideWork, String>> {
    let voi = loc.voi;
    on_stage(&format!("segment {side}"));
    let probs = clock.time("segment", || stages.segmenter.segment(&voi, loc.center_ras_mm))?;
    let mc = mask_volume(&voi, &geometry::mask_from(&probs.mc.data, 0.5));
    let (tb, added) = match &opts.enhance {
        Some(p) => {
            on_stage(&format!("enhance {side}"));
            let e = clock.time("enhance", || enhance_tb(&voi, &probs.tb, p))?;
            (e.tb, Some(e.added))
        }
        None => (mask_volume(&voi, &geometry::mask_from(&probs.tb.data, 0.5)), None),
    };
    let (mc, tb) = one_structure_per_voxel(&probs.mc, &probs.tb, mc, tb);
    for (name, m) in [("MC", &mc), ("TB", &tb)] {
        if !m.data.iter().any(|&v| v > 0.5) {
            return Ok(Err(format!("the {name} segmentation of the {side} VOI is empty")));
        }
    }
    on_stage(&format!("inflate {side}"));
    let nv = clock.time("inflate", || stages.nv.measure(&mc, &tb))?;
    on_stage(&format!("mesh {side}"));
    let meshes = clock.time("mesh", || {
        Ok([
            marching_cubes(&nv.mc_filled.data, voi.dims, 0.5, &voi.affine)?,
            marching_cubes(&tb.data, voi.dims, 0.5, &voi.affine)?,
            nv.mesh.clone(),
        ])
    })?;
    let labels = voi.with_data(
        (0..voi.len())
            .map(|q| {
                if nv.nv.data[q] > 0.5 {
                    3.0
                } else if tb.data[q] > 0.5 {
                    2.0
                } else if nv.mc_filled.data[q] > 0.5 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect(),
    );
    let metrics = match gt {
        Some(g) => {
            on_stage(&format!("metrics {side}"));
            Some(clock.time("metrics", || side_metrics(g, &labels, nv.volume_mm3))?)
        }
        None => None,
    };
    let report = SideReport {
        condyle_center_ras_mm: loc.center_ras_mm,
        score: loc.score,
        voi: VoiInfo { shape: voi.dims, spacing_mm: voi.spacing, affine: voi.affine },
        mc_volume_mm3: count_mm3(&nv.mc_filled),
        tb_volume_mm3: count_mm3(&tb),
        nv_mm3: nv.volume_mm3,
        joint_space_mm: nv.joint_space_mm,
        hits: serde_json::to_value(nv.stats).unwrap_or(serde_json::Value::Null),
        enhance_added_voxels: added,
        metrics,
        files: side_files(side, opts.save_probs),
        warnings: closed_joint_space(side, &nv.joint_space_mm, voi.spacing).into_iter().collect(),
    };
    let probs = opts.save_probs.then_some([probs.mc, probs.tb]);
    Ok(Ok(SideWork { side, report, voi, labels, masks: [nv.mc_filled, tb, nv.nv], probs, meshes }))
}

/// Where both masks claim a voxel, the model that is more sure of it keeps it (MC on a tie): the
/// two models run independently, and a bone blob one of them cannot place (a coronoid tip at the
/// VOI's edge, read as temporal bone) would otherwise be both, touching the condyle and closing
/// the joint space there.
fn one_structure_per_voxel(
    mc_prob: &Volume,
    tb_prob: &Volume,
    mut mc: Volume,
    mut tb: Volume,
) -> (Volume, Volume) {
    for q in 0..mc.data.len() {
        if mc.data[q] > 0.5 && tb.data[q] > 0.5 {
            if mc_prob.data[q] >= tb_prob.data[q] {
                tb.data[q] = 0.0;
            } else {
                mc.data[q] = 0.0;
            }
        }
    }
    (mc, tb)
}

/// The per-side files, by key, relative to the output folder.
fn side_files(side: Side, probs: bool) -> BTreeMap<String, String> {
    let mut names = vec!["ct", "mc", "tb", "nv", "mc_mesh", "tb_mesh", "nv_mesh"];
    if probs {
        names.extend(["mc_prob", "tb_prob"]);
    }
    names
        .into_iter()
        .map(|k| {
            let file = match k.strip_suffix("_mesh") {
                Some(s) => format!("{s}.stl"),
                None => format!("{k}.nii.gz"),
            };
            (k.to_string(), format!("{side}/{file}"))
        })
        .collect()
}

fn structure(
    pred: &[bool],
    truth: &[bool],
    dims: [usize; 3],
    spacing: [f64; 3],
) -> Result<StructureMetrics> {
    let m = segmentation_metrics(pred, truth, dims, spacing)?;
    let fin = |x: f64| x.is_finite().then_some(x);
    Ok(StructureMetrics {
        dice: m.dice,
        iou: m.iou,
        hd_mm: fin(m.hd_mm),
        hd95_mm: fin(m.hd95_mm),
        assd_mm: fin(m.assd_mm),
    })
}

/// Dice, IoU and surface distances of MC, TB and NV, and the NV volume error, counted on the
/// CT's own grid over the VOI's footprint, within the box the truth labels: the truth is a label map on that grid, so the VOI's
/// labels go back there (nearest, as `labels.nii.gz` holds them) rather than the truth being
/// blown up onto the finer VOI grid, whose copied voxels would add staircase edges no
/// segmentation can match.
fn side_metrics(gt: &Volume, labels: &Volume, nv_mm3: f64) -> Result<SideMetrics> {
    let (pred, truth, dims) = on_ct_grid(gt, labels)?;
    let is = |v: &[f32], l: f32| -> Vec<bool> { v.iter().map(|&x| x == l).collect() };
    let score = |l: f32| structure(&is(&pred, l), &is(&truth, l), dims, gt.spacing);
    let voxel_mm3: f64 = (0..3).map(|c| orientation::column_norm(&gt.affine, c)).product();
    let nv_truth_mm3 = truth.iter().filter(|&&x| x == 3.0).count() as f64 * voxel_mm3;
    Ok(SideMetrics {
        mc: score(1.0)?,
        tb: score(2.0)?,
        nv: score(3.0)?,
        nv_truth_mm3,
        nv_error_mm3: nv_mm3 - nv_truth_mm3,
        nv_error_rel: (nv_truth_mm3 > 0.0).then(|| (nv_mm3 - nv_truth_mm3).abs() / nv_truth_mm3),
    })
}

/// The VOI's labels (nearest) and the truth over the CT index box that holds the VOI's
/// footprint, as two flat volumes of the returned dims; voxels of the box outside the footprint
/// (an oblique CT's corners) are background in both.
fn on_ct_grid(ct: &Volume, voi: &Volume) -> Result<(Vec<f32>, Vec<f32>, [usize; 3])> {
    let (to_voi, lo, hi) = voi_on_ct(ct, voi)?;
    let dims = [0, 1, 2].map(|a| hi[a] - lo[a] + 1);
    let n = dims.iter().product();
    let (mut pred, mut truth) = (vec![0f32; n], vec![0f32; n]);
    for (q, (p, t)) in pred.iter_mut().zip(truth.iter_mut()).enumerate() {
        let ijk =
            [q / (dims[1] * dims[2]) + lo[0], q / dims[2] % dims[1] + lo[1], q % dims[2] + lo[2]];
        if let Some(v) = voi_value_at(voi, &to_voi, ijk) {
            *p = v;
            *t = ct.data[ct.index(ijk[0], ijk[1], ijk[2])];
        }
    }
    Ok(within_labelled_box(pred, truth, dims))
}

/// Crops both to the bounding box of the truth's labels: a truth label map covers only the part
/// of the head someone labelled (`synth` labels its own VOI boxes; a clinician stops the condyle
/// somewhere down the neck), and a segmentation outside it can be neither right nor wrong. All
/// of the box is kept when the truth has no label there.
fn within_labelled_box(
    pred: Vec<f32>,
    truth: Vec<f32>,
    dims: [usize; 3],
) -> (Vec<f32>, Vec<f32>, [usize; 3]) {
    let (mut lo, mut hi) = (dims, [0usize; 3]);
    for (q, _) in truth.iter().enumerate().filter(|(_, &t)| t != 0.0) {
        let ijk = [q / (dims[1] * dims[2]), q / dims[2] % dims[1], q % dims[2]];
        for a in 0..3 {
            lo[a] = lo[a].min(ijk[a]);
            hi[a] = hi[a].max(ijk[a]);
        }
    }
    if lo[0] > hi[0] {
        return (pred, truth, dims);
    }
    let sub = [0, 1, 2].map(|a| hi[a] - lo[a] + 1);
    let crop = |v: &[f32]| -> Vec<f32> {
        let mut out = Vec::with_capacity(sub.iter().product());
        for i in lo[0]..=hi[0] {
            for j in lo[1]..=hi[1] {
                let row = (i * dims[1] + j) * dims[2];
                out.extend_from_slice(&v[row + lo[2]..=row + hi[2]]);
            }
        }
        out
    };
    (crop(&pred), crop(&truth), sub)
}

/// The VOI's voxel nearest CT voxel `ijk` (`to_voi` maps CT indices to VOI indices); `None`
/// outside the VOI's footprint.
fn voi_value_at(voi: &Volume, to_voi: &orientation::Affine, ijk: [usize; 3]) -> Option<f32> {
    let x = orientation::apply(to_voi, ijk.map(|v| v as f64));
    let inside = (0..3).all(|a| x[a] >= -0.5 && x[a] < voi.dims[a] as f64 - 0.5);
    inside.then(|| {
        let n = [0, 1, 2].map(|a| (x[a].round().max(0.0) as usize).min(voi.dims[a] - 1));
        voi.data[voi.index(n[0], n[1], n[2])]
    })
}

fn build_report(
    input: &Path,
    stages: &Stages,
    opts: &CaseOptions,
    works: &[SideWork],
    reasons: BTreeMap<String, String>,
    clock: &Clock,
) -> Report {
    let [mc_card, tb_card] = stages.segmenter.cards();
    let models = [("localize", stages.localizer.card()), ("mc", mc_card), ("tb", tb_card)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut sides: BTreeMap<String, Option<SideReport>> =
        Side::BOTH.iter().map(|s| (s.name().to_string(), None)).collect();
    for w in works {
        sides.insert(w.side.name().to_string(), Some(w.report.clone()));
    }
    let nv = |s: &str| sides.get(s).and_then(|r| r.as_ref()).map(|r| r.nv_mm3);
    let asymmetry = Asymmetry::of(nv("L"), nv("R"));
    let files = [("labels", "labels.nii.gz"), ("report_png", "report.png")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Report {
        input: input.display().to_string(),
        engine_version: crate::VERSION.to_string(),
        models,
        sides,
        reasons,
        asymmetry,
        parameters: serde_json::json!({ "enhance": opts.enhance, "nv": stages.nv.params() }),
        timings_s: clock.0.clone(),
        files,
        warnings: Vec::new(),
    }
}

// ---- writing ----------------------------------------------------------------------------------

/// `out` may be replaced when it is missing, empty, or an earlier output (holds `report.json`).
fn check_replaceable(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    if entries.next().is_none() || out.join("report.json").is_file() {
        return Ok(());
    }
    Err(Error::arg(
        "nv",
        format!(
            "{} exists and is not an nv output (no report.json); choose an empty or new folder",
            out.display()
        ),
    ))
}

/// A sibling of `out` named `.NAME.TAG-PID`.
fn sibling(out: &Path, tag: &str) -> Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::arg("nv", format!("output {} has no folder name", out.display())))?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok(parent.join(format!(".{}.{tag}-{}", name.to_string_lossy(), std::process::id())))
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))
}

/// Writes everything into a temporary sibling, then swaps it in for `out`.
fn write_outputs(
    out: &Path,
    ct: &Volume,
    mut report: Report,
    works: &[SideWork],
    started: Instant,
) -> Result<Report> {
    let tmp = sibling(out, "partial")?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    mkdir(&tmp)?;
    let res = (|| {
        let vois: Vec<&Volume> = works.iter().map(|w| &w.labels).collect();
        io::write_nifti(&tmp.join("labels.nii.gz"), &labels_in_ct(ct, &vois)?, VoxelKind::Mask)?;
        for w in works {
            write_side(&tmp, w)?;
        }
        let pictures: Vec<SidePicture> = works
            .iter()
            .map(|w| SidePicture {
                side: w.side,
                voi: &w.voi,
                labels: &w.labels,
                center_ras_mm: w.report.condyle_center_ras_mm,
                meshes: &w.meshes,
            })
            .collect();
        report::write_png(&tmp.join("report.png"), &report, &pictures)?;
        *report.timings_s.entry("write".into()).or_default() += started.elapsed().as_secs_f64();
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::format(tmp.join("report.json"), e.to_string()))?;
        crate::train::logs::write_atomic(&tmp.join("report.json"), (json + "\n").as_bytes())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    swap_in(&tmp, out)?;
    Ok(report)
}

/// Replaces `out` by the finished `tmp`: the old output moves aside first and is removed last.
fn swap_in(tmp: &Path, out: &Path) -> Result<()> {
    let old = sibling(out, "old")?;
    let had = out.exists();
    if had {
        std::fs::rename(out, &old).map_err(|e| Error::io(out, e))?;
    }
    std::fs::rename(tmp, out).map_err(|e| Error::io(out, e))?;
    if had {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

fn write_side(dir: &Path, w: &SideWork) -> Result<()> {
    let f = &w.report.files;
    let path = |k: &str| dir.join(&f[k]);
    mkdir(&dir.join(w.side.name()))?;
    io::write_nifti(&path("ct"), &w.voi, VoxelKind::Image)?;
    for (k, m) in ["mc", "tb", "nv"].iter().zip(&w.masks) {
        io::write_nifti(&path(k), m, VoxelKind::Mask)?;
    }
    for (k, m) in ["mc_mesh", "tb_mesh", "nv_mesh"].iter().zip(&w.meshes) {
        write_mesh(&path(k), m)?;
    }
    if let Some([mc, tb]) = &w.probs {
        io::write_nifti(&path("mc_prob"), mc, VoxelKind::Probability)?;
        io::write_nifti(&path("tb_prob"), tb, VoxelKind::Probability)?;
    }
    Ok(())
}

/// The VOI label maps put back on the CT's own grid (nearest; the first VOI wins where two
/// overlap). Only CT voxels inside a VOI's bounding box are visited.
///
/// # Errors
/// [`Error::Arg`] for a singular affine.
pub fn labels_in_ct(ct: &Volume, vois: &[&Volume]) -> Result<Volume> {
    let mut out = vec![0f32; ct.len()];
    let [_, h, w] = ct.dims;
    for voi in vois {
        let (to_voi, lo, hi) = voi_on_ct(ct, voi)?;
        out.par_chunks_mut((h * w).max(1)).enumerate().for_each(|(i, plane)| {
            if i < lo[0] || i > hi[0] {
                return;
            }
            for j in lo[1]..=hi[1] {
                for k in lo[2]..=hi[2] {
                    if plane[j * w + k] != 0.0 {
                        continue;
                    }
                    if let Some(v) = voi_value_at(voi, &to_voi, [i, j, k]) {
                        plane[j * w + k] = v;
                    }
                }
            }
        });
    }
    Ok(ct.with_data(out))
}

/// The map from CT indices to `voi`'s indices, and the CT index box (inclusive, clamped) that
/// holds the VOI's footprint.
///
/// # Errors
/// [`Error::Arg`] for a singular affine.
fn voi_on_ct(ct: &Volume, voi: &Volume) -> Result<(orientation::Affine, [usize; 3], [usize; 3])> {
    let to_voi = orientation::mul(&super::stages::invert(&voi.affine)?, &ct.affine);
    let to_ct = orientation::mul(&super::stages::invert(&ct.affine)?, &voi.affine);
    let (lo, hi) = bbox(&to_ct, voi.dims, ct.dims);
    Ok((to_voi, lo, hi))
}

/// CT index box (inclusive, clamped) covering a VOI's footprint mapped by `to_ct`.
fn bbox(to_ct: &orientation::Affine, voi: [usize; 3], ct: [usize; 3]) -> ([usize; 3], [usize; 3]) {
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for c in 0..8 {
        let corner = [0, 1, 2].map(|a| if (c >> a) & 1 == 1 { voi[a] as f64 - 0.5 } else { -0.5 });
        let p = orientation::apply(to_ct, corner);
        for a in 0..3 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    let clamp = |x: f64, a: usize| x.clamp(0.0, (ct[a] - 1) as f64) as usize;
    ([0, 1, 2].map(|a| clamp(lo[a].floor(), a)), [0, 1, 2].map(|a| clamp(hi[a].ceil(), a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_voxel_both_models_claim_goes_to_the_surer_one() {
        let vol = |d: &[f32]| Volume { data: d.to_vec(), ..Volume::zeros([1, 1, 4], [1.0; 3]) };
        let mc_prob = vol(&[0.9, 0.6, 0.7, 0.2]);
        let tb_prob = vol(&[0.6, 0.9, 0.7, 0.8]);
        let (mc, tb) = one_structure_per_voxel(
            &mc_prob,
            &tb_prob,
            vol(&[1.0, 1.0, 1.0, 0.0]),
            vol(&[1.0, 1.0, 1.0, 1.0]),
        );
        assert_eq!(mc.data, [1.0, 0.0, 1.0, 0.0]);
        assert_eq!(tb.data, [0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn a_ct_coarser_than_the_training_scans_is_warned_about() {
        let card = |scan: Option<[[f64; 2]; 2]>| {
            let mut c = serde_json::json!({ "target": "mc" });
            if let Some([i, sl]) = scan {
                c["scan_mm"] = serde_json::json!({ "inplane_mm": i, "slice_mm": sl });
            }
            Some(c)
        };
        let cards = |mc, tb| -> BTreeMap<String, Option<serde_json::Value>> {
            [("localize".to_string(), None), ("mc".into(), mc), ("tb".into(), tb)]
                .into_iter()
                .collect()
        };
        let trained = card(Some([[0.4, 1.6], [0.4, 2.0]]));
        let both = cards(trained.clone(), trained.clone());
        // Within the ranges, in any axis order (a sagittal scan's thick axis first).
        assert!(coarser_than_training([1.5, 1.5, 1.5], &both).is_empty());
        assert!(coarser_than_training([2.0, 0.5, 1.6], &both).is_empty());
        // The README's real head: 3.2 mm in-plane, one warning per model.
        let w = coarser_than_training([3.2, 3.2, 1.5], &both);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("3.20 x 3.20 x 1.50 mm") && w[0].contains("mc model"), "{w:?}");
        assert!(w[1].contains("tb model") && w[1].contains("in-plane up to 1.6 mm"), "{w:?}");
        // Slices thicker than any training scan.
        assert_eq!(coarser_than_training([0.5, 0.5, 3.0], &both).len(), 2);
        // Cards without the record (older models, stand-ins) raise nothing.
        assert!(coarser_than_training([3.2, 3.2, 3.2], &cards(card(None), None)).is_empty());
        assert_eq!(coarser_than_training([3.2, 3.2, 3.2], &cards(card(None), trained)).len(), 1);
    }

    #[test]
    fn a_joint_space_under_one_voxel_is_warned_about() {
        let js = |min| JointSpaces { min, ..JointSpaces::default() };
        let voi = [0.4, 0.4, 0.4];
        let w = closed_joint_space(Side::L, &js(Some(0.0)), voi).expect("a touching joint");
        assert!(w.contains("the L joint space closes") && w.contains("0.00 mm"), "{w}");
        assert!(w.contains("0.40 mm voxel"), "{w}");
        assert!(closed_joint_space(Side::R, &js(Some(0.27)), voi).is_some());
        // Open joints on the held-out phantoms kept 0.46 mm and more.
        assert!(closed_joint_space(Side::R, &js(Some(0.46)), voi).is_none());
        // The coarsest axis is the voxel; no hit at all says nothing.
        assert!(closed_joint_space(Side::L, &js(Some(0.45)), [0.4, 0.4, 0.5]).is_some());
        assert!(closed_joint_space(Side::L, &js(None), voi).is_none());
    }
}
