//! `dnvs-engine train`: trains a network from a config (the original `config.txt` JSON is
//! accepted), or continues a run with `--resume`.

use std::path::PathBuf;

use anyhow::Context;
use dnvs_engine::train::config::Config;
use dnvs_engine::train::interrupt;
use dnvs_engine::train::trainer::{self, TrainOptions};
use dnvs_engine::Error;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  dnvs-engine train --config configs/default.json
  dnvs-engine train --config config.txt --device cpu --epochs 2
  dnvs-engine train --resume runs/default

The run directory (training.run_dir) receives loss_convergence.csv, test_results.csv,
progress.png, state.json and fold*/{last,best}.safetensors (each with its model card: give
best.safetensors, or the fold folder, to `segment --model`). A killed run continues exactly
with --resume RUN_DIR (epoch, Adam moments, schedule, random streams); so does one stopped by
Ctrl-C (exit 130) or by divergence (a non-finite loss, gradient or weight: exit 1, nothing
non-finite written). If the run directory already holds a run, --resume it or pass another
--run-dir. --resume of a finished run says so; --resume RUN_DIR --epochs N extends it.")]
pub struct Args {
    /// The config file (JSON: the original's config.txt keys plus the engine's).
    #[arg(long, value_name = "FILE", required_unless_present = "resume")]
    config: Option<PathBuf>,
    /// Continue the run in RUN_DIR (its saved config is used; --epochs may extend it).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "config")]
    resume: Option<PathBuf>,
    /// Override training.device (cpu, cuda, cuda:N, auto).
    #[arg(long)]
    device: Option<String>,
    /// Override training.num_epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Override training.run_dir.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    run_dir: Option<PathBuf>,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    quiet: bool,
    /// Replace NaN/infinite CT voxels by this value (HU) instead of refusing the data set.
    #[arg(long, value_name = "HU", allow_hyphen_values = true)]
    nan_to: Option<f32>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (mut cfg, resume) = match (&args.resume, &args.config) {
        (Some(dir), _) => {
            (trainer::load_run_config(dir).context("reading the run to resume")?, true)
        }
        (None, Some(path)) => (Config::load(path)?, false),
        (None, None) => anyhow::bail!("give --config FILE or --resume RUN_DIR"),
    };
    if let Some(d) = args.device {
        cfg.training.device = d;
    }
    if let Some(e) = args.epochs {
        cfg.training.num_epochs = e;
    }
    if let Some(r) = args.run_dir {
        cfg.training.run_dir = r;
    }
    cfg.validate()?;
    if args.nan_to.is_some_and(|v| !v.is_finite()) {
        anyhow::bail!("--nan-to must be a finite HU value");
    }
    let opts =
        TrainOptions { resume, stop_after_epochs: None, quiet: args.quiet, nan_to: args.nan_to };
    interrupt::install();
    let summary = match trainer::train(&cfg, &opts) {
        Ok(s) => s,
        Err(e @ Error::Interrupted(_)) => {
            eprintln!("dnvs-engine: {e}");
            std::process::exit(130);
        }
        Err(e) => return Err(e.into()),
    };
    if !summary.tests.is_empty() {
        let table = trainer::table_1(
            &cfg.training.model_name,
            &cfg.loss.loss_type,
            &cfg.loaders.target.label(),
            &summary.tests,
        );
        println!("{table}");
        let from: Vec<String> =
            summary.best_epochs.iter().map(|(f, e)| format!("fold {f} epoch {e}")).collect();
        println!(
            "The table scores each fold's best weights on its held-out joints ({}).",
            from.join(", ")
        );
    }
    println!("run directory: {}", summary.run_dir.display());
    for f in &summary.written {
        println!("  {f}");
    }
    println!("model for segment: {}", summary.best_model.display());
    Ok(())
}
