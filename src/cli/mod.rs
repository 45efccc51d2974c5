//! Subcommands, one file each. `anyhow` lives here and in `main.rs` only.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dnvs_engine::nn::gpu_check::DeviceChoice;

mod bench;
mod convert;
mod eval;
mod inflate;
mod info;
mod localize;
mod mesh;
mod metrics;
mod models;
mod nv;
mod segment;
mod synth;
mod train;

/// Deep Negative Volume Segmentation of the temporomandibular joint: segment the mandibular
/// condyle and temporal bone in head CT, mesh them, and measure the joint's negative volume.
#[derive(Parser)]
#[command(name = "dnvs-engine", version, about, long_about = None)]
#[command(
    after_help = "Examples:\n  dnvs-engine info\n  dnvs-engine nv --input head.nii.gz --out result/\n  dnvs-engine synth --out data/phantoms --cases 20 --seed 1\n  dnvs-engine train --config configs/default.json\n  dnvs-engine inflate --mc mc.nii.gz --tb tb.nii.gz --out nv/"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole pipeline: head CT (or a cohort) in, negative volume per joint out, with
    /// report.json, report.png, labels and meshes.
    Nv(nv::Args),
    /// The default models in the user's cache: list them, or `models train` the missing ones.
    Models(models::Args),
    /// Train a segmentation network from a config (the original config.txt JSON is accepted).
    Train(train::Args),
    /// Evaluate a checkpoint on held-out cases: Dice, IoU, CE, Hausdorff per patient and side.
    Eval(eval::Args),
    /// Find both temporomandibular joints in a head CT and cut a VOI around each.
    Localize(localize::Args),
    /// Segment a CT with a trained network (sliding window), writing a mask in the CT's geometry.
    Segment(segment::Args),
    /// Marching-cubes mesh of a mask or probability map (STL, PLY or OBJ, world millimetres).
    Mesh(mesh::Args),
    /// Inflate the condyle surface until it meets the temporal bone: the negative volume.
    Inflate(inflate::Args),
    /// Dice, IoU, Hausdorff, HD95 and ASSD (mm) between a prediction and a ground truth mask.
    Metrics(metrics::Args),
    /// Write synthetic TMJ head-CT phantoms with ground-truth labels.
    Synth(synth::Args),
    /// Convert a DICOM series folder or a NIfTI file to NIfTI.
    Convert(convert::Args),
    /// Time kernels and a training step; JSON output with --json.
    Bench(bench::Args),
    /// Version, threads and CUDA availability; with a FILE, its shape, spacing and affine.
    Info(info::Args),
}

/// The one `--device` parser of every subcommand: `auto`, `cpu`, `cuda` or `cuda:N`. `auto` and
/// `cuda` become a device through `nn::gpu_check::resolve`, which runs the GPU self-check.
pub(crate) fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse().map_err(|e: dnvs_engine::Error| e.to_string())
}

/// Comma-separated numbers (`1,2,3`), each named in the error when it does not parse; the
/// callers check the count and the values.
pub(crate) fn parse_numbers<T: std::str::FromStr>(s: &str) -> Result<Vec<T>, String>
where
    T::Err: std::fmt::Display,
{
    s.split(',').map(|p| p.trim().parse::<T>().map_err(|e| format!("'{p}': {e}"))).collect()
}

/// The one `D,H,W` parser (`--window`, `--patch`, `--voi-size`): three positive sizes.
pub(crate) fn parse_dhw(s: &str) -> Result<[usize; 3], String> {
    let v: Vec<usize> = parse_numbers(s)?;
    match v[..] {
        [d, h, w] if d > 0 && h > 0 && w > 0 => Ok([d, h, w]),
        _ => Err(format!("'{s}' is not three positive sizes D,H,W (e.g. 120,150,70)")),
    }
}

/// Runs one subcommand. Exit codes: 0 done, 1 failed (the error is printed), 2 bad arguments
/// (clap).
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Nv(a) => nv::run(a),
        Command::Models(a) => models::run(a),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Localize(a) => localize::run(a),
        Command::Segment(a) => segment::run(a),
        Command::Mesh(a) => mesh::run(a),
        Command::Inflate(a) => inflate::run(a),
        Command::Metrics(a) => metrics::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Info(a) => info::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnvs-engine: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
