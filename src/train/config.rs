//! The training config: the original project's `config.txt` JSON, accepted as is, plus the
//! engine's own keys.
//!
//! The original (Belikova et al., "Deep Negative Volume Segmentation", Sci Rep 2021; its code
//! builds on wolny/pytorch-3dunet) reads four sections. Every key it reads is accepted here with
//! the same name and meaning, including its spellings (`k_follds_number`) and its string booleans
//! (`"nll": "True"`):
//!
//! | section | original keys | engine keys added |
//! |---|---|---|
//! | `training` | device, trainsize, model_name, num_epochs, k_follds_number, batch_size, learning_rate, momentum, wd, patience, delta, step_size, gamma | width, precision, run_dir, early_stopping, folds |
//! | `loss` | loss_name, loss_type (`CE`, `D`, `DCE`), dce_w, w0, w1, nll | soft_dice, joint_w, joint_margin_mm |
//! | `predict` | model_path | |
//! | `loaders` | train_patch, train_stride, val_patch, val_stride, dicom_path, mask_path, objects, voi_shape, precrop, train_patient_ids, val_patient_ids, num_workers, batch_size, train_dataset_size, transformer, train_patch_builder, val_patch_builder | dataset_dir, target (`mc`, `tb`, `nv`, `joints`, `joints_fine`), sides, synth, window, overlap, fg_fraction, spacing_mm |
//!
//! Validation: with `val_patch` the original's patch grid; without it, a sliding window
//! (`window`, `overlap`) over each whole held-out VOI, through the same code `segment` runs, so
//! the validation Dice is the Dice a user gets.
//! | top level | manual_seed | |
//!
//! Keys the original reads but the engine has no use for (`momentum`, which the original also
//! ignores; `dicom_path`, `mask_path`, `objects`, `num_workers`, `precrop`, `train_patient_ids`,
//! `val_patient_ids`, which the original overwrites per fold) are accepted and ignored. A key
//! neither knows is an error that lists the valid keys of its section.
//!
//! `loaders.transformer` holds, per phase (`train`, `test`; the original maps `val` to `test`),
//! the `raw` and `label` transform lists of [`crate::train::augment`].

use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;

use crate::nn::Arch;
use crate::train::augment::{self, Transform};
use crate::{Error, Result};

/// The whole config.
#[derive(Clone, Debug)]
pub struct Config {
    pub training: Training,
    pub loss: LossConfig,
    pub predict: Predict,
    pub loaders: Loaders,
    /// Top-level `manual_seed` of the original; the engine's seed for init, sampling, augmentation.
    pub manual_seed: u64,
    /// The parsed transform lists (from `loaders.transformer`).
    pub transforms: Transforms,
    /// The file the config came from (relative paths in it resolve against its folder).
    pub source: Option<PathBuf>,
}

/// `training`: optimiser, schedule, epochs, folds, device.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// `cpu`, `cuda`, `cuda:N` or `auto`. Like the original, a CUDA device falls back to the CPU
    /// when no GPU is usable (with a message).
    #[serde(default = "d_device")]
    pub device: String,
    /// Training patients per fold (the original draws `10 - |test| - trainsize` patients at random
    /// to leave out); `None` uses all the others.
    #[serde(default)]
    pub trainsize: Option<usize>,
    /// `VNet`, `VNetAtt`, `UNet` or `UNetAtt`.
    #[serde(default = "d_model")]
    pub model_name: String,
    #[serde(default = "d_epochs")]
    pub num_epochs: usize,
    /// Number of folds (the original's spelling).
    #[serde(default = "d_folds")]
    pub k_follds_number: usize,
    #[serde(default = "d_one")]
    pub batch_size: usize,
    #[serde(default = "d_lr")]
    pub learning_rate: f32,
    /// Read and ignored by the original (Adam has no momentum); accepted for compatibility.
    #[serde(default)]
    pub momentum: Option<f32>,
    /// Adam's L2 weight decay.
    #[serde(default)]
    pub wd: f32,
    /// Early stopping: epochs without improvement of the validation loss.
    #[serde(default)]
    pub patience: Option<usize>,
    /// Early stopping: the improvement that counts.
    #[serde(default)]
    pub delta: f32,
    #[serde(default = "d_step")]
    pub step_size: usize,
    #[serde(default = "d_gamma")]
    pub gamma: f32,
    // ---- engine keys
    /// Base channel count of the network (the paper: 16 for V-Net, 32 for the U-Nets).
    #[serde(default)]
    pub width: Option<usize>,
    /// `bf16` (default on GPU) or `fp32`; the CPU always computes in fp32.
    #[serde(default = "d_precision")]
    pub precision: String,
    /// Where logs, checkpoints and state go (relative to the config file's folder).
    #[serde(default = "d_run_dir")]
    pub run_dir: PathBuf,
    /// Whether `patience`/`delta` stop training early. The original builds an EarlyStopping but
    /// passes `None` to its loop; here it is on whenever `patience` is set, unless this is false.
    #[serde(default = "d_true")]
    pub early_stopping: bool,
    /// Which folds to run (1-based); all `k_follds_number` when absent.
    #[serde(default)]
    pub folds: Option<Vec<usize>>,
}

/// `loss`: which loss and its weights.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossConfig {
    #[serde(default)]
    pub loss_name: Option<String>,
    /// `CE`, `D` or `DCE` (anything else is DCE in the original; here it is an error).
    #[serde(default = "d_loss")]
    pub loss_type: String,
    /// Weight of the CE term in DCE.
    #[serde(default = "d_onef")]
    pub dce_w: f32,
    /// Class weights of the cross-entropy.
    #[serde(default = "d_onef")]
    pub w0: f32,
    #[serde(default = "d_onef")]
    pub w1: f32,
    /// NLL on the network's probabilities (the original's `"True"` for its networks, which end in
    /// a softmax). `false` is the same loss here: the engine's networks always output
    /// probabilities.
    #[serde(default = "d_true", deserialize_with = "flag")]
    pub nll: bool,
    /// Engine key: the differentiable soft Dice instead of the original's hard Dice.
    #[serde(default)]
    pub soft_dice: bool,
    /// Engine key: weight of a second NLL term averaged over the joint region only (the voxels
    /// within `joint_margin_mm` of the truth negative volume). The faces that bound the joint
    /// space decide the NV, yet they are a small part of a bone's volume, so the whole-patch
    /// Dice and CE barely see a face one voxel off. 0 (the default) leaves the loss as it was.
    #[serde(default)]
    pub joint_w: f32,
    /// Engine key: how far around the truth negative volume the joint region reaches (mm).
    #[serde(default = "d_joint_margin")]
    pub joint_margin_mm: f64,
}

/// `predict`: the checkpoint `eval` uses by default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predict {
    #[serde(default)]
    pub model_path: Option<PathBuf>,
}

/// Which structure is the foreground (`loaders.target`). A new target adds a variant here, its
/// name in [`Target::name`] and where its truth comes from in `trainer::target_mask`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Mandibular condyle.
    Mc,
    /// Temporal bone.
    Tb,
    /// The negative volume itself (the paper's annotated "balls"; the phantoms carry its truth).
    Nv,
    /// Both condylar heads in a whole head on the localiser's coarse grid (`train::joints`).
    Joints,
    /// One condylar head in a 2 mm box around it (the fine localiser, `train::joints`).
    #[serde(rename = "joints_fine")]
    JointsFine,
}

impl Target {
    /// The config's (and the model card's) name: `mc`, `tb`, `nv`, `joints`, `joints_fine`.
    pub fn name(self) -> &'static str {
        match self {
            Target::Mc => "mc",
            Target::Tb => "tb",
            Target::Nv => "nv",
            Target::Joints => "joints",
            Target::JointsFine => "joints_fine",
        }
    }

    /// Whether the samples come from whole-head scans (`synth --profile head`), not VOIs.
    pub fn reads_heads(self) -> bool {
        matches!(self, Target::Joints | Target::JointsFine)
    }

    /// The label of Table 1: `MC`, `TB`, `NV`.
    pub fn label(self) -> String {
        self.name().to_uppercase()
    }
}

/// `loaders.synth`: phantoms written when `dataset_dir` does not exist.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    #[serde(default = "d_cases")]
    pub cases: usize,
    #[serde(default = "d_one_u64")]
    pub seed: u64,
    /// Cut the VOIs' CTs from simulated head scans of these voxel sizes (`synth`'s
    /// `--voi-scan-inplane-mm/--voi-scan-slice-mm`), so the model sees what `nv` cuts from a head.
    #[serde(default)]
    pub voi_scan: Option<crate::synth::VoiScan>,
    /// The range the phantoms' joint spaces are drawn from (`synth --gap-mm`; default 1.5-4).
    #[serde(default)]
    pub gap_mm: Option<crate::synth::GapRange>,
}

/// `loaders`: data, patches, transforms.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Loaders {
    pub train_patch: [usize; 3],
    /// Patch grid stride for training; absent: patches at uniformly random offsets.
    #[serde(default)]
    pub train_stride: Option<[usize; 3]>,
    /// Validation patch; the whole VOI when absent.
    #[serde(default)]
    pub val_patch: Option<[usize; 3]>,
    #[serde(default)]
    pub val_stride: Option<[usize; 3]>,
    #[serde(default)]
    pub dicom_path: Option<String>,
    #[serde(default)]
    pub mask_path: Option<String>,
    #[serde(default)]
    pub objects: Option<Vec<String>>,
    /// The VOI shape every case must have (checked before training).
    pub voi_shape: [usize; 3],
    #[serde(default, deserialize_with = "flag")]
    pub precrop: bool,
    #[serde(default)]
    pub train_patient_ids: Option<Vec<usize>>,
    #[serde(default)]
    pub val_patient_ids: Option<Vec<usize>>,
    #[serde(default)]
    pub num_workers: Option<usize>,
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Training samples per epoch, drawn with replacement (the original's RandomSampler).
    #[serde(default = "d_train_size")]
    pub train_dataset_size: usize,
    pub transformer: Value,
    #[serde(default)]
    pub train_patch_builder: Option<String>,
    #[serde(default)]
    pub val_patch_builder: Option<String>,
    // ---- engine keys
    /// The data set folder (`dataset.json` of `dnvs-engine synth`), relative to the config file.
    pub dataset_dir: PathBuf,
    #[serde(default = "d_target")]
    pub target: Target,
    /// Joints used, each a separate sample (`L`, `R`).
    #[serde(default = "d_sides")]
    pub sides: Vec<String>,
    /// Write phantoms into `dataset_dir` when it does not exist.
    #[serde(default)]
    pub synth: Option<SynthConfig>,
    /// Sliding window (voxels) for whole-VOI validation and the model card's recommended window
    /// (default: `train_patch`).
    #[serde(default)]
    pub window: Option<[usize; 3]>,
    /// Overlap of neighbouring sliding windows, in `[0, 1)`.
    #[serde(default = "d_overlap")]
    pub overlap: f32,
    /// Fraction of training patches centred on a random foreground voxel (nnU-Net oversamples
    /// a third); the others are uniformly random.
    #[serde(default)]
    pub fg_fraction: f64,
    /// The grid the network trains on (mm, x y z): each VOI (cropped to `voi_shape` at its own
    /// spacing) is resampled to it, `train_patch` and `window` count its voxels, the model card
    /// records it (so `segment` resamples inputs to it) and whole-VOI validation runs on the
    /// VOIs at their own spacing through that resampling. Absent: the data set's spacing.
    #[serde(default)]
    pub spacing_mm: Option<[f64; 3]>,
}

/// The transform lists per phase.
#[derive(Clone, Debug, Default)]
pub struct Transforms {
    pub train_raw: Vec<Transform>,
    pub train_label: Vec<Transform>,
    pub test_raw: Vec<Transform>,
    pub test_label: Vec<Transform>,
}

fn d_device() -> String {
    "auto".into()
}
fn d_model() -> String {
    "VNet".into()
}
fn d_epochs() -> usize {
    100
}
fn d_folds() -> usize {
    5
}
fn d_one() -> usize {
    1
}
fn d_one_u64() -> u64 {
    1
}
fn d_onef() -> f32 {
    1.0
}
fn d_lr() -> f32 {
    1e-4
}
fn d_step() -> usize {
    30
}
fn d_gamma() -> f32 {
    0.1
}
fn d_precision() -> String {
    "bf16".into()
}
fn d_run_dir() -> PathBuf {
    PathBuf::from("runs/default")
}
fn d_true() -> bool {
    true
}
fn d_joint_margin() -> f64 {
    1.6
}
fn d_loss() -> String {
    "DCE".into()
}
fn d_cases() -> usize {
    10
}
fn d_train_size() -> usize {
    80
}
fn d_target() -> Target {
    Target::Mc
}
fn d_overlap() -> f32 {
    0.5
}
fn d_sides() -> Vec<String> {
    vec!["L".into(), "R".into()]
}

/// The original writes booleans as strings (`"True"`); accept both.
fn flag<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        Value::Number(n) => Ok(n.as_f64() != Some(0.0)),
        v => Err(de::Error::custom(format!("expected true/false or \"True\"/\"False\", got {v}"))),
    }
}

const SECTIONS: [&str; 5] = ["training", "loss", "predict", "loaders", "manual_seed"];

fn section<T: serde::de::DeserializeOwned>(name: &str, v: Option<&Value>) -> Result<T> {
    let v = v.cloned().unwrap_or(Value::Object(Default::default()));
    serde_json::from_value(v).map_err(|e| Error::Config { msg: format!("section `{name}`: {e}") })
}

impl Config {
    /// Reads and checks a config file. Relative paths in it resolve against its folder.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::Config`] for invalid JSON, unknown
    /// keys (listing the valid ones), unknown transforms and values out of range.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut cfg = Config::parse(&text)?;
        let base = path.parent().unwrap_or(Path::new(""));
        cfg.loaders.dataset_dir = base.join(&cfg.loaders.dataset_dir);
        cfg.training.run_dir = base.join(&cfg.training.run_dir);
        if let Some(p) = cfg.predict.model_path.take() {
            cfg.predict.model_path = Some(base.join(p));
        }
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses a config from JSON text (paths stay as written).
    pub fn parse(text: &str) -> Result<Config> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| Error::Config { msg: format!("not valid JSON: {e}") })?;
        let obj = root
            .as_object()
            .ok_or_else(|| Error::Config { msg: "the config must be a JSON object".into() })?;
        for k in obj.keys() {
            if !SECTIONS.contains(&k.as_str()) {
                return Err(Error::Config {
                    msg: format!("unknown top-level key `{k}`, expected one of {SECTIONS:?}"),
                });
            }
        }
        let training: Training = section("training", obj.get("training"))?;
        let loss: LossConfig = section("loss", obj.get("loss"))?;
        let predict: Predict = section("predict", obj.get("predict"))?;
        let loaders: Loaders = match obj.get("loaders") {
            Some(v) => section("loaders", Some(v))?,
            None => return Err(Error::Config { msg: "missing section `loaders`".into() }),
        };
        let manual_seed = match obj.get("manual_seed") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_u64().ok_or_else(|| Error::Config {
                msg: format!("manual_seed must be a non-negative integer, got {v}"),
            })?,
        };
        let transforms = parse_transformer(&loaders.transformer)?;
        let cfg =
            Config { training, loss, predict, loaders, manual_seed, transforms, source: None };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but cannot train (before any data is read).
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config { msg });
        let t = &self.training;
        self.arch()?;
        if !["CE", "D", "DCE"].contains(&self.loss.loss_type.as_str()) {
            return bad(format!("loss.loss_type `{}` is not CE, D or DCE", self.loss.loss_type));
        }
        let (jw, jm) = (self.loss.joint_w, self.loss.joint_margin_mm);
        if !(jw.is_finite() && jw >= 0.0 && jm.is_finite() && jm >= 0.0) {
            return bad(format!(
                "loss.joint_w ({jw}) and loss.joint_margin_mm ({jm}) must be finite and >= 0"
            ));
        }
        if !["bf16", "fp32"].contains(&t.precision.as_str()) {
            return bad(format!("training.precision `{}` is not bf16 or fp32", t.precision));
        }
        if t.device != "auto" {
            t.device.parse::<crate::Device>().map_err(|e| Error::Config { msg: e.to_string() })?;
        }
        if t.k_follds_number < 2 {
            return bad(format!(
                "training.k_follds_number {} leaves no case to train on; use at least 2",
                t.k_follds_number
            ));
        }
        if t.batch_size == 0 || t.step_size == 0 || t.num_epochs == 0 {
            return bad(format!(
                "training.batch_size ({}), step_size ({}) and num_epochs ({}) must be at least 1",
                t.batch_size, t.step_size, t.num_epochs
            ));
        }
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !(positive(t.learning_rate) && t.wd.is_finite() && t.wd >= 0.0) {
            return bad(format!(
                "training.learning_rate ({}) must be > 0 and wd ({}) >= 0, both finite",
                t.learning_rate, t.wd
            ));
        }
        if !positive(t.gamma) {
            return bad(format!(
                "training.gamma {} must be > 0 (StepLR multiplies by it)",
                t.gamma
            ));
        }
        if !(t.delta.is_finite() && t.delta >= 0.0) {
            return bad(format!("training.delta {} must be >= 0", t.delta));
        }
        if let Err(e) = crate::nn::param_count(self.arch()?, self.width()) {
            return bad(format!("training.width {}: {e}", self.width()));
        }
        if let Some(folds) = &t.folds {
            if let Some(f) = folds.iter().find(|f| **f == 0 || **f > t.k_follds_number) {
                return bad(format!(
                    "training.folds: fold {f} is not in 1..={}",
                    t.k_follds_number
                ));
            }
        }
        let l = &self.loaders;
        if let Some(g) = l.synth.as_ref().and_then(|s| s.gap_mm) {
            if let Err(e) = g.validate() {
                return bad(format!("loaders.synth.gap_mm: {e}"));
            }
        }
        let voi = l.voi_shape;
        if voi.contains(&0) {
            return bad(format!("loaders.voi_shape {voi:?} has a zero extent"));
        }
        if let Some(sp) = l.spacing_mm.filter(|s| s.iter().any(|v| !(v.is_finite() && *v > 0.0))) {
            return bad(format!("loaders.spacing_mm {sp:?}: every spacing must be > 0 mm"));
        }
        // With `spacing_mm` the VOI's extent on the training grid is known only once the data
        // set's spacing is read: `prepare` checks the patch then (still before any write).
        let voi_on_grid = if l.spacing_mm.is_some() { [usize::MAX; 3] } else { voi };
        for (name, p) in [("train_patch", Some(l.train_patch)), ("val_patch", l.val_patch)] {
            if let Some(p) = p {
                if p.contains(&0) || (0..3).any(|a| p[a] > voi_on_grid[a]) {
                    return bad(format!(
                        "loaders.{name} {p:?} does not fit in the VOI {voi:?} (loaders.voi_shape)"
                    ));
                }
            }
        }
        let arch = self.arch()?;
        let m = arch.size_multiple();
        // Without val_patch the whole VOI is validated by sliding window (padded as needed).
        for (name, p) in [("train_patch", Some(l.train_patch)), ("val_patch", l.val_patch)] {
            let Some(p) = p else { continue };
            if p.iter().any(|e| e % m != 0) {
                return bad(format!(
                    "loaders.{name} {p:?}: {} needs every extent to be a multiple of {m}",
                    t.model_name
                ));
            }
        }
        // Training batches share BatchNorm statistics, so only the (batch-1) window is checked.
        for (name, w) in [("window", l.window)] {
            if let Some(w) = w {
                if let Err(e) = crate::nn::model::check_window(arch, w) {
                    return bad(format!(
                        "loaders.{name}: {}",
                        e.to_string().trim_start_matches("model: invalid argument: ")
                    ));
                }
                if w.iter().any(|e| e % m != 0) {
                    return bad(format!(
                        "loaders.{name} {w:?}: {} needs every extent to be a multiple of {m}",
                        t.model_name
                    ));
                }
            }
        }
        if !(0.0..1.0).contains(&l.overlap) {
            return bad(format!("loaders.overlap {} is not in [0, 1)", l.overlap));
        }
        if !(0.0..=1.0).contains(&l.fg_fraction) {
            return bad(format!("loaders.fg_fraction {} is not in [0, 1]", l.fg_fraction));
        }
        for (name, s) in [("train_stride", l.train_stride), ("val_stride", l.val_stride)] {
            if s.is_some_and(|s| s.contains(&0)) {
                return bad(format!("loaders.{name} must be positive"));
            }
        }
        for b in [&l.train_patch_builder, &l.val_patch_builder].into_iter().flatten() {
            if b != "PatchBuilder" {
                return bad(format!("patch builder `{b}` is unknown (only PatchBuilder)"));
            }
        }
        if l.sides.is_empty() || l.sides.iter().any(|s| s != "L" && s != "R") {
            return bad(format!("loaders.sides {:?} must be a non-empty list of L, R", l.sides));
        }
        if l.train_dataset_size == 0 {
            return bad("loaders.train_dataset_size must be at least 1".into());
        }
        Ok(())
    }

    /// The network architecture from `training.model_name`.
    pub fn arch(&self) -> Result<Arch> {
        match self.training.model_name.as_str() {
            "VNet" => Ok(Arch::VNet),
            "VNetAtt" => Ok(Arch::VNetAtt),
            "UNet" => Ok(Arch::UNet),
            "UNetAtt" => Ok(Arch::UNetAtt),
            m => Err(Error::Config {
                msg: format!("training.model_name `{m}` is not VNet, VNetAtt, UNet or UNetAtt"),
            }),
        }
    }

    /// The base width: `training.width`, else the paper's (16 for V-Nets, 32 for U-Nets).
    pub fn width(&self) -> usize {
        self.training.width.unwrap_or(match self.training.model_name.as_str() {
            "UNet" | "UNetAtt" => 32,
            _ => 16,
        })
    }

    /// The sliding window of whole-VOI validation and of the model card (`loaders.window`, else
    /// the training patch).
    pub fn window(&self) -> [usize; 3] {
        self.loaders.window.unwrap_or(self.loaders.train_patch)
    }

    /// Whether early stopping is active, with (patience, delta).
    pub fn early_stopping(&self) -> Option<(usize, f32)> {
        match (self.training.early_stopping, self.training.patience) {
            (true, Some(p)) => Some((p, self.training.delta)),
            _ => None,
        }
    }
}

const PHASES: [&str; 2] = ["train", "test"];

fn parse_transformer(v: &Value) -> Result<Transforms> {
    let bad = |msg: String| Error::Config { msg: format!("loaders.transformer: {msg}") };
    let obj = v.as_object().ok_or_else(|| bad("must be an object with train and test".into()))?;
    for k in obj.keys() {
        if !PHASES.contains(&k.as_str()) {
            return Err(bad(format!("unknown phase `{k}`, expected one of {PHASES:?}")));
        }
    }
    let list = |phase: &str, kind: &str| -> Result<Vec<Transform>> {
        let Some(p) = obj.get(phase) else { return Ok(Vec::new()) };
        let po = p.as_object().ok_or_else(|| bad(format!("`{phase}` must be an object")))?;
        for k in po.keys() {
            if k != "raw" && k != "label" {
                return Err(bad(format!(
                    "{phase}: unknown key `{k}`, expected one of [raw, label]"
                )));
            }
        }
        match po.get(kind) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    augment::parse_transform(t, kind == "label").map_err(|e| {
                        bad(format!(
                            "{phase}.{kind}[{i}]: {}",
                            e.to_string().trim_start_matches("config: ")
                        ))
                    })
                })
                .collect(),
            Some(_) => Err(bad(format!("{phase}.{kind} must be a list"))),
        }
    };
    let t = Transforms {
        train_raw: list("train", "raw")?,
        train_label: list("train", "label")?,
        test_raw: list("test", "raw")?,
        test_label: list("test", "label")?,
    };
    augment::check_pairing(&t.train_raw, &t.train_label).map_err(|m| bad(format!("train: {m}")))?;
    augment::check_pairing(&t.test_raw, &t.test_label).map_err(|m| bad(format!("test: {m}")))?;
    Ok(t)
}
