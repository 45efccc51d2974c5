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
  dnvs-engine models train           set up the missing ones (says what and how long first)

The cache is $XDG_CACHE_HOME/dnvs-engine/models/<key>/ (or ~/.cache/...), <key> a hash of the
engine version, configs/{localize,localize_fine,mc,tb}.json and the shipped localisers. The
localisers are installed from models/localize_unet8.safetensors (training it takes ~30 min on
two cores) and models/localize_fine_unet8.safetensors (~8 min); MC and TB are trained from phantoms (~18 min on two CPU cores). `nv` does
the same on first use. Each model is set up in a temporary folder and renamed into place when
complete: a killed run leaves nothing trusted. A config with several training.folds trains one
model per fold and installs them as an ensemble (tb.safetensors, tb.2.safetensors, ...), which
nv averages. Run from the repository (configs/, models/).")]
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

/// Trains (or installs, for shipped ones) the default models named in `wanted` (all when empty)
/// that are missing from the cache of `configs`, saying first what and how long; returns the
/// cache folder. Used by `models train` and by `nv` on first use.
pub fn ensure_defaults(
    configs: &Path,
    cache: Option<&Path>,
    device: Option<&str>,
    wanted: &[&str],
) -> anyhow::Result<PathBuf> {
    let (dir, list, texts) = default_cache(configs, cache)?;
    let (list, texts): (Vec<_>, Vec<_>) = list
        .into_iter()
        .zip(texts)
        .filter(|(m, _)| wanted.is_empty() || wanted.contains(&m.name.as_str()))
        .unzip();
    let n = models::train_missing(
        &dir,
        &list,
        &texts,
        &mut |m, secs| match models::shipped_model(configs, &m.name) {
            Some(p) if p.is_file() => {
                eprintln!("models: installing the shipped {} model {}", m.name, p.display())
            }
            _ => eprintln!(
                "models: training the default {} model from phantoms ({}); about {:.0} min on \
                 two CPU cores, less on a GPU",
                m.name,
                m.config,
                (secs / 60.0).ceil()
            ),
        },
        &mut |m, tmp| install_one(configs, m, tmp, device),
    )?;
    if n > 0 {
        eprintln!("models: {n} installed or trained in {}", dir.display());
    }
    Ok(dir)
}

/// The default configs' `(file, text)` pairs: the cache key's material.
type ConfigTexts = Vec<(String, String)>;

/// The cache folder of the default configs in `configs` (under `cache`, else the user's cache
/// root), its models and the configs' texts.
fn default_cache(
    configs: &Path,
    cache: Option<&Path>,
) -> anyhow::Result<(PathBuf, Vec<CachedModel>, ConfigTexts)> {
    let texts = models::read_default_configs(configs)
        .with_context(|| format!("reading the default configs in {}", configs.display()))?;
    let root = match cache {
        Some(c) => c.to_path_buf(),
        None => models::cache_root()?,
    };
    let (dir, list) = models::cached_models(&root, &texts);
    Ok((dir, list, texts))
}

/// The shipped file of `m` copied into `tmp`, else `m` trained there.
fn install_one(
    configs: &Path,
    m: &CachedModel,
    tmp: &Path,
    device: Option<&str>,
) -> dnvs_engine::Result<Vec<PathBuf>> {
    match models::shipped_model(configs, &m.name).filter(|p| p.is_file()) {
        Some(src) => {
            let dst = tmp.join(format!("{}.safetensors", m.name));
            std::fs::copy(&src, &dst).map_err(|e| dnvs_engine::Error::io(&src, e))?;
            Ok(vec![dst])
        }
        None => train_one(configs, m, tmp, device),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.action {
        None => {
            let (dir, list, _) = default_cache(&args.configs, args.cache.as_deref())?;
            println!("default models: {}", dir.display());
            for m in &list {
                print_model(m)?;
            }
            Ok(())
        }
        Some(Action::Train { device }) => {
            let dir =
                ensure_defaults(&args.configs, args.cache.as_deref(), device.as_deref(), &[])?;
            println!("models: all present in {}", dir.display());
            Ok(())
        }
    }
}

fn print_model(m: &CachedModel) -> anyhow::Result<()> {
    if !m.present() {
        println!("  {:<9} missing (dnvs-engine models train)", m.name);
        return Ok(());
    }
    let members = m.members();
    let label = if members.len() > 1 {
        format!("{} (ensemble of {})", m.name, members.len())
    } else {
        m.name.clone()
    };
    println!("  {label}");
    for p in &members {
        match read_card(p)? {
            Some(card) => {
                println!("    {}", p.display());
                for line in card.describe().lines() {
                    println!("      {line}");
                }
            }
            None => println!("    {} (no card)", p.display()),
        }
    }
    Ok(())
}

/// Trains one model with its config, run folders and phantoms inside `tmp`; returns the best
/// weights of each configured fold (all folds when none are listed), in order: the members of
/// the model's ensemble. Each fold is its own run, so a member depends on its fold alone (the
/// first member of `"folds": [1, 2]` is the model of `"folds": [1]`).
fn train_one(
    configs: &Path,
    m: &CachedModel,
    tmp: &Path,
    device: Option<&str>,
) -> dnvs_engine::Result<Vec<PathBuf>> {
    let mut cfg = Config::load(&configs.join(&m.config))?;
    // The phantoms are a function of `loaders.synth` alone, so models with the same settings
    // share one folder beside the models (synth writes it atomically).
    cfg.loaders.dataset_dir = match &cfg.loaders.synth {
        Some(s) => {
            let [x, y, z] = cfg.loaders.voi_shape;
            let kind = if cfg.loaders.target.reads_heads() { "heads" } else { "vois" };
            let scan = s.voi_scan.map_or(String::new(), |v| {
                let [a, b] = v.inplane_mm;
                let [c, d] = v.slice_mm;
                let draws = if v.draws > 1 { format!("-d{}", v.draws) } else { String::new() };
                format!("-scan{a}-{b}x{c}-{d}{draws}")
            });
            let gaps = s.gap_mm.filter(|g| !g.is_default()).map_or(String::new(), |g| {
                let [lo, hi] = g.mm;
                format!("-gap{lo}-{hi}")
            });
            tmp.with_file_name(format!(
                ".phantoms-{kind}-{}-{}-{x}x{y}x{z}{scan}{gaps}",
                s.cases, s.seed
            ))
        }
        None => tmp.join("phantoms"),
    };
    if let Some(d) = device {
        cfg.training.device = d.to_string();
    }
    let folds =
        cfg.training.folds.clone().unwrap_or_else(|| (1..=cfg.training.k_follds_number).collect());
    let mut members = Vec::with_capacity(folds.len());
    for fold in folds {
        let mut one = cfg.clone();
        one.training.folds = Some(vec![fold]);
        one.training.run_dir = tmp.join(format!("run-fold{fold}"));
        one.validate()?;
        let opts =
            TrainOptions { resume: false, stop_after_epochs: None, quiet: false, nan_to: None };
        let summary = trainer::train(&one, &opts)?;
        if !summary.best_model.is_file() {
            return Err(dnvs_engine::Error::format(
                &summary.run_dir,
                "training finished without a best.safetensors",
            ));
        }
        members.push(summary.best_model);
    }
    Ok(members)
}
