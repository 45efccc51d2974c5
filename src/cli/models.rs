//! `dnvs-engine models`: the default models in the user's cache: list them (with their cards),
//! or train the missing ones.

use std::path::{Path, PathBuf};

use anyhow::Context;

use dnvs_engine::nn::model::read_card;
use dnvs_engine::pipeline::models::{self, CachedModel};
use dnvs_engine::train::config::Config;
use dnvs_engine::train::trainer::{self, TrainOptions};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  dnvs-engine models                 list the default models and where they are
  dnvs-engine models train           train the missing ones from phantoms (says how long first)

The cache is $XDG_CACHE_HOME/dnvs-engine/models/<key>/ (or ~/.cache/...), <key> a hash of the
engine version and configs/localize.json, configs/mc.json, configs/tb.json. Training happens in a
temporary folder that is renamed into place when complete: a killed run leaves nothing trusted.")]
pub struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Folder with the default configs.
    #[arg(long, default_value = "configs", global = true)]
    configs: PathBuf,
    /// Cache root instead of $XDG_CACHE_HOME/dnvs-engine/models.
    #[arg(long, global = true)]
    cache: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Train the default models that are missing.
    Train {
        /// Override training.device (cpu, cuda, cuda:N, auto).
        #[arg(long)]
        device: Option<String>,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let configs = models::read_default_configs(&args.configs)
        .with_context(|| format!("reading the default configs in {}", args.configs.display()))?;
    let root = match &args.cache {
        Some(c) => c.clone(),
        None => models::cache_root()?,
    };
    let (dir, list) = models::cached_models(&root, &configs);
    match args.action {
        None => {
            println!("default models: {}", dir.display());
            for m in &list {
                print_model(m)?;
            }
            Ok(())
        }
        Some(Action::Train { device }) => {
            let n = models::train_missing(
                &dir,
                &list,
                &configs,
                &mut |m, secs| {
                    eprintln!(
                        "models: training the default {} model from phantoms ({}); about {:.0} \
                         min on two CPU cores, less on a GPU",
                        m.name,
                        m.config,
                        (secs / 60.0).ceil()
                    )
                },
                &mut |m, tmp| train_one(&args.configs, m, tmp, device.as_deref()),
            )?;
            println!("models: {n} trained, all present in {}", dir.display());
            Ok(())
        }
    }
}

fn print_model(m: &CachedModel) -> anyhow::Result<()> {
    if !m.present() {
        println!("  {:<9} missing (dnvs-engine models train)", m.name);
        return Ok(());
    }
    match read_card(&m.path)? {
        Some(card) => println!("  {:<9} {}\n    {}", m.name, m.path.display(), card.describe()),
        None => println!("  {:<9} {} (no card)", m.name, m.path.display()),
    }
    Ok(())
}

/// Trains one model with its config, run folder and phantoms inside `tmp`; returns the best
/// weights of the first fold.
fn train_one(
    configs: &Path,
    m: &CachedModel,
    tmp: &Path,
    device: Option<&str>,
) -> dnvs_engine::Result<PathBuf> {
    let mut cfg = Config::load(&configs.join(&m.config))?;
    cfg.training.run_dir = tmp.join("run");
    cfg.loaders.dataset_dir = tmp.join("phantoms");
    if let Some(d) = device {
        cfg.training.device = d.to_string();
    }
    cfg.validate()?;
    let opts = TrainOptions { resume: false, stop_after_epochs: None, quiet: false, nan_to: None };
    let summary = trainer::train(&cfg, &opts)?;
    if summary.best_model.is_file() {
        Ok(summary.best_model)
    } else {
        Err(dnvs_engine::Error::format(
            &summary.run_dir,
            "training finished without a best.safetensors",
        ))
    }
}
