//! Synthetic TMJ head-CT phantoms with ground-truth masks (the embedded default data set).
//!
//! Each case is a [`Phantom`] drawn from `(seed, case)`: skull, mandible with both condyles,
//! temporal bones with glenoid fossa and articular eminence, cervical vertebrae, soft tissue and
//! airway, all signed-distance functions in millimetres. It is rendered twice: the whole head at
//! a coarse spacing and one VOI per joint at 0.4 mm, both straight from the distances (a coarse
//! voxel as the mean of the anatomy over it, [`phantom::voxel_mean`]), then blurred and given
//! Gaussian noise. [`write_dataset`] writes the layout of
//! CONTRACTS.md (`imagesTr/`, `labelsTr/`, `voi/`, `dataset.json`); `train::dataset` reads it.
//! The ground-truth definitions (MC, TB, NV) are in [`phantom`]'s module docs.

pub mod anatomy;
pub mod head_profile;
pub mod noise;
pub mod phantom;
pub mod preview;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use head_profile::HeadProfile;
pub use phantom::{GapRange, Phantom, Tissue};

use crate::geometry::NvParams;
use crate::io::nifti::{generated_header, DataType};
use crate::pipeline::localize::voi_grid_around;
use crate::volume::{Volume, VoxelKind};
use crate::{Error, Result};
use anatomy::V3;
use noise::{hash_words, Rng};
use phantom::{add_noise, blur, render, voxel_mean, Grid};

/// Spacing of the per-joint VOIs (mm), fixed by the data set contract.
pub const VOI_SPACING: f64 = crate::pipeline::localize::VOI_SPACING_MM;
/// Field of view of the whole-head volume (mm along x, y, z).
pub const HEAD_EXTENT_MM: [f64; 3] = [180.0, 228.0, 252.0];
/// Scanner-frame centre of the head field of view (mm).
const HEAD_CENTER: V3 = [0.0, 3.0, 15.0];
/// Random shift of each VOI around the joint (mm per axis), as a localiser would leave it.
const VOI_JITTER_MM: f64 = 1.0;

/// A joint side. Right is +x (RAS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Side {
    L,
    R,
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::L, Side::R];

    /// +1 for the right (patient's right is +x in RAS), -1 for the left.
    pub fn sign(self) -> f64 {
        match self {
            Side::L => -1.0,
            Side::R => 1.0,
        }
    }

    /// 0 for L, 1 for R.
    pub fn index(self) -> usize {
        match self {
            Side::L => 0,
            Side::R => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Side::L => "L",
            Side::R => "R",
        }
    }

    /// Parses `"L"` or `"R"`.
    pub fn parse(s: &str) -> Option<Side> {
        match s {
            "L" => Some(Side::L),
            "R" => Some(Side::R),
            _ => None,
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to generate (everything but the case count and output folder).
#[derive(Clone, Debug)]
pub struct SynthConfig {
    pub seed: u64,
    /// VOI size in voxels `(D, H, W)` along `(x, y, z)`, at 0.4 mm.
    pub voi_dims: [usize; 3],
    /// Whole-head voxel size (mm, isotropic).
    pub head_spacing: f64,
    /// Partial-volume blur, standard deviation in voxels (0 = none).
    pub blur_sigma_vox: f64,
    /// Add the case's Gaussian noise (10-20 HU); off gives clean, blurred HU.
    pub noise: bool,
    /// Whole-head scans that vary as real ones do (`--profile head`); `None` keeps the fixed
    /// head grid and small pose of the default data set.
    pub head: Option<HeadProfile>,
    /// The NV definition's parameters the truth is computed with (written to `dataset.json`).
    pub nv: NvParams,
    /// Render each VOI's CT as a whole-head scan of coarser voxels shows it, cut out as
    /// `localize` cuts a VOI from a head (`None`: straight at 0.4 mm). The masks stay the
    /// analytic truth at 0.4 mm: a model trained on these learns the true shapes from the
    /// blurrier CT a real pipeline gives it.
    pub voi_scan: Option<VoiScan>,
    /// The range the joint spaces are drawn from.
    pub gaps: GapRange,
}

/// Voxel sizes of the simulated head scan a VOI is cut from: per VOI an in-plane size (x, y)
/// and a slice size (z) drawn uniformly from these ranges (mm), and a random voxel phase.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiScan {
    pub inplane_mm: [f64; 2],
    pub slice_mm: [f64; 2],
    /// Scans drawn per VOI (1..=16): the same anatomy and truth seen through `draws` scanners of
    /// independently drawn voxel sizes, phase and noise. A model learns the scanner from these
    /// and the anatomy from the cases, so extra draws add scanner variety without new anatomy.
    #[serde(default = "one_draw", skip_serializing_if = "is_one_draw")]
    pub draws: usize,
}

fn one_draw() -> usize {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_one_draw(d: &usize) -> bool {
    *d == 1
}

impl VoiScan {
    /// # Errors
    /// [`Error::Arg`] for a range that is reversed or outside 0.25..=4 mm.
    pub fn validate(&self) -> Result<()> {
        for (name, [lo, hi]) in [("inplane_mm", self.inplane_mm), ("slice_mm", self.slice_mm)] {
            if !(0.25 <= lo && lo <= hi && hi <= 4.0) {
                return Err(Error::arg(
                    "synth",
                    format!("voi scan {name} [{lo}, {hi}]: need 0.25 <= lo <= hi <= 4 mm"),
                ));
            }
        }
        if !(1..=16).contains(&self.draws) {
            return Err(Error::arg("synth", format!("voi scan draws {}: need 1..=16", self.draws)));
        }
        Ok(())
    }
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 1,
            voi_dims: [120, 150, 70],
            head_spacing: 1.5,
            blur_sigma_vox: 0.5,
            noise: true,
            head: None,
            nv: NvParams::default(),
            voi_scan: None,
            gaps: GapRange::default(),
        }
    }
}

impl SynthConfig {
    /// Rejects sizes that cannot make a useful volume.
    ///
    /// # Errors
    /// [`Error::Arg`] naming the bad value.
    pub fn validate(&self) -> Result<()> {
        if self.voi_dims.iter().any(|&d| !(4..=1024).contains(&d)) {
            return Err(Error::arg(
                "synth",
                format!("voi size {:?}: each must be 4..=1024", self.voi_dims),
            ));
        }
        if !(self.head_spacing >= 0.25 && self.head_spacing <= 10.0) {
            return Err(Error::arg(
                "synth",
                format!("head spacing {} mm: must be 0.25..=10", self.head_spacing),
            ));
        }
        if !(0.0..=4.0).contains(&self.blur_sigma_vox) {
            return Err(Error::arg("synth", "blur sigma must be 0..=4 voxels"));
        }
        if let Some(h) = &self.head {
            h.validate()?;
        }
        if let Some(v) = &self.voi_scan {
            v.validate()?;
        }
        self.gaps.validate()?;
        self.nv.validate()?;
        Ok(())
    }

    /// The whole-head grid (same for every case; the anatomy moves inside it).
    pub fn head_grid(&self) -> Grid {
        let s = self.head_spacing;
        let dims = HEAD_EXTENT_MM.map(|e| (e / s).ceil() as usize);
        Grid::centered(HEAD_CENTER, dims, [s; 3])
    }
}

/// One joint's VOI with its truth: what `synth` generates in memory and what
/// `train::dataset::Dataset::load_voi` reads back from a data set folder (the one VOI type of the
/// engine; the manifest's [`ManifestSide`] holds the same fields as paths).
#[derive(Clone, Debug)]
pub struct VoiCase {
    pub side: Side,
    /// CT in HU.
    pub ct: Volume,
    /// More scans of the same VOI ([`VoiScan::draws`] - 1 of them), aligned with `ct`.
    pub scans: Vec<Volume>,
    /// Masks 0/1, aligned with `ct`.
    pub mc: Volume,
    pub tb: Volume,
    pub nv: Volume,
    /// NV voxel count x voxel volume (mm^3).
    pub nv_mm3: f64,
    /// Designed joint space (mm).
    pub joint_space_mm: f64,
    /// Centre of the condylar head's shape (world RAS mm), from the analytic anatomy; `None` when
    /// read from a data set written before `dataset.json` recorded it.
    pub condyle_center_ras_mm: Option<[f64; 3]>,
    /// Whether the whole-head scan shows this joint (`None`: the default scan always does, and a
    /// data set records only `false`).
    pub in_field_of_view: Option<bool>,
}

/// A generated case, in memory.
#[derive(Clone, Debug)]
pub struct PhantomCase {
    pub id: String,
    pub phantom: Phantom,
    /// Whole head CT in HU.
    pub head_ct: Volume,
    /// Whole head labels (0 bg, 1 MC, 2 TB, 3 NV), non-zero only inside the two VOI boxes.
    pub head_labels: Volume,
    /// L then R.
    pub vois: Vec<VoiCase>,
}

/// What the phantoms a default model trains on look like, for the model cache's key: a change
/// of how `synth` renders them (not of a config) must retrain the models it trained.
/// 2: scan voxels are the mean of the anatomy over the voxel ([`phantom::voxel_mean`]), not its
/// value at the voxel's centre.
pub const RENDERING: &str = "2 voxel-mean scans";

/// `case_0001` for index 0.
pub fn case_id(index: usize) -> String {
    format!("case_{:04}", index + 1)
}

/// The VOI grid of `side`: the localiser's box ([`voi_grid_around`], raised along the head's own
/// superior axis) around the condylar head's centre, jittered by the seed as a localiser would
/// leave it.
pub fn voi_grid(cfg: &SynthConfig, ph: &Phantom, case: usize, side: Side) -> Grid {
    let mut rng = Rng::new(hash_words(&[cfg.seed, case as u64, side.index() as u64, 0x766f69]));
    let mut center = ph.joint_center_world(side);
    for v in &mut center {
        *v += rng.sym(VOI_JITTER_MM);
    }
    let up = anatomy::mat_vec(&ph.pose.rot, [0.0, 0.0, 1.0]);
    voi_grid_around(center, up, cfg.voi_dims)
}

/// Generates case `index` (0-based) in memory.
///
/// # Errors
/// [`Error::Arg`] for an invalid config.
pub fn generate_case(cfg: &SynthConfig, index: usize) -> Result<PhantomCase> {
    cfg.validate()?;
    let mut ph = Phantom::with_gaps(cfg.seed, index as u64, cfg.gaps);
    let scan = cfg.head.as_ref().map(|p| head_profile::draw_scan(p, &ph, cfg.seed, index as u64));
    if let Some(scan) = &scan {
        ph.pose = scan.pose;
    }
    let grids = Side::BOTH.map(|s| voi_grid(cfg, &ph, index, s));
    let truths = Side::BOTH.map(|s| ph.nv_truth(s, &grids[s.index()], cfg.nv));
    let label_at = |w: V3, e: &phantom::PointEval| {
        Side::BOTH
            .iter()
            .find(|s| grids[s.index()].contains(w))
            .map_or(0, |&s| ph.label(&truths[s.index()], w, e))
    };

    let (head_ct, head_labels) = match &scan {
        None => {
            let head = cfg.head_grid();
            let edges = head.voxel_edges();
            let (mut ct, labels) = render(&head, |w| {
                let e = ph.eval(w);
                (voxel_mean(w, edges, |p| ph.eval(p).hu) as f32, label_at(w, &e))
            });
            finish_ct(&mut ct, head.dims, cfg, &ph, 0);
            (ct_volume(&head, ct), head.volume(labels.iter().map(|&l| f32::from(l)).collect()))
        }
        Some(scan) => {
            let head = Grid {
                dims: scan.dims(),
                spacing: scan.spacing,
                origin: [0, 1, 2].map(|a| scan.fov[a][0] + 0.5 * scan.spacing[a]),
            };
            let edges = head.voxel_edges();
            let (mut ct, labels) = render(&head, |w| {
                let e = ph.eval(w);
                let hu = voxel_mean(w, edges, |p| head_profile::scan_hu(&ph, scan, p));
                (hu as f32, label_at(w, &e))
            });
            head_profile::finish_scan(&mut ct, head.dims, scan, ph.noise_key(0));
            (ct_volume(&head, ct), head.volume(labels.iter().map(|&l| f32::from(l)).collect()))
        }
    };

    let vois = Side::BOTH
        .iter()
        .map(|&side| {
            let grid = grids[side.index()];
            let (mut ct, labels) = render(&grid, |w| {
                let e = ph.eval(w);
                (e.hu as f32, ph.label(&truths[side.index()], w, &e))
            });
            let mut scans = Vec::new();
            match cfg.voi_scan {
                None => finish_ct(&mut ct, grid.dims, cfg, &ph, 1 + side.index() as u64),
                Some(scan) => {
                    ct = scanned_voi_ct(cfg, &ph, index, side, &grid, scan, 0);
                    scans = (1..scan.draws)
                        .map(|k| {
                            let draw = scanned_voi_ct(cfg, &ph, index, side, &grid, scan, k);
                            ct_volume(&grid, draw)
                        })
                        .collect();
                }
            }
            let mask = |id: u8| grid.volume(labels.iter().map(|&l| f32::from(l == id)).collect());
            let nv_count = labels.iter().filter(|&&l| l == 3).count();
            VoiCase {
                side,
                ct: ct_volume(&grid, ct),
                scans,
                mc: mask(1),
                tb: mask(2),
                nv: mask(3),
                nv_mm3: nv_count as f64 * VOI_SPACING.powi(3),
                joint_space_mm: ph.joint(side).gap_mm,
                condyle_center_ras_mm: Some(ph.joint_center_world(side)),
                in_field_of_view: scan.as_ref().map(|sc| sc.in_view(side)),
            }
        })
        .collect();
    Ok(PhantomCase { id: case_id(index), phantom: ph, head_ct, head_labels, vois })
}

/// The VOI's CT as cut from a head scan ([`VoiScan`]): the anatomy rendered on an axis-aligned
/// scan grid of drawn voxel sizes and phase covering the VOI, blurred and noised in that grid's
/// voxels as a head is ([`finish_ct`]), then sampled trilinearly onto the VOI grid and rounded
/// to whole HU, as `pipeline::localize::cut_voi` samples a head. `draw` k > 0 is another scan
/// of the same VOI: its own voxel sizes, phase and noise (draw 0 keeps the streams it always
/// had, so data sets of one draw do not change).
fn scanned_voi_ct(
    cfg: &SynthConfig,
    ph: &Phantom,
    case: usize,
    side: Side,
    voi: &Grid,
    scan: VoiScan,
    draw: usize,
) -> Vec<f32> {
    let key = [cfg.seed, case as u64, side.index() as u64, 0x7363_616e, draw as u64];
    let mut rng = Rng::new(hash_words(if draw == 0 { &key[..4] } else { &key[..] }));
    let inplane = rng.uniform(scan.inplane_mm[0], scan.inplane_mm[1]);
    let spacing = [inplane, inplane, rng.uniform(scan.slice_mm[0], scan.slice_mm[1])];
    // Enough scan voxels beyond the VOI for the blur's reach and the interpolation's corners.
    let margin = (3.0 * cfg.blur_sigma_vox).ceil() + 2.0;
    let phase = [rng.unit(), rng.unit(), rng.unit()];
    let origin = [0, 1, 2].map(|a| voi.origin[a] - (margin + phase[a]) * spacing[a]);
    let dims = [0, 1, 2].map(|a| {
        let extent = voi.spacing[a] * (voi.dims[a] as f64 - 1.0);
        (extent / spacing[a] + 2.0 * margin + 2.0).ceil() as usize
    });
    let grid = Grid { dims, spacing, origin };
    let edges = grid.voxel_edges();
    let (mut hu, _) = render(&grid, |w| (voxel_mean(w, edges, |p| ph.eval(p).hu) as f32, ()));
    let noise = if draw == 0 { 3 } else { 5 + 2 * draw as u64 };
    finish_ct(&mut hu, grid.dims, cfg, ph, noise + side.index() as u64);
    let (ct, _) = render(voi, |w| (grid.sample_linear(&hu, w).round().clamp(-1024.0, 3071.0), ()));
    ct
}

/// Partial-volume blur, then noise that depends only on the case and voxel, then whole HU (what
/// a scanner stores; the files are int16).
fn finish_ct(ct: &mut [f32], dims: [usize; 3], cfg: &SynthConfig, ph: &Phantom, which: u64) {
    blur(ct, dims, cfg.blur_sigma_vox);
    if cfg.noise {
        add_noise(ct, ph.noise_key(which), ph.noise_sigma);
    }
    ct.iter_mut().for_each(|v| *v = v.round().clamp(-1024.0, 3071.0));
}

/// A CT volume on `grid` that is written as int16 (its values are whole HU).
fn ct_volume(grid: &Grid, data: Vec<f32>) -> Volume {
    let mut v = grid.volume(data);
    v.header = Some(generated_header(&v, DataType::I16, "dnvs-engine synthetic TMJ phantom"));
    v
}

/// `dataset.json`, as in CONTRACTS.md (plus `voi_dims`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub seed: u64,
    pub spacing_head: [f64; 3],
    pub spacing_voi: [f64; 3],
    #[serde(default)]
    pub voi_dims: Option<[usize; 3]>,
    /// The NV definition's parameters of the `nv_mm3` truth (absent in data sets written before
    /// the definition was fixed).
    #[serde(default)]
    pub nv_params: Option<NvParams>,
    /// The simulated scan the VOIs' CTs were cut from (absent: rendered straight at 0.4 mm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voi_scan: Option<VoiScan>,
    /// The range the joint spaces were drawn from (absent: the default, 1.5-4 mm).
    #[serde(default, skip_serializing_if = "GapRange::is_default")]
    pub gap_mm: GapRange,
    pub labels: BTreeMap<String, String>,
    pub cases: Vec<ManifestCase>,
}

/// One case of `dataset.json`; paths are relative to the data set folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestCase {
    pub id: String,
    pub image: String,
    pub label: String,
    pub sides: BTreeMap<Side, ManifestSide>,
}

/// One joint of a case in `dataset.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestSide {
    pub image: String,
    pub mc: String,
    pub tb: String,
    pub nv: String,
    pub nv_mm3: f64,
    pub joint_space_mm: f64,
    /// Centre of the condylar head (world RAS mm): what localisation must find.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condyle_center_ras_mm: Option<[f64; 3]>,
    /// `false` when the whole-head scan does not show this joint (the `head` profile's scans
    /// cut off at one side); absent when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_field_of_view: Option<bool>,
    /// More scans of the same VOI (`VoiScan::draws`), CT files like `image`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scans: Vec<String>,
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))
}

/// Writes one generated case under `root` (the temporary folder) and returns its manifest entry.
fn write_case(root: &Path, case: &PhantomCase, preview: bool) -> Result<ManifestCase> {
    let id = &case.id;
    let image = format!("imagesTr/{id}.nii.gz");
    let label = format!("labelsTr/{id}.nii.gz");
    crate::io::write_nifti(&root.join(&image), &case.head_ct, VoxelKind::Image)?;
    crate::io::write_nifti(&root.join(&label), &case.head_labels, VoxelKind::Mask)?;
    let mut sides = BTreeMap::new();
    for v in &case.vois {
        let name = |what: &str| format!("voi/{id}_{}_{what}.nii.gz", v.side);
        let entry = ManifestSide {
            image: name("ct"),
            mc: name("mc"),
            tb: name("tb"),
            nv: name("nv"),
            nv_mm3: (v.nv_mm3 * 1000.0).round() / 1000.0,
            joint_space_mm: (v.joint_space_mm * 1000.0).round() / 1000.0,
            condyle_center_ras_mm: v
                .condyle_center_ras_mm
                .map(|c| c.map(|x| (x * 1e4).round() / 1e4)),
            in_field_of_view: v.in_field_of_view.filter(|in_fov| !in_fov),
            scans: (1..=v.scans.len()).map(|k| name(&format!("ct{}", k + 1))).collect(),
        };
        crate::io::write_nifti(&root.join(&entry.image), &v.ct, VoxelKind::Image)?;
        for (path, vol) in entry.scans.iter().zip(&v.scans) {
            crate::io::write_nifti(&root.join(path), vol, VoxelKind::Image)?;
        }
        for (path, vol) in [(&entry.mc, &v.mc), (&entry.tb, &v.tb), (&entry.nv, &v.nv)] {
            crate::io::write_nifti(&root.join(path), vol, VoxelKind::Mask)?;
        }
        if preview {
            preview::write_voi_preview(&root.join(format!("preview/{id}_{}.png", v.side)), v)?;
        }
        sides.insert(v.side, entry);
    }
    if preview {
        preview::write_head_preview(&root.join(format!("preview/{id}_head.png")), case)?;
    }
    Ok(ManifestCase { id: id.clone(), image, label, sides })
}

/// The sub-folders a data set owns (replaced as a whole on every write).
const OWNED_DIRS: [&str; 4] = ["imagesTr", "labelsTr", "voi", "preview"];

/// Generates `cases` cases in parallel and writes them to `out` (created if missing).
///
/// Everything is written under `out/.tmp` first; the sub-folders then replace the old ones and
/// `dataset.json` is renamed last, so a reader never sees a half-written case list. Output bytes
/// depend only on the arguments. `on_case` is called once per finished case (progress).
///
/// # Errors
/// [`Error::Arg`] for zero cases or a bad config, [`Error::Io`] naming the path that could not be
/// written, and whatever `io::write_nifti` returns.
pub fn write_dataset(
    out: &Path,
    cases: usize,
    cfg: &SynthConfig,
    preview: bool,
    on_case: &(dyn Fn(&str) + Sync),
) -> Result<Manifest> {
    if cases == 0 {
        return Err(Error::arg("synth", "--cases must be at least 1"));
    }
    cfg.validate()?;
    mkdir(out)?;
    let tmp = out.join(".tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    for d in OWNED_DIRS {
        if d != "preview" || preview {
            mkdir(&tmp.join(d))?;
        }
    }
    let entries = (0..cases)
        .into_par_iter()
        .map(|i| {
            let case = generate_case(cfg, i)?;
            let entry = write_case(&tmp, &case, preview)?;
            on_case(&case.id);
            Ok(entry)
        })
        .collect::<Result<Vec<_>>>();
    let entries = match entries {
        Ok(e) => e,
        Err(e) => {
            // Leave no partial data set behind; the error is what matters.
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let labels = [(0, "background"), (1, "MC"), (2, "TB"), (3, "NV")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let manifest = Manifest {
        name: "dnvs-phantoms".into(),
        seed: cfg.seed,
        spacing_head: [cfg.head_spacing; 3],
        spacing_voi: [VOI_SPACING; 3],
        voi_dims: Some(cfg.voi_dims),
        nv_params: Some(cfg.nv),
        voi_scan: cfg.voi_scan,
        gap_mm: cfg.gaps,
        labels,
        cases: entries,
    };
    let json = out.join("dataset.json");
    let mut text =
        serde_json::to_string_pretty(&manifest).map_err(|e| Error::format(&json, e.to_string()))?;
    text.push('\n');
    // Folders move into place with a plain rename (`crate::atomic` writes files); the case list
    // that names them is written last, atomically, so a reader never sees a half-written one.
    for d in OWNED_DIRS {
        let target = out.join(d);
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        }
        let src = tmp.join(d);
        if src.exists() {
            std::fs::rename(&src, &target).map_err(|e| Error::io(&target, e))?;
        }
    }
    crate::atomic::write_atomic(&json, text.as_bytes())?;
    std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    Ok(manifest)
}

/// Where `dataset.json` of a data set folder is.
pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join("dataset.json")
}
