//! The training loop and the evaluation of held-out cases, as the original's `train.py` runs
//! them: k folds over patients; per fold a freshly initialised network, Adam with L2 weight
//! decay, StepLR per epoch, `train_dataset_size` random patches per epoch (left and right joints
//! are separate samples), validation on the held-out cases every epoch, optional early stopping,
//! then per patient and side test scores.
//!
//! **Exact resume.** Every random choice of an epoch (patches, augmentation, dropout) comes from
//! a generator seeded by `(manual_seed, fold, epoch)`, so nothing random has to survive a restart
//! except what `state.json` holds: the epoch reached, Adam's moments, the schedule, the
//! early-stopping counters and the fold generator. After each epoch the weights and Adam's moments
//! are written to new files, then `state.json` (atomically) names them, then older ones go: a run
//! killed at any moment resumes from its last finished epoch with weights and state that belong
//! together.
//!
//! Run directory: `config.json` (the config as given), `state.json`, `loss_convergence.csv`,
//! `test_results.csv`, `progress.png`, and per fold `fold{k}/last.safetensors`,
//! `fold{k}/best.safetensors` (lowest validation loss), `fold{k}/last_e{epoch}.safetensors`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::autograd;
use crate::geometry;
use crate::io::Volume;
use crate::loss;
use crate::nn::{self, Arch, Mode, Network};
use crate::optim::{Adam, AdamConfig, AdamState, StepLR};
use crate::train::augment::{self, Patch, Stats};
use crate::train::config::{Config, ModelName, Target};
use crate::train::dataset::{Dataset, Side};
use crate::train::logs::{self, Csv, EpochPoint};
use crate::train::metrics;
use crate::train::rng::{mix_seed, Rng};
use crate::train::sampling;
use crate::{Device, Error, Result, Tensor};

/// One joint of one patient, cropped to the VOI shape: the training unit.
#[derive(Clone, Debug)]
pub struct Sample {
    pub id: String,
    /// `L` or `R`.
    pub side: String,
    /// CT values (HU), `voi_shape`.
    pub image: Patch,
    /// 0/1 mask of the target structure.
    pub label: Patch,
    pub spacing: [f64; 3],
}

/// The checked, loaded data of a config: everything that can fail before training does.
pub struct Prepared {
    pub samples: Vec<Sample>,
    /// Sorted case ids.
    pub ids: Vec<String>,
    /// Test ids per fold.
    pub folds: Vec<Vec<String>>,
    pub device: Device,
}

/// Options of one `train` invocation.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Continue the run in `training.run_dir` from its `state.json`.
    pub resume: bool,
    /// Stop (as if killed) after this many epochs in this invocation; for tests and for
    /// training in slices.
    pub stop_after_epochs: Option<usize>,
    /// No progress bar and no per-epoch lines.
    pub quiet: bool,
}

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
}

/// StepLR as saved: the schedule and the epoch it has reached.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepLrState {
    pub step_size: usize,
    pub gamma: f32,
    pub last_epoch: usize,
}

/// Per-batch scores.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scores {
    pub loss: f64,
    pub ce: f64,
    pub dice: f64,
    pub iou: f64,
}

/// Per patient and side test scores of one fold.
#[derive(Clone, Debug)]
pub struct TestRow {
    pub fold: usize,
    pub final_epoch: usize,
    pub id: String,
    pub side: String,
    pub scores: Scores,
    /// Distances of the prediction to the truth (see [`Distances`]).
    pub dist: Distances,
}

/// Distance scores of one prediction, averaged over a sample's patches.
#[derive(Clone, Copy, Debug, Default)]
pub struct Distances {
    /// The original's Hausdorff distance: all foreground voxels, voxel units, 0 when a mask is
    /// empty.
    pub hd: f64,
    /// Surface Hausdorff distance in millimetres (infinite when exactly one mask is empty).
    pub hd_mm: f64,
    /// 95th percentile surface distance (mm).
    pub hd95_mm: f64,
    /// Average symmetric surface distance (mm).
    pub assd_mm: f64,
}

/// What a finished (or sliced) run reports.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub tests: Vec<TestRow>,
    /// True when every configured fold is trained and tested.
    pub finished: bool,
}

/// Maps the config's model name onto the network builder's.
pub fn arch_of(m: ModelName) -> Arch {
    match m {
        ModelName::VNet => Arch::VNet,
        ModelName::VNetAtt => Arch::VNetAtt,
        ModelName::UNet => Arch::UNet,
        ModelName::UNetAtt => Arch::UNetAtt,
    }
}

/// `training.device`: `auto`, `cpu`, or a CUDA device that falls back to the CPU (with a message)
/// when unusable, as the original does.
pub fn resolve_device(spec: &str) -> Result<Device> {
    if spec == "auto" {
        return Ok(Device::auto());
    }
    let dev: Device = spec.parse().map_err(|e: Error| Error::Config { msg: e.to_string() })?;
    if let Device::Cuda(n) = dev {
        if let Err(why) = crate::backend::cuda::probe(n) {
            eprintln!("dnvs-engine: {spec} is not usable ({why}); training on the CPU");
            return Ok(Device::Cpu);
        }
    }
    Ok(dev)
}

/// Writes phantoms into `dataset_dir` when it is missing and `loaders.synth` asks for it.
fn ensure_dataset(cfg: &Config) -> Result<()> {
    let dir = &cfg.loaders.dataset_dir;
    if dir.join("dataset.json").exists() {
        return Ok(());
    }
    let Some(s) = &cfg.loaders.synth else {
        return Err(Error::Config {
            msg: format!(
                "loaders.dataset_dir {}: no dataset.json there (write one with `dnvs-engine synth \
                 --out {}` or add \"synth\": {{\"cases\": N}} to loaders)",
                dir.display(),
                dir.display()
            ),
        });
    };
    eprintln!("dnvs-engine: writing {} phantoms to {}", s.cases, dir.display());
    if cfg.loaders.target == Target::Joints {
        return crate::train::synth_bridge::write_heads(dir, s.cases, s.seed);
    }
    crate::train::synth_bridge::write_phantoms(dir, s.cases, s.seed, cfg.loaders.voi_shape)
}

/// Loads and checks everything a config needs before the first step: the data set exists (or is
/// synthesised), every VOI and mask exists, aligns and is at least `voi_shape`, there are enough
/// cases for the folds. Crops VOIs larger than `voi_shape` about their centre (the original's
/// `precrop`).
///
/// # Errors
/// [`Error::Config`], [`Error::Io`] or [`Error::Format`] naming the case, side and file.
pub fn prepare(cfg: &Config) -> Result<Prepared> {
    ensure_dataset(cfg)?;
    let ds = Dataset::open(&cfg.loaders.dataset_dir)?;
    let mut ids: Vec<String> = ds.cases().iter().map(|c| c.id.clone()).collect();
    ids.sort();
    let folds = sampling::k_folds(&ids, cfg.training.k_follds_number)?;
    let voi = cfg.loaders.voi_shape;
    let mut samples = Vec::new();
    if cfg.loaders.target == Target::Joints {
        samples = crate::train::joints::samples(cfg, &ds, &ids)?;
    }
    // Order as the original's val loader: every case's left joint, then every case's right.
    let joint_sides =
        if cfg.loaders.target == Target::Joints { &[][..] } else { &cfg.loaders.sides };
    for side_name in joint_sides {
        let side = if side_name == "L" { Side::L } else { Side::R };
        for id in &ids {
            let entry = ds.cases().iter().find(|c| &c.id == id).expect("ids come from cases()");
            if !entry.sides.contains(&side) {
                continue;
            }
            let v = ds.load_voi(id, side)?;
            let mask = match cfg.loaders.target {
                Target::Mc => &v.mc,
                Target::Tb | Target::Joints => &v.tb,
            };
            check_aligned(id, side_name, &v.ct, mask)?;
            if (0..3).any(|a| v.ct.dims[a] < voi[a]) {
                return Err(Error::Config {
                    msg: format!(
                        "case {id} side {side_name}: VOI {:?} is smaller than loaders.voi_shape {voi:?}",
                        v.ct.dims
                    ),
                });
            }
            let c = sampling::centre_corner(v.ct.dims, voi);
            let image = sampling::crop(&v.ct.data, v.ct.dims, c, voi);
            let mut label = sampling::crop(&mask.data, mask.dims, c, voi);
            label.data.iter_mut().for_each(|x| *x = if *x > 0.5 { 1.0 } else { 0.0 });
            samples.push(Sample {
                id: id.clone(),
                side: side_name.clone(),
                image,
                label,
                spacing: v.ct.spacing,
            });
        }
    }
    if samples.is_empty() {
        return Err(Error::Config {
            msg: "the data set has no VOI for the configured sides".into(),
        });
    }
    let device = resolve_device(&cfg.training.device)?;
    // GPU convolutions take bf16 or fp32 operands (fp32 accumulation either way); the CPU is
    // always fp32.
    crate::ops::set_conv_precision(match cfg.training.precision.as_str() {
        "fp32" => crate::backend::cuda::Precision::F32,
        _ => crate::backend::cuda::Precision::Bf16,
    });
    Ok(Prepared { samples, ids, folds, device })
}

fn check_aligned(id: &str, side: &str, ct: &Volume, mask: &Volume) -> Result<()> {
    let close = ct
        .affine
        .iter()
        .flatten()
        .zip(mask.affine.iter().flatten())
        .all(|(a, b)| (a - b).abs() < 1e-3);
    if ct.dims != mask.dims || !close {
        return Err(Error::Config {
            msg: format!(
                "case {id} side {side}: the CT ({:?}) and its mask ({:?}) do not align (shape or affine differ)",
                ct.dims, mask.dims
            ),
        });
    }
    Ok(())
}

/// The loss of the config on `probs` against `target`, with the original's logged scores.
///
/// # Shapes
/// `probs (N, D, H, W, 2)`, `target (N, D, H, W)`.
pub fn criterion(cfg: &Config, probs: &Tensor, target: &Tensor) -> Result<(Tensor, Scores)> {
    let l = &cfg.loss;
    let w = [l.w0, l.w1];
    let ce = loss::nll_probs(probs, target, Some(&w))?;
    let hard = loss::hard_dice(probs, target)?;
    let dice_loss = if l.soft_dice { loss::soft_dice(probs, target)? } else { hard.loss.clone() };
    let total = match l.loss_type.as_str() {
        "CE" => ce.clone(),
        "D" => dice_loss,
        _ => crate::ops::add(&dice_loss, &crate::ops::scale(&ce, l.dce_w)?)?,
    };
    let scores = Scores {
        loss: total.item()? as f64,
        ce: ce.item()? as f64,
        dice: hard.dice as f64,
        iou: hard.iou as f64,
    };
    Ok((total, scores))
}

fn stats_of<'a>(samples: impl Iterator<Item = &'a Sample>) -> Stats {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for s in samples {
        for v in &s.image.data {
            lo = lo.min(*v);
            hi = hi.max(*v);
        }
    }
    Stats { min: lo, max: hi }
}

fn to_tensors(batch: &[(Patch, Patch)], dev: Device) -> Result<(Tensor, Tensor)> {
    let [d, h, w] = batch[0].0.dims;
    let n = batch.len();
    let mut x = Vec::with_capacity(n * d * h * w);
    let mut y = Vec::with_capacity(n * d * h * w);
    for (img, lab) in batch {
        x.extend_from_slice(&img.data);
        y.extend_from_slice(&lab.data);
    }
    let x = Tensor::from_vec(x, vec![n, d, h, w, 1])?.to_device(dev)?;
    let y = Tensor::from_vec(y, vec![n, d, h, w])?.to_device(dev)?;
    Ok((x, y))
}

/// The validation/test patches of one sample (`val_patch` on the `val_stride` grid; the whole
/// VOI when no `val_patch`), transformed with the test lists.
fn eval_patches(cfg: &Config, s: &Sample, stats: Stats) -> Vec<(Patch, Patch)> {
    let dims = s.image.dims;
    let patch = cfg.loaders.val_patch.unwrap_or(dims);
    let stride = cfg.loaders.val_stride.unwrap_or(patch);
    let t = &cfg.transforms;
    sampling::grid(dims, patch, stride)
        .into_iter()
        .map(|c| {
            let mut img = sampling::crop(&s.image.data, dims, c, patch);
            let mut lab = sampling::crop(&s.label.data, dims, c, patch);
            augment::apply_pair(&t.test_raw, &t.test_label, &mut img, &mut lab, stats, 0);
            (img, lab)
        })
        .collect()
}

/// The network's probabilities on one patch with recording off.
fn predict(net: &mut dyn Network, img: &Patch, dev: Device) -> Result<Tensor> {
    let [d, h, w] = img.dims;
    let x = Tensor::from_vec(img.data.clone(), vec![1, d, h, w, 1])?.to_device(dev)?;
    autograd::no_grad(|| net.forward(&x, Mode::Eval))
}

/// Scores (and, with `with_hd`, distances) of `net` on each sample, averaged over its patches.
pub fn evaluate(
    cfg: &Config,
    net: &mut dyn Network,
    samples: &[&Sample],
    dev: Device,
    with_hd: bool,
) -> Result<Vec<(Scores, Distances)>> {
    let stats = stats_of(samples.iter().copied());
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        let patches = eval_patches(cfg, s, stats);
        let mut acc = (Scores::default(), Distances::default());
        for (img, lab) in &patches {
            let probs = predict(net, img, dev)?;
            let [d, h, w] = lab.dims;
            let y = Tensor::from_vec(lab.data.clone(), vec![1, d, h, w])?.to_device(dev)?;
            let (_, sc) = autograd::no_grad(|| criterion(cfg, &probs, &y))?;
            acc.0.loss += sc.loss;
            acc.0.ce += sc.ce;
            acc.0.dice += sc.dice;
            acc.0.iou += sc.iou;
            if with_hd {
                let p = probs.to_device(Device::Cpu)?.to_vec()?;
                let pred = metrics::argmax_fg(&p);
                let gt: Vec<bool> = lab.data.iter().map(|v| *v > 0.5).collect();
                let m = geometry::metrics::segmentation_metrics(&pred, &gt, lab.dims, s.spacing)?;
                acc.1.hd += m.hd_original_vox;
                acc.1.hd_mm += m.hd_mm;
                acc.1.hd95_mm += m.hd95_mm;
                acc.1.assd_mm += m.assd_mm;
            }
        }
        let n = patches.len().max(1) as f64;
        let sc = Scores {
            loss: acc.0.loss / n,
            ce: acc.0.ce / n,
            dice: acc.0.dice / n,
            iou: acc.0.iou / n,
        };
        let d = acc.1;
        let dist = Distances {
            hd: d.hd / n,
            hd_mm: d.hd_mm / n,
            hd95_mm: d.hd95_mm / n,
            assd_mm: d.assd_mm / n,
        };
        out.push((sc, dist));
    }
    Ok(out)
}

fn fmt_f(v: f64) -> String {
    format!("{v:.6}")
}

fn state_path(run: &Path) -> PathBuf {
    run.join("state.json")
}

fn save_state(run: &Path, st: &TrainState) -> Result<()> {
    let json = serde_json::to_vec(st).map_err(|e| Error::format(state_path(run), e.to_string()))?;
    logs::write_atomic(&state_path(run), &json)
}

/// Writes Adam's moments: `u64` tensor count, then per tensor its `u64` length and the `m` then
/// `v` values as little-endian `f32` (bit-exact, a tenth of JSON's size).
fn write_moments(path: &Path, m: &[Vec<f32>], v: &[Vec<f32>]) -> Result<()> {
    let total: usize = m.iter().map(|x| x.len() * 8 + 8).sum();
    let mut buf = Vec::with_capacity(8 + total);
    buf.extend_from_slice(&(m.len() as u64).to_le_bytes());
    for (a, b) in m.iter().zip(v) {
        buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
        a.iter().chain(b).for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
    }
    logs::write_atomic(path, &buf)
}

type Moments = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// Reads what [`write_moments`] wrote.
fn read_moments(path: &Path) -> Result<Moments> {
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

fn fresh_state(cfg: &Config, first_fold: usize) -> Result<TrainState> {
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
    })
}

/// Trains every configured fold (or continues a run), writing the run directory.
///
/// # Errors
/// Config and data errors before any training (see [`prepare`]); I/O errors writing the run.
pub fn train(cfg: &Config, opts: &TrainOptions) -> Result<RunSummary> {
    let prep = prepare(cfg)?;
    let run = cfg.training.run_dir.clone();
    let folds_to_run: Vec<usize> =
        cfg.training.folds.clone().unwrap_or_else(|| (1..=cfg.training.k_follds_number).collect());
    let mut st = if opts.resume {
        load_state(&run)?
    } else {
        if state_path(&run).exists() {
            return Err(Error::Config {
                msg: format!(
                    "{} already holds a run; continue it with `--resume {}` or set another training.run_dir",
                    run.display(),
                    run.display()
                ),
            });
        }
        std::fs::create_dir_all(&run).map_err(|e| Error::io(&run, e))?;
        if let Some(src) = &cfg.source {
            let text = std::fs::read(src).map_err(|e| Error::io(src, e))?;
            logs::write_atomic(&run.join("config.json"), &text)?;
        }
        let _ = std::fs::remove_file(run.join("loss_convergence.csv"));
        let _ = std::fs::remove_file(run.join("test_results.csv"));
        fresh_state(cfg, folds_to_run[0])?
    };
    // Rows of an epoch or a test that did not finish are written again.
    logs::truncate_after(&run.join("loss_convergence.csv"), st.fold, st.epoch_done)?;
    let done_tests = st.completed_folds.iter().copied().max().unwrap_or(0);
    logs::truncate_after(&run.join("test_results.csv"), done_tests, usize::MAX)?;
    let mut conv = Csv::open(&run.join("loss_convergence.csv"), logs::CONVERGENCE_HEADER)?;
    let mut tests = Csv::open(&run.join("test_results.csv"), logs::TEST_HEADER)?;
    let mut summary = RunSummary { run_dir: run.clone(), ..Default::default() };
    let mut epochs_left = opts.stop_after_epochs.unwrap_or(usize::MAX);
    for &fold in &folds_to_run {
        if st.completed_folds.contains(&fold) {
            continue;
        }
        if st.fold != fold {
            // A new fold starts from scratch; the fold generator carries on.
            let (rng, base) = (st.rng.clone(), st.config_base.clone());
            let completed_folds = std::mem::take(&mut st.completed_folds);
            st = TrainState { rng, completed_folds, config_base: base, ..fresh_state(cfg, fold)? };
        }
        let test_ids = &prep.folds[fold - 1];
        let train_ids = sampling::train_ids(
            &prep.ids,
            test_ids,
            cfg.training.trainsize,
            &mut Rng::new(mix_seed(&[cfg.manual_seed, fold as u64, 0x7A1])),
        );
        let train_s: Vec<&Sample> =
            prep.samples.iter().filter(|s| train_ids.contains(&s.id)).collect();
        let val_s: Vec<&Sample> =
            prep.samples.iter().filter(|s| test_ids.contains(&s.id)).collect();
        if train_s.is_empty() || val_s.is_empty() {
            return Err(Error::Config {
                msg: format!("fold {fold}: no training or no held-out VOI"),
            });
        }
        if !opts.quiet {
            eprintln!(
                "fold {fold}/{}: train {train_ids:?}, test {test_ids:?}",
                cfg.training.k_follds_number
            );
        }
        let fold_dir = run.join(format!("fold{fold}"));
        std::fs::create_dir_all(&fold_dir).map_err(|e| Error::io(&fold_dir, e))?;
        let mut net = nn::build_seeded(
            arch_of(cfg.arch()?),
            cfg.width(),
            mix_seed(&[cfg.manual_seed, fold as u64]),
        )?;
        net.to_device(prep.device)?;
        let adam_cfg = AdamConfig {
            lr: st.base_lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: cfg.training.wd,
        };
        let mut adam = match (&st.weights, &st.adam_file) {
            (Some(wf), Some(af)) => {
                net.load_safetensors(&run.join(wf))?;
                let (m, v) = read_moments(&run.join(af))?;
                Adam::from_state(adam_cfg, AdamState { step: st.adam_step, m, v })
            }
            _ => Adam::new(adam_cfg),
        };
        let sched = StepLR { step_size: cfg.training.step_size, gamma: cfg.training.gamma };
        while !st.fold_trained && st.epoch_done < cfg.training.num_epochs {
            if epochs_left == 0 {
                return Ok(summary);
            }
            epochs_left -= 1;
            let epoch = st.epoch_done; // 0-based; logged 1-based like the original
            adam.set_lr(sched.lr_at(st.base_lr, epoch));
            let (tr, va) = run_epoch(
                cfg,
                &prep,
                net.as_mut(),
                &mut adam,
                &train_s,
                &val_s,
                fold,
                epoch,
                &mut conv,
                opts.quiet,
            )?;
            conv.flush()?;
            st.history.push(EpochPoint {
                epoch: epoch + 1,
                train_loss: tr.loss,
                val_loss: va.loss,
                train_dice: tr.dice,
                val_dice: va.dice,
            });
            // Early stopping as the original's EarlyStopping: improvement means val < best - delta.
            let delta = cfg.training.delta as f64;
            let improved = match st.best_val_loss {
                None => true,
                Some(b) => -va.loss >= -b + delta,
            };
            if improved {
                st.best_val_loss = Some(va.loss);
                st.best_epoch = epoch + 1;
                st.es_counter = 0;
                net.save_safetensors(&fold_dir.join("best.safetensors"))?;
            } else {
                st.es_counter += 1;
            }
            st.epoch_done = epoch + 1;
            st.scheduler.last_epoch = epoch + 1;
            let name = format!("last_e{:04}.safetensors", epoch + 1);
            net.save_safetensors(&fold_dir.join(&name))?;
            let old = st.weights.replace(format!("fold{fold}/{name}"));
            let adam_name = format!("adam_e{:04}.bin", epoch + 1);
            let a = adam.state();
            write_moments(&fold_dir.join(&adam_name), &a.m, &a.v)?;
            st.adam_step = a.step;
            let old_adam = st.adam_file.replace(format!("fold{fold}/{adam_name}"));
            if let Some((patience, _)) = cfg.early_stopping() {
                if st.es_counter >= patience {
                    if !opts.quiet {
                        eprintln!("fold {fold}: early stopping at epoch {}", epoch + 1);
                    }
                    st.fold_trained = true;
                }
            }
            if st.epoch_done >= cfg.training.num_epochs {
                st.fold_trained = true;
            }
            save_state(&run, &st)?;
            for o in [old, old_adam].into_iter().flatten() {
                let _ = std::fs::remove_file(run.join(o));
            }
            let last = fold_dir.join("last.safetensors");
            let bytes = std::fs::read(fold_dir.join(&name)).map_err(|e| Error::io(&last, e))?;
            logs::write_atomic(&last, &bytes)?;
            logs::progress_png(&run.join("progress.png"), &st.history)?;
            if !opts.quiet {
                eprintln!(
                    "fold {fold} epoch {}/{}: lr {:.2e} train loss {:.4} dice {:.3} | val loss {:.4} dice {:.3} IoU {:.3}",
                    epoch + 1,
                    cfg.training.num_epochs,
                    adam.lr(),
                    tr.loss,
                    tr.dice,
                    va.loss,
                    va.dice,
                    va.iou
                );
            }
        }
        st.fold_trained = true;
        // Test: the final weights on the held-out cases, per patient and side.
        let res = evaluate(cfg, net.as_mut(), &val_s, prep.device, true)?;
        for (s, (sc, dist)) in val_s.iter().zip(res) {
            let row = TestRow {
                fold,
                final_epoch: st.epoch_done,
                id: s.id.clone(),
                side: s.side.clone(),
                scores: sc,
                dist,
            };
            tests.row(&test_fields(&row))?;
            summary.tests.push(row);
        }
        tests.flush()?;
        st.completed_folds.push(fold);
        save_state(&run, &st)?;
    }
    summary.finished = true;
    Ok(summary)
}

/// A test row as CSV fields (`HD` in voxels as the original, then `HD_mm`, `HD95_mm`,
/// `ASSD_mm`).
pub fn test_fields(r: &TestRow) -> Vec<String> {
    vec![
        r.fold.to_string(),
        r.final_epoch.to_string(),
        r.id.clone(),
        r.side.clone(),
        fmt_f(r.scores.loss),
        fmt_f(r.scores.ce),
        fmt_f(r.scores.dice),
        fmt_f(r.scores.iou),
        fmt_f(r.dist.hd),
        fmt_f(r.dist.hd_mm),
        fmt_f(r.dist.hd95_mm),
        fmt_f(r.dist.assd_mm),
    ]
}

#[allow(clippy::too_many_arguments)] // one epoch needs all of them; a struct would only rename them
fn run_epoch(
    cfg: &Config,
    prep: &Prepared,
    net: &mut dyn Network,
    adam: &mut Adam,
    train_s: &[&Sample],
    val_s: &[&Sample],
    fold: usize,
    epoch: usize,
    conv: &mut Csv,
    quiet: bool,
) -> Result<(Scores, Scores)> {
    let dev = prep.device;
    let mut rng = Rng::new(mix_seed(&[cfg.manual_seed, fold as u64, epoch as u64, 0xE90C]));
    let stats = stats_of(train_s.iter().copied());
    let patch = cfg.loaders.train_patch;
    let grid: Vec<(usize, [usize; 3])> = match cfg.loaders.train_stride {
        Some(stride) => train_s
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                sampling::grid(s.image.dims, patch, stride).into_iter().map(move |c| (i, c))
            })
            .collect(),
        None => Vec::new(),
    };
    let n_samples = cfg.loaders.train_dataset_size;
    let bs = cfg.training.batch_size;
    let n_batches = n_samples.div_ceil(bs);
    let bar = progress_bar(quiet, n_batches as u64, fold, epoch);
    let mut sum = Scores::default();
    for b in 0..n_batches {
        let this = bs.min(n_samples - b * bs);
        let mut batch = Vec::with_capacity(this);
        for _ in 0..this {
            let (i, corner) = if grid.is_empty() {
                let i = rng.below(train_s.len());
                (i, sampling::random_corner(train_s[i].image.dims, patch, &mut rng))
            } else {
                grid[rng.below(grid.len())]
            };
            let s = train_s[i];
            let mut img = sampling::crop(&s.image.data, s.image.dims, corner, patch);
            let mut lab = sampling::crop(&s.label.data, s.label.dims, corner, patch);
            let t = &cfg.transforms;
            augment::apply_pair(
                &t.train_raw,
                &t.train_label,
                &mut img,
                &mut lab,
                stats,
                rng.fork(),
            );
            batch.push((img, lab));
        }
        let (x, y) = to_tensors(&batch, dev)?;
        let probs = net.forward(&x, Mode::Train { seed: rng.fork() })?;
        let (loss, sc) = criterion(cfg, &probs, &y)?;
        let grads = autograd::backward(&loss)?;
        let params = net.parameters();
        let g: Vec<Tensor> = params
            .iter()
            .map(|p| match grads.get(p) {
                Some(g) => Ok(g.clone()),
                None => Tensor::zeros(p.dims().to_vec(), p.device()),
            })
            .collect::<Result<_>>()?;
        let new = adam.step(&params, &g)?;
        net.set_parameters(new)?;
        conv.row(&[
            fold.to_string(),
            (epoch + 1).to_string(),
            "train".into(),
            b.to_string(),
            fmt_f(sc.loss),
            fmt_f(sc.ce),
            fmt_f(sc.dice),
            fmt_f(sc.iou),
        ])?;
        add_scores(&mut sum, &sc);
        if let Some(bar) = &bar {
            bar.set_message(format!("loss {:.4} dice {:.3}", sc.loss, sc.dice));
            bar.inc(1);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let train_mean = div_scores(sum, n_batches as f64);
    let res = evaluate(cfg, net, val_s, dev, false)?;
    let mut vsum = Scores::default();
    for (i, (sc, _)) in res.iter().enumerate() {
        conv.row(&[
            fold.to_string(),
            (epoch + 1).to_string(),
            "test".into(),
            i.to_string(),
            fmt_f(sc.loss),
            fmt_f(sc.ce),
            fmt_f(sc.dice),
            fmt_f(sc.iou),
        ])?;
        add_scores(&mut vsum, sc);
    }
    Ok((train_mean, div_scores(vsum, res.len().max(1) as f64)))
}

fn add_scores(a: &mut Scores, b: &Scores) {
    a.loss += b.loss;
    a.ce += b.ce;
    a.dice += b.dice;
    a.iou += b.iou;
}

fn div_scores(a: Scores, n: f64) -> Scores {
    Scores { loss: a.loss / n, ce: a.ce / n, dice: a.dice / n, iou: a.iou / n }
}

fn progress_bar(quiet: bool, n: u64, fold: usize, epoch: usize) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(n);
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(format!("fold {fold} epoch {}", epoch + 1));
    Some(bar)
}

/// Means and population standard deviations of the test rows in the shape of the paper's Table 1
/// (Dice and IoU in percent), as Markdown.
pub fn table_1(model: &str, loss_type: &str, target: &str, rows: &[TestRow]) -> String {
    let col = |f: fn(&TestRow) -> f64| metrics::mean_std(&rows.iter().map(f).collect::<Vec<_>>());
    let mut s = format!("| Obj. | Score | {model} {loss_type} |\n|---|---|---|\n");
    type Column = fn(&TestRow) -> f64;
    let lines: [(&str, Column, f64); 7] = [
        ("DICE", |r| r.scores.dice, 100.0),
        ("IoU", |r| r.scores.iou, 100.0),
        ("CE", |r| r.scores.ce, 1.0),
        ("HD (voxels)", |r| r.dist.hd, 1.0),
        ("HD (mm)", |r| r.dist.hd_mm, 1.0),
        ("HD95 (mm)", |r| r.dist.hd95_mm, 1.0),
        ("ASSD (mm)", |r| r.dist.assd_mm, 1.0),
    ];
    for (name, f, k) in lines {
        let (m, sd) = col(f);
        s.push_str(&format!("| {target} | {name} | {:.1} ± {:.1} |\n", m * k, sd * k));
    }
    s.push_str(&format!("\n{} joints (patient, side).\n", rows.len()));
    s
}
