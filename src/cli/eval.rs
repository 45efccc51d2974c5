//! `dnvs-engine eval`: Dice, IoU, CE and Hausdorff per patient and side of a checkpoint on
//! held-out cases, and the mean ± std table in the shape of the paper's Table 1.

use std::path::PathBuf;

use dnvs_engine::train::config::Config;
use dnvs_engine::train::eval::{self, EvalOptions};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  dnvs-engine eval --config configs/default.json
  dnvs-engine eval --config configs/default.json --checkpoint runs/default/fold1/best.safetensors --fold 1

Without --checkpoint each trained fold's best.safetensors is evaluated on that fold's held-out
cases. Writes eval_results.csv (k, final_epoch, patient_id, side, loss, ce, dice, IoU, HD, HD_mm)
and table_1.md into the run directory (or --out).")]
pub struct Args {
    /// The config the network was trained with.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Weights to evaluate (safetensors with the original PyTorch names).
    #[arg(long, value_name = "CKPT")]
    checkpoint: Option<PathBuf>,
    /// With --checkpoint: evaluate only this fold's held-out cases (1-based).
    #[arg(long)]
    fold: Option<usize>,
    /// Output folder (default: training.run_dir).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Override training.device (cpu, cuda, cuda:N, auto).
    #[arg(long, value_parser = super::parse_device)]
    device: Option<dnvs_engine::nn::gpu_check::DeviceChoice>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut cfg = Config::load(&args.config)?;
    if let Some(d) = args.device {
        cfg.training.device = d.to_string();
    }
    cfg.validate()?;
    let opts = EvalOptions { checkpoint: args.checkpoint, fold: args.fold, out: args.out };
    let report = eval::eval(&cfg, &opts)?;
    println!("{}", report.table);
    println!("per patient and side: {}", report.csv.display());
    Ok(())
}
