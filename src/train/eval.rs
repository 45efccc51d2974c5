//! `eval`: a checkpoint (or each fold's best) on held-out cases: loss, CE, Dice, IoU and the
//! Hausdorff distance per patient and side, and the mean ± std table in the shape of the paper's
//! Table 1.

use std::path::{Path, PathBuf};

use crate::nn;
use crate::nn::model::read_card;
use crate::train::config::Config;
use crate::train::logs::{self, Csv};
use crate::train::rng::mix_seed;
use crate::train::trainer::{self, Sample, TestRow};
use crate::{Error, Result};

/// Options of one `eval` invocation.
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    /// Weights to evaluate; default `predict.model_path`, else each fold's `best.safetensors` (or
    /// `last.safetensors`) in the run directory, each on its own held-out cases.
    pub checkpoint: Option<PathBuf>,
    /// With a checkpoint: evaluate this fold's held-out cases (1-based) instead of every case.
    pub fold: Option<usize>,
    /// Where `eval_results.csv` and `table_1.md` go (default: the run directory).
    pub out: Option<PathBuf>,
}

/// The evaluation's rows and its table.
pub struct EvalReport {
    pub rows: Vec<TestRow>,
    pub table: String,
    pub csv: PathBuf,
}

/// Runs the evaluation and writes `eval_results.csv` and `table_1.md`.
///
/// # Errors
/// Config and data errors as for training; a missing checkpoint names the files looked for.
pub fn eval(cfg: &Config, opts: &EvalOptions) -> Result<EvalReport> {
    let prep = trainer::prepare(cfg)?;
    let run = &cfg.training.run_dir;
    let mut jobs: Vec<(usize, PathBuf, Vec<&Sample>)> = Vec::new();
    let ckpt = opts.checkpoint.clone().or_else(|| cfg.predict.model_path.clone());
    if let Some(c) = ckpt {
        if !c.exists() {
            return Err(Error::Config {
                msg: format!("checkpoint {} does not exist", c.display()),
            });
        }
        let samples: Vec<&Sample> = match opts.fold {
            Some(f) => {
                let ids = prep.folds.get(f.wrapping_sub(1)).ok_or_else(|| Error::Config {
                    msg: format!("--fold {f} is not in 1..={}", prep.folds.len()),
                })?;
                prep.samples.iter().filter(|s| ids.contains(&s.id)).collect()
            }
            None => prep.samples.iter().collect(),
        };
        jobs.push((opts.fold.unwrap_or(0), c, samples));
    } else {
        let folds = cfg.training.folds.clone().unwrap_or_else(|| (1..=prep.folds.len()).collect());
        for f in folds {
            let dir = run.join(format!("fold{f}"));
            let Some(c) = ["best.safetensors", "last.safetensors"]
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.exists())
            else {
                continue;
            };
            let ids = &prep.folds[f - 1];
            jobs.push((f, c, prep.samples.iter().filter(|s| ids.contains(&s.id)).collect()));
        }
        if jobs.is_empty() {
            return Err(Error::Config {
                msg: format!(
                    "no checkpoint: give --checkpoint, set predict.model_path, or train first (looked for {}/fold*/best.safetensors)",
                    run.display()
                ),
            });
        }
    }
    let final_epoch = trainer::load_state(run).map(|s| s.epoch_done).unwrap_or(0);
    let mut rows = Vec::new();
    for (fold, ckpt, samples) in jobs {
        // The checkpoint's own card says how it was fed; weights without one get the config's
        // normalisation fitted on the joints not evaluated (all of them when none is left).
        let (arch, width, norm) = match read_card(&ckpt)? {
            Some(c) => (c.arch, c.width, c.normalization),
            None => {
                let rest: Vec<&Sample> =
                    prep.samples.iter().filter(|s| !samples.iter().any(|e| e.id == s.id)).collect();
                let fit_on = if rest.is_empty() { samples.clone() } else { rest };
                (cfg.arch()?, cfg.width(), trainer::fit_normalization(cfg, &fit_on)?)
            }
        };
        let mut net = nn::build_seeded(arch, width, mix_seed(&[cfg.manual_seed, fold as u64]))?;
        net.load_safetensors(&ckpt)?;
        net.to_device(prep.device)?;
        let res = trainer::evaluate(
            cfg,
            net.as_mut(),
            &samples,
            &norm,
            prep.device,
            trainer::Scoring::Final,
        )?;
        for (s, (scores, dist)) in samples.iter().zip(res) {
            rows.push(TestRow {
                fold,
                final_epoch,
                id: s.id.clone(),
                side: s.side.clone(),
                scores,
                dist,
            });
        }
    }
    let out = opts.out.clone().unwrap_or_else(|| run.clone());
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let csv_path = out.join("eval_results.csv");
    let _ = std::fs::remove_file(&csv_path);
    let mut csv = Csv::open(&csv_path, logs::TEST_HEADER)?;
    for r in &rows {
        csv.row(&trainer::test_fields(r))?;
    }
    csv.flush()?;
    let target = cfg.loaders.target.label();
    let table = trainer::table_1(&cfg.training.model_name, &cfg.loss.loss_type, &target, &rows);
    logs::write_atomic(&out.join("table_1.md"), table.as_bytes())?;
    Ok(EvalReport { rows, table, csv: csv_path })
}

/// The default output folder of an evaluation (for messages).
pub fn default_out(cfg: &Config) -> &Path {
    &cfg.training.run_dir
}
