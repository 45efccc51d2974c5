//! A trained model and its contract: the weights plus a **model card** that says how the network
//! must be fed (architecture, width, normalisation with its numbers, voxel spacing, window), what
//! it segments and how well it did on held-out data.
//!
//! The card is one JSON object in the safetensors header, `__metadata__["dnvs"]`, so it travels
//! inside the weights file and PyTorch tools still read the tensors. Training writes it into every
//! checkpoint; [`LoadedModel`] reads it, and [`LoadedModel::predict`] applies exactly what it
//! says: normalisation, resampling to the card's spacing and back, sliding window. Weights
//! converted from PyTorch have no card: then [`ModelOverrides`] must name the architecture and
//! the normalisation.
//!
//! # Example
//! ```no_run
//! use std::path::Path;
//! use dnvs_engine::nn::model::{LoadedModel, ModelOverrides};
//! # fn main() -> dnvs_engine::Result<()> {
//! let mut model =
//!     LoadedModel::open(Path::new("best.safetensors"), &ModelOverrides::default(), dnvs_engine::Device::Cpu)?;
//! let voi = dnvs_engine::io::read_nifti(Path::new("voi.nii.gz"))?;
//! let pred = model.predict(&voi)?; // pred.labels: 0/1 in voi's own grid
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::segment::{self, Blend};
use super::{Arch, Network};
use crate::io::normalize::Normalization;
use crate::io::weights;
use crate::tensor::Device;
use crate::volume::Volume;
use crate::{Error, Result};

/// The safetensors `__metadata__` key that holds the card.
pub const CARD_KEY: &str = "dnvs";
/// The card format this engine writes and reads.
pub const CARD_FORMAT: u32 = 1;
/// Input spacing and card spacing closer than this (relative) are the same grid: no resampling.
pub const SPACING_TOL: f64 = 0.01;

/// What a trained model is and how it must be fed; serialised as the `dnvs` JSON object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Card format ([`CARD_FORMAT`]).
    pub format: u32,
    /// `vnet`, `vnet-att`, `unet` or `unet-att`.
    #[serde(with = "arch_name")]
    pub arch: Arch,
    /// Channels of the first level.
    pub width: usize,
    /// What the foreground is: `mc`, `tb`, `nv` (or a later target's name).
    pub target: String,
    /// Output classes (background and foreground: 2).
    pub classes: usize,
    /// The voxel spacing (mm, `[x, y, z]` = array axes i, j, k) the network was trained on.
    /// `[0, 0, 0]` means "the input's own spacing" (cards made up for weights without one).
    pub spacing_mm: [f64; 3],
    /// The intensity mapping, with its numbers.
    pub normalization: Normalization,
    /// Training patch (voxels, D, H, W).
    pub patch: [usize; 3],
    /// Recommended sliding window (voxels, D, H, W).
    pub window: [usize; 3],
    /// SHA-256 (hex) of the config file the model was trained from.
    pub config_sha256: String,
    /// The data set (folder name) it was trained on.
    pub dataset: String,
    /// `manual_seed` of the run.
    pub seed: u64,
    pub train_cases: Vec<String>,
    pub val_cases: Vec<String>,
    /// Held-out Dice of these weights (sliding window over whole VOIs when validated so).
    pub dice: Option<f64>,
    /// Held-out 95th percentile surface distance (mm).
    pub hd95_mm: Option<f64>,
    pub engine_version: String,
    /// The voxel sizes of the simulated scans its training VOIs were cut from (`None`: not
    /// recorded, or VOIs rendered straight at their own spacing). A CT coarser than these is
    /// outside what the model has seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_mm: Option<TrainingScan>,
}

/// Ranges of scanner voxel sizes (mm) a model was trained on: in-plane and slice, each LO..HI.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingScan {
    pub inplane_mm: [f64; 2],
    pub slice_mm: [f64; 2],
}

impl TrainingScan {
    /// Relative slack before a voxel counts as coarser than the training scans.
    const SLACK: f64 = 1.05;

    /// Whether voxels of `spacing` mm (any axis order) are coarser than every training scan:
    /// the coarsest axis against the slice range, the next against the in-plane one.
    pub fn is_exceeded_by(&self, spacing: [f64; 3]) -> bool {
        let mut s = spacing;
        s.sort_by(|a, b| b.total_cmp(a));
        s[0] > self.slice_mm[1] * Self::SLACK || s[1] > self.inplane_mm[1] * Self::SLACK
    }
}

/// `Arch` as its command-line name in the card.
mod arch_name {
    use super::Arch;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &Arch, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(a.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arch, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl ModelCard {
    /// The card as the JSON stored in the weights file.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a card always serialises")
    }

    /// A human-readable summary, one `key: value` per line (what `info MODEL` prints).
    pub fn describe(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.4}{unit}"),
            None => "not measured".into(),
        };
        let [x, y, z] = self.spacing_mm;
        let w = self.window;
        let p = self.patch;
        format!(
            "model card (format {}):\n  arch: {} width {}\n  target: {} ({} classes)\n  \
             spacing: {x} x {y} x {z} mm\n  normalization: {}\n  patch: {}x{}x{}, window: {}x{}x{}\n  \
             data: {} (seed {}), train {:?}, val {:?}\n  held-out: Dice {}, HD95 {}\n  \
             config sha256: {}\n  engine: {}{}",
            self.format,
            self.arch,
            self.width,
            self.target,
            self.classes,
            serde_json::to_string(&self.normalization).unwrap_or_default(),
            p[0],
            p[1],
            p[2],
            w[0],
            w[1],
            w[2],
            self.dataset,
            self.seed,
            self.train_cases,
            self.val_cases,
            opt(self.dice, ""),
            opt(self.hd95_mm, " mm"),
            self.config_sha256,
            self.engine_version,
            self.scan_mm.map_or(String::new(), |t| format!(
                "\n  training scans: in-plane {}-{} mm, slices {}-{} mm",
                t.inplane_mm[0], t.inplane_mm[1], t.slice_mm[0], t.slice_mm[1]
            ))
        )
    }
}

/// The card stored in a weights file, `None` when it has none (weights converted from PyTorch).
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the file when the header
/// is broken or the card is not valid (unknown architecture, missing field, newer format).
pub fn read_card(path: &Path) -> Result<Option<ModelCard>> {
    let meta = weights::read_metadata(path)?;
    let Some(json) = meta.get(CARD_KEY) else { return Ok(None) };
    let card: ModelCard = serde_json::from_str(json)
        .map_err(|e| Error::format(path, format!("model card (`{CARD_KEY}` metadata): {e}")))?;
    if card.format > CARD_FORMAT {
        return Err(Error::format(
            path,
            format!(
                "model card format {} is newer than this engine's ({CARD_FORMAT}); update dnvs-engine",
                card.format
            ),
        ));
    }
    Ok(Some(card))
}

/// Writes `net`'s weights with `card` in the header, atomically.
///
/// # Errors
/// [`Error::Io`] on write failure; [`Error::Arg`] when a weight is not finite (a diverged
/// network is never written).
pub fn save_with_card(net: &dyn Network, path: &Path, card: &ModelCard) -> Result<()> {
    let state = net.state_dict()?;
    if let Some((name, n)) = state
        .iter()
        .map(|(k, t)| (k, t.data.iter().filter(|v| !v.is_finite()).count()))
        .find(|(_, n)| *n > 0)
    {
        return Err(Error::arg(
            "save_with_card",
            format!("{n} non-finite values in {name}; refusing to write {}", path.display()),
        ));
    }
    let mut meta = BTreeMap::new();
    meta.insert(CARD_KEY.to_string(), card.to_json());
    weights::write_safetensors_with(path, &state, &meta)
}

/// Settings that replace (or, without a card, supply) the card's. `Default` overrides nothing.
#[derive(Clone, Debug, Default)]
pub struct ModelOverrides {
    pub arch: Option<Arch>,
    pub width: Option<usize>,
    pub normalization: Option<Normalization>,
    pub window: Option<[usize; 3]>,
    /// Sliding-window overlap in `[0, 1)` (default 0.5).
    pub overlap: Option<f32>,
    /// Window blending (default Gaussian).
    pub blend: Option<Blend>,
    /// Resample inputs to this spacing instead of the card's.
    pub spacing_mm: Option<[f64; 3]>,
}

/// The smallest window extent (voxels) per axis `arch` can run on (its size multiple). V-Nets
/// also need 32 along at least one axis: their BatchNorm normalises the bottom level (the window
/// over 16) with its own statistics, which need two voxels. See [`check_window`].
pub fn min_window(arch: Arch) -> usize {
    arch.size_multiple()
}

/// Refuses a window `arch` cannot run, saying its minimum.
///
/// # Errors
/// [`Error::Arg`] naming the window and the minimum.
pub fn check_window(arch: Arch, window: [usize; 3]) -> Result<()> {
    let m = min_window(arch);
    let bottom: usize = window.iter().map(|w| w / m).product();
    let batch_norm = matches!(arch, Arch::VNet | Arch::VNetAtt);
    if window.iter().any(|w| *w < m) || (batch_norm && bottom < 2) {
        return Err(Error::arg(
            "model",
            format!(
                "window {window:?} is too small for {arch}: at least {m} per axis{}",
                if batch_norm { ", and 32 along one axis (e.g. 32,16,16)" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// Window used when neither a card nor an override gives one.
pub const DEFAULT_WINDOW: [usize; 3] = [128, 128, 64];

/// A network with its card, ready to segment.
pub struct LoadedModel {
    net: Box<dyn Network>,
    card: ModelCard,
    has_card: bool,
    overlap: f32,
    blend: Blend,
    path: PathBuf,
    warnings: Vec<String>,
}

/// The network's output in the input's own grid.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// One probability volume per class (0 = background), in the input's grid.
    pub probs: Vec<Volume>,
    /// The argmax class id per voxel, as f32, in the input's grid.
    pub labels: Volume,
}

impl LoadedModel {
    /// Opens a weights file (or a training fold folder holding `best.safetensors`), reads its
    /// card, applies `overrides` (each that contradicts the card is recorded in
    /// [`LoadedModel::warnings`]) and loads the network onto `device`.
    ///
    /// # Errors
    /// [`Error::Arg`] naming the missing settings for weights without a card (architecture,
    /// normalisation), an override window under [`min_window`] or an overlap outside `[0, 1)`;
    /// [`Error::Format`] when the weights do not fit the architecture; I/O errors.
    pub fn open(path: &Path, overrides: &ModelOverrides, device: Device) -> Result<LoadedModel> {
        let path = resolve_model_path(path)?;
        let stored = read_card(&path)?;
        let has_card = stored.is_some();
        let mut warnings = Vec::new();
        let card = match stored {
            Some(card) => apply_overrides(card, overrides, &mut warnings),
            None => card_from_overrides(&path, overrides)?,
        };
        let overlap = overrides.overlap.unwrap_or(0.5);
        if !(0.0..1.0).contains(&overlap) {
            return Err(Error::arg("model", format!("overlap {overlap} is not in [0, 1)")));
        }
        check_window(card.arch, card.window)?;
        let mut net = super::build(card.arch, card.width)?;
        net.load_safetensors(&path)?;
        net.to_device(device)?;
        Ok(LoadedModel {
            net,
            card,
            has_card,
            overlap,
            blend: overrides.blend.unwrap_or(Blend::Gaussian),
            path,
            warnings,
        })
    }

    /// The card in effect (the file's, with overrides applied; made up from the overrides for
    /// weights without one).
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Whether the weights file carried a card.
    pub fn has_card(&self) -> bool {
        self.has_card
    }

    /// The weights file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Overrides that contradicted the card, as messages for the user.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The network itself.
    pub fn network(&mut self) -> &mut dyn Network {
        self.net.as_mut()
    }

    /// Segments `vol`: the card's normalisation, resampling to the card's spacing when `vol`'s
    /// differs by more than [`SPACING_TOL`] (linear, on two lattices per axis where the card's is
    /// at least [`PHASE_MIN_RATIO`] coarser: [`phased_probabilities`]) and back (linear
    /// probabilities, then argmax), sliding window with the card's window.
    ///
    /// # Errors
    /// [`Error::Arg`] when `vol` holds non-finite voxels (with their count) or is empty; any
    /// network error.
    pub fn predict(&mut self, vol: &Volume) -> Result<Prediction> {
        let opts = InferOptions {
            normalization: &self.card.normalization,
            spacing_mm: Some(self.card.spacing_mm),
            window: self.card.window,
            overlap: self.overlap,
            blend: self.blend,
            phased: true,
        };
        infer(self.net.as_mut(), vol, &opts)
    }
}

/// How [`infer`] feeds a network (a card's settings, or the trainer's during validation).
#[derive(Clone, Copy, Debug)]
pub struct InferOptions<'a> {
    pub normalization: &'a Normalization,
    /// Resample to this spacing first (skipped when `None`, non-positive or within
    /// [`SPACING_TOL`] of the input's).
    pub spacing_mm: Option<[f64; 3]>,
    pub window: [usize; 3],
    pub overlap: f32,
    pub blend: Blend,
    /// Sample a coarser network grid on shifted lattices ([`phased_probabilities`]); otherwise
    /// on one lattice through the input's first voxel centre.
    pub phased: bool,
}

/// The one inference path of the engine (used by `segment`, `eval`, validation during training
/// and the pipeline): normalise, resample, slide the window, bring the probabilities back to
/// `vol`'s grid, argmax.
///
/// # Errors
/// As [`LoadedModel::predict`].
pub fn infer(net: &mut dyn Network, vol: &Volume, o: &InferOptions) -> Result<Prediction> {
    let bad = vol.data.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        return Err(Error::arg(
            "predict",
            format!("{bad} of {} voxels are NaN or infinite", vol.data.len()),
        ));
    }
    let seg = segment::Options { window: o.window, overlap: o.overlap, blend: o.blend };
    let mut run = |mut x: Volume| {
        o.normalization.apply(&mut x.data);
        segment::sliding_window_with(net, &x, &seg)
    };
    let fg = match o.spacing_mm.filter(|s| needs_resampling(vol.spacing, *s)) {
        Some(s) => phased_probabilities(vol, s, o.phased, &mut run)?,
        None => run(vol.clone())?,
    };
    if let Some(n) = Some(fg.data.iter().filter(|v| !v.is_finite()).count()).filter(|n| *n > 0) {
        return Err(Error::arg("predict", format!("the network produced {n} non-finite values")));
    }
    let bg = fg.with_data(fg.data.iter().map(|p| 1.0 - p).collect());
    let labels = segment::mask_from_probs(&fg);
    Ok(Prediction { probs: vec![bg, fg], labels })
}

/// Smallest ratio of the network's spacing to the input's on an axis for [`phased_probabilities`]
/// to sample it on two lattices.
const PHASE_MIN_RATIO: f64 = 1.5;

/// The network's foreground probability on `vol`'s grid when it runs at spacing `s`
/// (`predict` maps a lattice of the input resampled to `s` to its probabilities).
///
/// One coarse lattice decides only every other input voxel along an axis 2x coarser; the
/// voxels between take the mean of two decisions, and a surface between two coarse centres lands
/// on a coarse boundary, off by up to half a coarse voxel. Each axis at least
/// [`PHASE_MIN_RATIO`] coarser is therefore sampled on two lattices, the second shifted by half a
/// coarse voxel: their union is a lattice of half the coarse spacing (the input's own, at ratio
/// 2), and its values are interpolated back onto `vol`'s grid. The network sees the same
/// context at every phase; the cost is one `predict` per phase, up to 8. Without `phased`, one
/// lattice through `vol`'s first voxel centre.
fn phased_probabilities(
    vol: &Volume,
    s: [f64; 3],
    phased: bool,
    mut predict: impl FnMut(Volume) -> Result<Volume>,
) -> Result<Volume> {
    use crate::io::resample::{resample_shifted, Interp};
    let ratio = [0, 1, 2].map(|a| s[a] / vol.spacing[a]);
    let split = ratio.map(|r| if phased && r >= PHASE_MIN_RATIO { 2 } else { 1 });
    let mut union: Option<Volume> = None;
    for p in 0..split.iter().product::<usize>() {
        let phase = [p / (split[1] * split[2]), p / split[2] % split[1], p % split[2]];
        let shift = [0, 1, 2].map(|a| phase[a] as f64 * ratio[a] / split[a] as f64);
        let x = resample_shifted(vol, s, shift, Interp::Linear)?;
        let lattice = x.dims;
        let fg = predict(x)?;
        if fg.dims != lattice || fg.data.len() != lattice.iter().product::<usize>() {
            return Err(Error::shape("predict", lattice, fg.dims));
        }
        let u = union.get_or_insert_with(|| {
            let dims = [0, 1, 2].map(|a| lattice[a] * split[a]);
            let spacing = [0, 1, 2].map(|a| s[a] / split[a] as f64);
            Volume::zeros(dims, spacing)
        });
        let [_, ud1, ud2] = u.dims;
        let [_, h, w] = lattice;
        for (q, &v) in fg.data.iter().enumerate() {
            let (i, j, k) = (q / (h * w), q / w % h, q % w);
            let ui = i * split[0] + phase[0];
            let uj = j * split[1] + phase[1];
            let uk = k * split[2] + phase[2];
            u.data[(ui * ud1 + uj) * ud2 + uk] = v;
        }
    }
    let union = union.ok_or_else(|| Error::arg("predict", "no phase was sampled"))?;
    Ok(onto_grid(&union, vol))
}

/// True when `have` differs from `want` (positive) by more than [`SPACING_TOL`] on some axis.
pub fn needs_resampling(have: [f64; 3], want: [f64; 3]) -> bool {
    want.iter().all(|s| *s > 0.0)
        && (0..3).any(|a| ((have[a] - want[a]) / want[a]).abs() > SPACING_TOL)
}

/// `src` (a resampling of `like` by `resample_to_spacing`: same first voxel centre and axes)
/// sampled trilinearly at `like`'s voxel centres; positions past `src`'s last centre take the
/// edge value.
fn onto_grid(src: &Volume, like: &Volume) -> Volume {
    let ratio = [0, 1, 2].map(|a| like.spacing[a] / src.spacing[a]);
    let taps: Vec<Vec<(usize, usize, f32)>> = (0..3)
        .map(|a| {
            let last = src.dims[a].saturating_sub(1);
            (0..like.dims[a])
                .map(|n| {
                    let x = (n as f64 * ratio[a]).clamp(0.0, last as f64);
                    let i0 = x.floor() as usize;
                    (i0, (i0 + 1).min(last), (x - i0 as f64) as f32)
                })
                .collect()
        })
        .collect();
    let [_, h, w] = src.dims;
    let at = |i: usize, j: usize, k: usize| src.data[(i * h + j) * w + k];
    let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
    let mut out = Vec::with_capacity(like.data.len());
    for &(i0, i1, ti) in &taps[0] {
        for &(j0, j1, tj) in &taps[1] {
            for &(k0, k1, tk) in &taps[2] {
                let plane = |i| {
                    lerp(
                        lerp(at(i, j0, k0), at(i, j0, k1), tk),
                        lerp(at(i, j1, k0), at(i, j1, k1), tk),
                        tj,
                    )
                };
                out.push(lerp(plane(i0), plane(i1), ti));
            }
        }
    }
    like.with_data(out)
}

/// A weights file, or a fold folder's `best.safetensors`.
fn resolve_model_path(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let best = path.join("best.safetensors");
    if best.is_file() {
        Ok(best)
    } else {
        Err(Error::arg("model", format!("{} is a folder without best.safetensors", path.display())))
    }
}

/// The card with every override applied; a contradiction is noted in `warnings`.
fn apply_overrides(
    mut card: ModelCard,
    o: &ModelOverrides,
    warnings: &mut Vec<String>,
) -> ModelCard {
    fn set<T: PartialEq + std::fmt::Debug + Clone>(
        field: &mut T,
        new: Option<&T>,
        name: &str,
        warnings: &mut Vec<String>,
    ) {
        if let Some(v) = new {
            if v != field {
                warnings.push(format!(
                    "{name} {v:?} overrides the model card's {:?}; results may not match the \
                     model's validation",
                    field
                ));
                *field = v.clone();
            }
        }
    }
    set(&mut card.arch, o.arch.as_ref(), "--arch", warnings);
    set(&mut card.width, o.width.as_ref(), "--width", warnings);
    set(&mut card.normalization, o.normalization.as_ref(), "the normalisation", warnings);
    set(&mut card.window, o.window.as_ref(), "--window", warnings);
    set(&mut card.spacing_mm, o.spacing_mm.as_ref(), "the spacing", warnings);
    card
}

/// A card for weights that have none, from the overrides; names what is missing.
fn card_from_overrides(path: &Path, o: &ModelOverrides) -> Result<ModelCard> {
    let mut missing = Vec::new();
    if o.arch.is_none() {
        missing.push("--arch");
    }
    if o.normalization.is_none() {
        missing.push("--normalize (none, minmax --range LO,HI, zscore or ct)");
    }
    let Some(arch) = o.arch.filter(|_| missing.is_empty()) else {
        return Err(Error::arg(
            "model",
            format!(
                "{} has no model card (weights converted from PyTorch?), so these are required: {}",
                path.display(),
                missing.join(", ")
            ),
        ));
    };
    let width = match o.width {
        Some(w) => w,
        None => super::checkpoint_width(arch, path)?,
    };
    let window = o.window.unwrap_or(DEFAULT_WINDOW);
    Ok(ModelCard {
        format: CARD_FORMAT,
        arch,
        width,
        target: "unknown".into(),
        classes: 2,
        spacing_mm: o.spacing_mm.unwrap_or([0.0; 3]),
        normalization: o.normalization.clone().unwrap_or(Normalization::None),
        patch: window,
        window,
        config_sha256: String::new(),
        dataset: String::new(),
        seed: 0,
        train_cases: Vec::new(),
        val_cases: Vec::new(),
        dice: None,
        hd95_mm: None,
        engine_version: crate::VERSION.into(),
        scan_mm: None,
    })
}

/// SHA-256 of `bytes` as lowercase hex (FIPS 180-4), for the card's `config_sha256`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = bytes.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((bytes.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7].wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v = [v[0], v[0], v[1], v[2], v[3], v[4], v[5], v[6]];
            v[0] = t1.wrapping_add(t2);
            v[4] = v[4].wrapping_add(t1);
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 0.4 mm volume that is 1 above the plane `k = edge + 0.5` (between two voxel centres)
    /// and 0 below, and a stand-in network at 0.8 mm that thresholds what it sees at one half.
    fn step_through(edge: usize) -> (Volume, Volume) {
        let mut v = Volume::zeros([3, 4, 12], [0.4; 3]);
        for (q, x) in v.data.iter_mut().enumerate() {
            *x = f32::from(u8::from(q % 12 > edge));
        }
        let threshold = |x: Volume| {
            Ok(x.with_data(x.data.iter().map(|&p| f32::from(u8::from(p > 0.5))).collect()))
        };
        let phased = phased_probabilities(&v, [0.8; 3], true, threshold).unwrap();
        (v, phased)
    }

    #[test]
    fn phased_lattices_place_a_surface_to_the_input_voxel() {
        // Odd and even edges: one 0.8 mm lattice sees only every other plane, so one of the two
        // would land half a coarse voxel off; the union of the phases finds both exactly.
        for edge in [4, 5] {
            let (v, phased) = step_through(edge);
            assert_eq!(phased.dims, v.dims);
            for (q, (&want, &got)) in v.data.iter().zip(&phased.data).enumerate() {
                assert_eq!(got, want, "edge {edge}, voxel {q}");
            }
        }
        // One lattice through the first centre: the odd voxel at the edge 4.5 is the mean of
        // the decisions either side, right on the threshold.
        let (v, _) = step_through(4);
        let one = phased_probabilities(&v, [0.8; 3], false, Ok).unwrap();
        assert_eq!(one.data[5], 0.5);
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        assert_eq!(
            sha256_hex(long),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn resampling_back_lands_on_the_input_grid() {
        let mut v = Volume::zeros([10, 8, 6], [0.4; 3]);
        for i in 0..10 {
            for j in 0..8 {
                for k in 0..6 {
                    let at = v.index(i, j, k);
                    v.data[at] = (i + 2 * j + 3 * k) as f32;
                }
            }
        }
        let coarse = crate::io::resample::resample_to_spacing(
            &v,
            [0.5; 3],
            crate::io::resample::Interp::Linear,
        )
        .unwrap();
        let back = onto_grid(&coarse, &v);
        assert_eq!(back.dims, v.dims);
        assert_eq!(back.affine, v.affine);
        // A linear field survives both linear resamplings inside the shared extent.
        for i in 0..7 {
            for j in 0..6 {
                for k in 0..4 {
                    let at = v.index(i, j, k);
                    assert!((back.data[at] - v.data[at]).abs() < 1e-3, "({i},{j},{k})");
                }
            }
        }
        assert!(!needs_resampling([0.4; 3], [0.402, 0.4, 0.4]));
        assert!(needs_resampling([0.5, 0.4, 0.4], [0.4; 3]));
        assert!(!needs_resampling([0.5; 3], [0.0; 3]));
    }
}
