//! What a run keeps on disk between epochs: `state.json` (where the run stands), Adam's moments
//! beside the weights, and the weights themselves with their model card.
//!
//! **Exact resume.** Every random choice of an epoch comes from a generator seeded by
//! `(manual_seed, fold, epoch)`, so nothing random has to survive a restart except what
//! `state.json` holds: the epoch reached, Adam's moments, the schedule, the early-stopping
//! counters, the fold generator and the fold's normalisation. After each epoch the weights and
//! Adam's moments are written to new files, then `state.json` (atomically) names them, then older
//! ones go: a run killed at any moment resumes from its last finished epoch with weights and state
//! that belong together.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::io::normalize::Normalization;
use crate::nn::model::{self, ModelCard};
use crate::nn::Network;
use crate::train::config::Config;
use crate::train::logs::{self, EpochPoint};
use crate::train::rng::{mix_seed, Rng};
use crate::{Error, Result};

/// Where a run stands; `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    pub version: u32,
    /// Absolute folder of the config the run started from (relative paths resolve there).
    pub config_base: PathBuf,
    /// The fold in progress (1-based).
    pub fold: usize,
    /// Epochs finished in this fold.
    pub epoch_done: usize,
    /// Training of this fold is over (epochs done or stopped early); its test may be pending.
    pub fold_trained: bool,
    /// Folds whose test results are written.
    pub completed_folds: Vec<usize>,
    /// Weights after `epoch_done` epochs, relative to the run directory.
    pub weights: Option<String>,
    /// Adam's step count; its moments are in `adam_file` (binary, beside the weights).
    pub adam_step: u64,
    /// Adam's moments after `epoch_done` epochs, relative to the run directory.
    pub adam_file: Option<String>,
    pub base_lr: f32,
    pub scheduler: StepLrState,
    pub rng: Rng,
    pub best_val_loss: Option<f64>,
    pub best_epoch: usize,
    pub es_counter: usize,
    pub history: Vec<EpochPoint>,
    /// The fold's normalisation, fitted once on its training cases at the fold's start (also in
    /// every checkpoint's model card).
    #[serde(default)]
    pub normalization: Option<Normalization>,
}

/// StepLR as saved: the schedule and the epoch it has reached.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepLrState {
    pub step_size: usize,
    pub gamma: f32,
    pub last_epoch: usize,
}

pub fn state_path(run: &Path) -> PathBuf {
    run.join("state.json")
}

pub fn save_state(run: &Path, st: &TrainState) -> Result<()> {
    let json = serde_json::to_vec(st).map_err(|e| Error::format(state_path(run), e.to_string()))?;
    logs::write_atomic(&state_path(run), &json)
}

/// Writes Adam's moments: `u64` tensor count, then per tensor its `u64` length and the `m` then
/// `v` values as little-endian `f32` (bit-exact, a tenth of JSON's size).
pub fn write_moments(path: &Path, m: &[Vec<f32>], v: &[Vec<f32>]) -> Result<()> {
    let total: usize = m.iter().map(|x| x.len() * 8 + 8).sum();
    let mut buf = Vec::with_capacity(8 + total);
    buf.extend_from_slice(&(m.len() as u64).to_le_bytes());
    for (a, b) in m.iter().zip(v) {
        buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
        a.iter().chain(b).for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
    }
    logs::write_atomic(path, &buf)
}

pub type Moments = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// Reads what [`write_moments`] wrote.
pub fn read_moments(path: &Path) -> Result<Moments> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = || Error::format(path, "truncated Adam state");
    let mut pos = 0usize;
    let word = |pos: &mut usize| -> Result<u64> {
        let b = bytes.get(*pos..*pos + 8).ok_or_else(bad)?;
        *pos += 8;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let n = word(&mut pos)? as usize;
    let (mut m, mut v) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let len = word(&mut pos)? as usize;
        let floats = |pos: &mut usize| -> Result<Vec<f32>> {
            let b = bytes.get(*pos..*pos + 4 * len).ok_or_else(bad)?;
            *pos += 4 * len;
            Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect())
        };
        m.push(floats(&mut pos)?);
        v.push(floats(&mut pos)?);
    }
    Ok((m, v))
}

/// Reads a run's `state.json`.
pub fn load_state(run: &Path) -> Result<TrainState> {
    let p = state_path(run);
    let text = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_slice(&text).map_err(|e| Error::format(&p, e.to_string()))
}

/// Loads the config a run was started with (`RUN_DIR/config.json`), with its paths resolved as
/// they were and `run_dir` set to `run`.
pub fn load_run_config(run: &Path) -> Result<Config> {
    let st = load_state(run)?;
    let p = run.join("config.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let mut cfg = Config::parse(&text)?;
    cfg.loaders.dataset_dir = st.config_base.join(&cfg.loaders.dataset_dir);
    if let Some(m) = cfg.predict.model_path.take() {
        cfg.predict.model_path = Some(st.config_base.join(m));
    }
    cfg.training.run_dir = run.to_path_buf();
    cfg.source = Some(p);
    Ok(cfg)
}

pub fn fresh_state(cfg: &Config, first_fold: usize) -> Result<TrainState> {
    let base = match &cfg.source {
        Some(p) => p.parent().unwrap_or(Path::new(".")).to_path_buf(),
        None => PathBuf::from("."),
    };
    let base =
        std::fs::canonicalize(if base.as_os_str().is_empty() { Path::new(".") } else { &base })
            .map_err(|e| Error::io(&base, e))?;
    Ok(TrainState {
        version: 1,
        config_base: base,
        fold: first_fold,
        epoch_done: 0,
        fold_trained: false,
        completed_folds: Vec::new(),
        weights: None,
        adam_step: 0,
        adam_file: None,
        base_lr: cfg.training.learning_rate,
        scheduler: StepLrState {
            step_size: cfg.training.step_size,
            gamma: cfg.training.gamma,
            last_epoch: 0,
        },
        rng: Rng::new(mix_seed(&[cfg.manual_seed, 0xF01D])),
        best_val_loss: None,
        best_epoch: 0,
        es_counter: 0,
        history: Vec::new(),
        normalization: None,
    })
}

/// What the model card of a fold's checkpoint says besides the config: the fold's data and
/// normalisation, and the held-out scores of these weights when known.
pub struct CardInfo<'a> {
    pub normalization: &'a Normalization,
    pub spacing_mm: [f64; 3],
    pub config_sha256: &'a str,
    pub train_cases: &'a [String],
    pub val_cases: &'a [String],
    pub dice: Option<f64>,
    pub hd95_mm: Option<f64>,
}

/// The model card of a checkpoint trained from `cfg`.
///
/// # Errors
/// [`Error::Config`] for an unknown `model_name` (already refused by validation).
pub fn card(cfg: &Config, info: &CardInfo) -> Result<ModelCard> {
    let dataset = cfg
        .loaders
        .dataset_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(ModelCard {
        format: model::CARD_FORMAT,
        arch: cfg.arch()?,
        width: cfg.width(),
        target: cfg.loaders.target.name().into(),
        classes: 2,
        spacing_mm: info.spacing_mm,
        normalization: info.normalization.clone(),
        patch: cfg.loaders.train_patch,
        window: cfg.window(),
        config_sha256: info.config_sha256.into(),
        dataset,
        seed: cfg.manual_seed,
        train_cases: info.train_cases.to_vec(),
        val_cases: info.val_cases.to_vec(),
        dice: info.dice.filter(|d| d.is_finite()),
        hd95_mm: info.hd95_mm.filter(|d| d.is_finite()),
        engine_version: crate::VERSION.into(),
        scan_mm: cfg
            .loaders
            .synth
            .as_ref()
            .and_then(|s| s.voi_scan)
            .map(|v| model::TrainingScan { inplane_mm: v.inplane_mm, slice_mm: v.slice_mm }),
    })
}

/// Writes `net` with `card` to `path` (atomically; refused when a weight is not finite).
///
/// # Errors
/// [`Error::Diverged`] for non-finite weights, [`Error::Io`] on write failure.
pub fn save_weights(net: &dyn Network, path: &Path, card: &ModelCard) -> Result<()> {
    model::save_with_card(net, path, card).map_err(|e| match e {
        Error::Arg { msg, .. } => Error::Diverged(msg),
        e => e,
    })
}

/// SHA-256 of the config file a run was started from (empty input when it has none).
pub fn config_sha256(cfg: &Config) -> Result<String> {
    let bytes = match &cfg.source {
        Some(p) => std::fs::read(p).map_err(|e| Error::io(p, e))?,
        None => Vec::new(),
    };
    Ok(model::sha256_hex(&bytes))
}
