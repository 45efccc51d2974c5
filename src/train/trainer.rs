//! The training loop, as the original's `train.py` runs it: k folds over patients; per fold a
//! freshly initialised network, Adam with L2 weight decay, StepLR per epoch,
//! `train_dataset_size` random patches per epoch (left and right joints are separate samples; a
//! `fg_fraction` of them centred on foreground), validation on the held-out joints every epoch,
//! optional early stopping, then per patient and side test scores of the fold's best weights.
//!
//! Data preparation is in [`crate::train::data`] ([`prepare`]), the resume format and the model
//! card in [`crate::train::checkpoint`], scoring in [`crate::train::evaluate`].
//!
//! **One normalisation.** At a fold's start the config's normalising transform (`Normalize` or
//! `CTNormalize`) is fitted once on that fold's training joints; the result goes into
//! `state.json` and every checkpoint's card, and training, validation, test, `eval` and `segment`
//! all apply exactly it.
//!
//! **Divergence** (a non-finite loss, gradient norm or weight) stops the run with
//! [`Error::Diverged`] before anything of that epoch is written; the last good checkpoint stays
//! and resumes. **Ctrl-C** ([`crate::train::interrupt`]) abandons the epoch in progress likewise.
//!
//! Run directory: `config.json` (the config as given), `state.json`, `loss_convergence.csv`,
//! `test_results.csv`, `progress.png`, and per fold `fold{k}/last.safetensors`,
//! `fold{k}/best.safetensors` (lowest validation loss), `fold{k}/last_e{epoch}.safetensors`, all
//! with model cards.

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::autograd;
use crate::io::normalize::Normalization;
use crate::loss;
use crate::nn::{self, Mode, Network};
use crate::optim::{Adam, AdamConfig, AdamState, StepLR};
use crate::train::augment::{self, Patch};
use crate::train::config::Config;
use crate::train::logs::{self, Csv, EpochPoint};
use crate::train::rng::{mix_seed, Rng};
use crate::train::{interrupt, sampling};
use crate::{Device, Error, Result, Tensor};

use crate::train::checkpoint::{self, read_moments, write_moments};
pub use crate::train::checkpoint::{
    load_run_config, load_state, save_state, state_path, CardInfo, StepLrState, TrainState,
};
pub use crate::train::data::{
    fit_normalization, prepare, prepare_with, resolve_device, resolve_device_for, target_mask,
    NativeVoi, Prepared, Sample,
};
use crate::train::evaluate::{add_scores, criterion_unread, div_scores, fmt_f, mean_of, pack};
pub use crate::train::evaluate::{
    criterion, evaluate, table_1, test_fields, Distances, Scores, Scoring, TestRow,
};

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
    /// Replace NaN/infinite CT voxels by this value (HU); without it they are an error.
    pub nan_to: Option<f32>,
}

/// What a finished (or sliced) run reports.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub tests: Vec<TestRow>,
    /// True when every configured fold is trained and tested.
    pub finished: bool,
    /// The last fold's `best.safetensors` (with its card): the model to hand to `segment`.
    pub best_model: PathBuf,
    /// Every tested fold with the epoch of its best weights (what the test rows score).
    pub best_epochs: Vec<(usize, usize)>,
    /// Files this invocation wrote or updated, relative to the run directory.
    pub written: Vec<String>,
}

/// One training example: the augmented CT patch, its label and, with `loss.joint_w`, its joint
/// region (transformed as the label is).
struct Example {
    image: Patch,
    label: Patch,
    joint: Option<Patch>,
}

/// A batch on the device: the network input `(N, D, H, W, 1)`, the target `(N, D, H, W)` and,
/// when some example's joint region is not empty, the joint target: the label inside the region
/// and [`loss::IGNORE_INDEX`] outside, for the loss's joint term.
fn to_tensors(batch: &[Example], dev: Device) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let [d, h, w] = batch[0].image.dims;
    let n = batch.len();
    let mut x = Vec::with_capacity(n * d * h * w);
    let mut y = Vec::with_capacity(n * d * h * w);
    let mut joint = Vec::new();
    for e in batch {
        x.extend_from_slice(&e.image.data);
        y.extend_from_slice(&e.label.data);
        if let Some(j) = &e.joint {
            let inside = |(&l, &r): (&f32, &f32)| if r > 0.5 { l } else { loss::IGNORE_INDEX };
            joint.extend(e.label.data.iter().zip(&j.data).map(inside));
        }
    }
    let any_joint = joint.len() == y.len() && joint.iter().any(|&t| t != loss::IGNORE_INDEX);
    let x = Tensor::from_vec(x, vec![n, d, h, w, 1])?.to_device(dev)?;
    let y = Tensor::from_vec(y, vec![n, d, h, w])?.to_device(dev)?;
    let joint = match any_joint {
        true => Some(Tensor::from_vec(joint, vec![n, d, h, w])?.to_device(dev)?),
        false => None,
    };
    Ok((x, y, joint))
}

/// Trains every configured fold (or continues a run), writing the run directory.
///
/// # Errors
/// Config and data errors before any training (see [`prepare`]); [`Error::Diverged`] and
/// [`Error::Interrupted`] with the epoch in progress abandoned (the run resumes from the last
/// finished one); I/O errors writing the run.
pub fn train(cfg: &Config, opts: &TrainOptions) -> Result<RunSummary> {
    let prep = prepare_with(cfg, opts.nan_to)?;
    let run = cfg.training.run_dir.clone();
    let folds_to_run: Vec<usize> =
        cfg.training.folds.clone().unwrap_or_else(|| (1..=cfg.training.k_follds_number).collect());
    let mut st = if opts.resume {
        let mut st = load_state(&run)?;
        reopen_or_refuse(&run, &mut st, &folds_to_run, cfg.training.num_epochs)?;
        st
    } else {
        if state_path(&run).exists() {
            return Err(Error::Config {
                msg: format!(
                    "{} already holds a run; continue it with `--resume {}`, or set another training.run_dir (or --run-dir)",
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
        checkpoint::fresh_state(cfg, folds_to_run[0])?
    };
    let num_epochs = cfg.training.num_epochs;
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
            summary.best_model = run.join(format!("fold{fold}/best.safetensors"));
            continue;
        }
        if st.fold != fold {
            // A new fold starts from scratch; the fold generator carries on.
            let (rng, base) = (st.rng.clone(), st.config_base.clone());
            let completed_folds = std::mem::take(&mut st.completed_folds);
            st = TrainState {
                rng,
                completed_folds,
                config_base: base,
                ..checkpoint::fresh_state(cfg, fold)?
            };
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
        // Fitted once per fold, then carried by state.json and every card.
        let norm = match &st.normalization {
            Some(n) => n.clone(),
            // Joints samples enter already windowed; the card must say so for inference.
            None if cfg.loaders.target.reads_heads() => crate::train::joints::normalization(),
            None => fit_normalization(cfg, &train_s)?,
        };
        st.normalization = Some(norm.clone());
        if !opts.quiet {
            eprintln!(
                "fold {fold}/{}: train {train_ids:?}, test {test_ids:?}; normalisation {}",
                cfg.training.k_follds_number,
                serde_json::to_string(&norm).unwrap_or_default()
            );
        }
        let card_for = |dice: Option<f64>, hd95_mm: Option<f64>| {
            checkpoint::card(
                cfg,
                &CardInfo {
                    normalization: &norm,
                    spacing_mm: prep.spacing,
                    config_sha256: &prep.config_sha256,
                    train_cases: &train_ids,
                    val_cases: test_ids,
                    dice,
                    hd95_mm,
                },
            )
        };
        let fold_dir = run.join(format!("fold{fold}"));
        std::fs::create_dir_all(&fold_dir).map_err(|e| Error::io(&fold_dir, e))?;
        let mut net =
            nn::build_seeded(cfg.arch()?, cfg.width(), mix_seed(&[cfg.manual_seed, fold as u64]))?;
        net.to_device(prep.device)?;
        // GPU convolutions take bf16 or fp32 operands (fp32 accumulation either way), held with
        // the network's parameters; the CPU is always fp32.
        net.set_precision(
            cfg.training
                .precision
                .parse()
                .map_err(|e: Error| Error::Config { msg: e.to_string() })?,
        );
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
        while !st.fold_trained && st.epoch_done < num_epochs {
            if epochs_left == 0 {
                return Ok(summary);
            }
            epochs_left -= 1;
            let epoch = st.epoch_done; // 0-based; logged 1-based like the original
            adam.set_lr(sched.lr_at(st.base_lr, epoch));
            let ctx = EpochCtx { cfg, prep: &prep, norm: &norm, fold, epoch, quiet: opts.quiet };
            let (tr, va) = run_epoch(&ctx, net.as_mut(), &mut adam, &train_s, &val_s, &mut conv)
                .map_err(|e| where_it_stands(e, &run, fold, st.epoch_done))?;
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
                checkpoint::save_weights(
                    net.as_ref(),
                    &fold_dir.join("best.safetensors"),
                    &card_for(Some(va.dice), None)?,
                )?;
            } else {
                st.es_counter += 1;
            }
            st.epoch_done = epoch + 1;
            st.scheduler.last_epoch = epoch + 1;
            let name = format!("last_e{:04}.safetensors", epoch + 1);
            checkpoint::save_weights(net.as_ref(), &fold_dir.join(&name), &card_for(None, None)?)?;
            let old = st.weights.replace(format!("fold{fold}/{name}"));
            let adam_name = format!("adam_e{:04}.bin", epoch + 1);
            let a = adam.state_synced()?;
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
            if st.epoch_done >= num_epochs {
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
                    "fold {fold} epoch {}/{num_epochs}: lr {:.2e} train loss {:.4} dice {:.3} | val loss {:.4} dice {:.3} IoU {:.3}",
                    epoch + 1,
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
        // Test: the fold's best weights (the model a user gets) on its held-out joints, per
        // patient and side; the scores go into that file's card.
        let best_path = fold_dir.join("best.safetensors");
        let mut best = nn::build(cfg.arch()?, cfg.width())?;
        best.load_safetensors(&best_path)?;
        best.to_device(prep.device)?;
        let res = evaluate(cfg, best.as_mut(), &val_s, &norm, prep.device, Scoring::Final)?;
        let first_row = summary.tests.len();
        for (s, (sc, dist)) in val_s.iter().zip(res) {
            let row = TestRow {
                fold,
                final_epoch: st.best_epoch,
                id: s.id.clone(),
                side: s.side.clone(),
                scores: sc,
                dist,
            };
            tests.row(&test_fields(&row))?;
            summary.tests.push(row);
        }
        tests.flush()?;
        let rows = &summary.tests[first_row..];
        let card = card_for(
            Some(mean_of(rows, |r| r.scores.dice)),
            Some(mean_of(rows, |r| r.dist.hd95_mm)),
        )?;
        checkpoint::save_weights(best.as_ref(), &best_path, &card)?;
        summary.best_model = best_path;
        summary.best_epochs.push((fold, st.best_epoch));
        st.completed_folds.push(fold);
        save_state(&run, &st)?;
    }
    summary.finished = true;
    summary.written = written_files(&run);
    Ok(summary)
}

/// `--resume` of a run whose folds are all done: reopen its last fold when `num_epochs` (from
/// `--epochs`) asks for more epochs than it trained, else refuse, saying the run is finished.
fn reopen_or_refuse(
    run: &std::path::Path,
    st: &mut TrainState,
    folds: &[usize],
    num_epochs: usize,
) -> Result<()> {
    if !folds.iter().all(|f| st.completed_folds.contains(f)) {
        return Ok(());
    }
    if num_epochs > st.epoch_done {
        st.completed_folds.retain(|f| *f != st.fold);
        st.fold_trained = false;
        st.es_counter = 0;
        return Ok(());
    }
    Err(Error::Config {
        msg: format!(
            "the run in {} is finished (folds {:?}; fold {} trained {} epochs); extend it with \
             `--resume {} --epochs N` (N > {}), or start another run",
            run.display(),
            st.completed_folds,
            st.fold,
            st.epoch_done,
            run.display(),
            st.epoch_done
        ),
    })
}

/// Adds where the run stands to a divergence or an interrupt (the epoch in progress is lost).
fn where_it_stands(e: Error, run: &std::path::Path, fold: usize, done: usize) -> Error {
    let stands = format!(
        "nothing of this epoch was written; the run in {} stands at fold {fold} after {done} \
         epoch(s)",
        run.display()
    );
    match e {
        Error::Diverged(m) => Error::Diverged(format!("{m}; {stands}")),
        Error::Interrupted(m) => Error::Interrupted(format!(
            "{m}; {stands}; continue with `dnvs-engine train --resume {}`",
            run.display()
        )),
        e => e,
    }
}

/// The files of a run directory, relative to it, sorted (what a finished run lists).
fn written_files(run: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![run.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(run) {
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// What one epoch needs besides the network, the optimiser and the samples.
struct EpochCtx<'a> {
    cfg: &'a Config,
    prep: &'a Prepared,
    norm: &'a Normalization,
    fold: usize,
    epoch: usize,
    quiet: bool,
}

/// The corner of a training patch: centred on a random foreground voxel with probability
/// `fg_fraction` (no draw at all when it is 0, so older runs keep their random streams), else
/// uniformly random.
fn patch_corner(s: &Sample, patch: [usize; 3], fg_fraction: f64, rng: &mut Rng) -> [usize; 3] {
    let dims = s.image.dims;
    if fg_fraction > 0.0 && !s.foreground.is_empty() && rng.uniform() < fg_fraction {
        let i = s.foreground[rng.below(s.foreground.len())] as usize;
        let at = [i / (dims[1] * dims[2]), (i / dims[2]) % dims[1], i % dims[2]];
        return [0, 1, 2].map(|a| (at[a].saturating_sub(patch[a] / 2)).min(dims[a] - patch[a]));
    }
    sampling::random_corner(dims, patch, rng)
}

/// The CT a training patch is cut from: the sample's image, or with more scans of the VOI one
/// of them all at random (no draw for a single scan, so runs without extra scans keep their
/// random streams).
fn scan_for_patch<'a>(s: &'a Sample, rng: &mut Rng) -> &'a Patch {
    match rng_pick(s.scans.len() + 1, rng) {
        0 => &s.image,
        k => &s.scans[k - 1],
    }
}

/// A uniform index below `n`, drawing only when there is a choice.
fn rng_pick(n: usize, rng: &mut Rng) -> usize {
    if n > 1 {
        rng.below(n)
    } else {
        0
    }
}

/// The sum of every element of `ts` (of its square when `square`) as a scalar on `dev`, nothing
/// read: on the CPU in f64 over the buffers in place, on a GPU by its reduction kernel.
fn device_sum<'a>(
    ts: impl Iterator<Item = &'a Tensor>,
    square: bool,
    dev: Device,
) -> Result<Tensor> {
    if dev == Device::Cpu {
        let mut sum = 0.0f64;
        for t in ts {
            let v = t.as_slice()?;
            sum += if square {
                v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>()
            } else {
                v.iter().map(|x| f64::from(*x)).sum::<f64>()
            };
        }
        return Ok(Tensor::scalar(sum as f32));
    }
    autograd::no_grad(|| {
        let mut acc = Tensor::zeros(Vec::<usize>::new(), dev)?;
        for t in ts {
            let x = if square { crate::ops::mul(t, t)? } else { t.clone() };
            acc = crate::ops::add(&acc, &crate::backend::cuda::reduce::sum_all(&x)?)?;
        }
        Ok(acc)
    })
}

fn run_epoch(
    ctx: &EpochCtx,
    net: &mut dyn Network,
    adam: &mut Adam,
    train_s: &[&Sample],
    val_s: &[&Sample],
    conv: &mut Csv,
) -> Result<(Scores, Scores)> {
    let EpochCtx { cfg, prep, norm, fold, epoch, quiet } = *ctx;
    let dev = prep.device;
    let mut rng = Rng::new(mix_seed(&[cfg.manual_seed, fold as u64, epoch as u64, 0xE90C]));
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
    let at = |b: usize| format!("fold {fold} epoch {} iteration {}", epoch + 1, b + 1);
    for b in 0..n_batches {
        if interrupt::requested() {
            return Err(Error::Interrupted(format!("{} abandoned", at(b))));
        }
        let this = bs.min(n_samples - b * bs);
        let mut batch = Vec::with_capacity(this);
        for _ in 0..this {
            let (i, corner) = if grid.is_empty() {
                let i = rng.below(train_s.len());
                (i, patch_corner(train_s[i], patch, cfg.loaders.fg_fraction, &mut rng))
            } else {
                grid[rng.below(grid.len())]
            };
            let s = train_s[i];
            let ct = scan_for_patch(s, &mut rng);
            let mut image = sampling::crop(&ct.data, ct.dims, corner, patch);
            let mut label = sampling::crop(&s.label.data, s.label.dims, corner, patch);
            let t = &cfg.transforms;
            let seed = rng.fork();
            augment::apply_pair(&t.train_raw, &t.train_label, &mut image, &mut label, norm, seed);
            // The joint region moves with the label: same list, same seed, nearest sampling.
            let joint = s.joint.as_ref().map(|j| {
                let mut j = sampling::crop(&j.data, j.dims, corner, patch);
                augment::apply_list(&t.train_label, &mut j, norm, seed, true);
                j
            });
            batch.push(Example { image, label, joint });
        }
        let (x, y, joint) = to_tensors(&batch, dev)?;
        let probs = net.forward(&x, Mode::Train { seed: rng.fork() })?;
        let (loss, scalars) = criterion_unread(cfg, &probs, &y, joint.as_ref())?;
        let grads = autograd::backward(&loss)?;
        // The tape's saved inputs share the parameters' buffers: release it so that Adam updates
        // them in place instead of filling fresh pages every step.
        drop((loss, probs));
        let params = net.parameters();
        let grad_sq = device_sum(params.iter().filter_map(|p| grads.get(p)), true, dev)?;
        drop(params);
        nn::adam_step(net, adam, &grads)?;
        drop(grads);
        // A non-finite weight makes the sum non-finite. Divergence stops the run before anything
        // of the epoch is written, so checking after the update loses nothing.
        let weight_sum = device_sum(net.parameters().iter(), false, dev)?;
        // The step's one read: loss, CE, Dice, IoU, squared gradient norm and weight sum.
        let host = pack(&[&scalars, &grad_sq, &weight_sum])?.to_vec()?;
        let sc = Scores::from_packed(&host)?;
        let (gn, weights) = (f64::from(host[5]), host[6]);
        if !sc.loss.is_finite() {
            return Err(Error::Diverged(format!("{}: the loss is {}", at(b), sc.loss)));
        }
        if !gn.is_finite() {
            return Err(Error::Diverged(format!("{}: the gradient norm is {}", at(b), gn.sqrt())));
        }
        if !weights.is_finite() {
            return Err(Error::Diverged(format!(
                "{}: the weights became non-finite (their sum is {weights}; learning rate {:.2e})",
                at(b),
                adam.lr()
            )));
        }
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
    let res = evaluate(cfg, net, val_s, norm, dev, Scoring::Epoch).map_err(|e| match e {
        Error::Diverged(m) => Error::Diverged(format!("{} validation: {m}", at(n_batches - 1))),
        e => e,
    })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(v: &[f32]) -> Patch {
        Patch { data: v.to_vec(), dims: [1, 1, v.len()] }
    }

    #[test]
    fn the_joint_target_keeps_the_label_inside_the_region_only() {
        let ig = loss::IGNORE_INDEX;
        let e = |label: &[f32], joint: Option<&[f32]>| Example {
            image: patch(&[0.0; 4]),
            label: patch(label),
            joint: joint.map(patch),
        };
        let batch = [
            e(&[1.0, 1.0, 0.0, 0.0], Some(&[0.0, 1.0, 1.0, 0.0])),
            e(&[0.0, 1.0, 1.0, 0.0], Some(&[0.0; 4])),
        ];
        let (_, y, j) = to_tensors(&batch, Device::Cpu).unwrap();
        assert_eq!(y.to_vec().unwrap(), [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
        let j = j.expect("one example has a joint region").to_vec().unwrap();
        assert_eq!(j, [ig, 1.0, 0.0, ig, ig, ig, ig, ig]);
        // No region anywhere, or no joint term configured: no joint target.
        let none = [e(&[1.0, 0.0, 0.0, 0.0], Some(&[0.0; 4]))];
        assert!(to_tensors(&none, Device::Cpu).unwrap().2.is_none());
        assert!(to_tensors(&[e(&[1.0, 0.0, 0.0, 0.0], None)], Device::Cpu).unwrap().2.is_none());
    }
}
