//! `dnvs-engine info`: the engine and this machine (version, threads, CUDA); with a FILE, the
//! file's geometry.

use std::path::{Path, PathBuf};

use anyhow::Context;
use dnvs_engine::io::{self, nifti, orientation, ValueStats};
use dnvs_engine::tensor::cuda_driver_present;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dnvs-engine info\n  dnvs-engine info ct.nii.gz\n  dnvs-engine info dicom/CT_series/\n  dnvs-engine info runs/default/fold1/best.safetensors   (prints the model card)"
)]
pub struct Args {
    /// A NIfTI file or DICOM folder to describe, or a .safetensors model (its card).
    file: Option<PathBuf>,
    /// Run the GPU self-check now (a small V-Net step on the GPU and the CPU) and print how
    /// every op agrees; the verdict is cached for later runs.
    #[arg(long)]
    check_gpu: bool,
    /// The convolution precision the self-check runs in (bf16 or fp32).
    #[arg(long, default_value = "bf16", requires = "check_gpu")]
    precision: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(file) = args.file {
        if file.extension().is_some_and(|e| e == "safetensors") {
            return describe_model(&file);
        }
        return describe(&file).with_context(|| format!("cannot describe {}", file.display()));
    }
    println!("dnvs-engine {}", dnvs_engine::VERSION);
    println!("threads: {}", rayon::current_num_threads());
    if cuda_driver_present() {
        match dnvs_engine::backend::cuda::probe(0) {
            Ok(name) => println!("cuda: driver present, cuda:0 = {name}"),
            Err(why) => println!("cuda: driver present, but {why}"),
        }
    } else {
        println!("cuda: no driver library found (CPU only)");
    }
    if args.check_gpu {
        check_gpu(&args.precision)?;
    }
    Ok(())
}

/// `--check-gpu`: per-op agreement of cuda:0 with the CPU, or why there is nothing to check.
fn check_gpu(precision: &str) -> anyhow::Result<()> {
    use dnvs_engine::nn::gpu_check;
    let prec: dnvs_engine::tensor::Precision = precision.parse()?;
    if let Err(why) = dnvs_engine::tensor::probe(0) {
        println!("self-check: no GPU to check ({why})");
        return Ok(());
    }
    let v = gpu_check::run_check(0, prec).context("running the GPU self-check")?;
    let (rtol, atol) = gpu_check::tolerance(prec);
    let (nr, na) = gpu_check::NORM_TOLERANCE;
    println!(
        "self-check of cuda:0 ({}): ops per element within {rtol:e} relative + {atol:e} of max; \
         the f32 V-Net's gradients per tensor within {nr:e} of its norm + {na:e} of the \
         norm of all its gradients:",
        v.key
    );
    for op in &v.ops {
        let mark = if op.agrees { "ok" } else { "DISAGREES" };
        println!("  {:<48} {:>9.3}x tolerance  {mark}", op.name, op.worst);
    }
    match v.first_disagreement() {
        None => println!("self-check: passed"),
        Some(op) => println!("self-check: FAILED, first disagreement: {}", op.name),
    }
    Ok(())
}

/// The model card of a weights file, or what to do without one.
fn describe_model(path: &Path) -> anyhow::Result<()> {
    println!("file: {}", path.display());
    match dnvs_engine::nn::model::read_card(path)? {
        Some(card) => println!("{}", card.describe()),
        None => println!(
            "no model card (weights converted from PyTorch?): segment needs --arch and --normalize"
        ),
    }
    Ok(())
}

/// Shape, spacing, datatype, codes, affine, orientation, value range and non-finite voxels of a
/// volume file. A NIfTI file is streamed (header, then one pass of statistics), so memory stays
/// a few blocks whatever the file's size.
fn describe(path: &Path) -> anyhow::Result<()> {
    let (geometry, source, stats) = if path.is_dir() {
        let vol = io::read_dicom_series(path, None)?;
        let stats = ValueStats::of(&vol);
        let geometry = (vol.dims, vol.spacing, vol.affine);
        (geometry, "DICOM series (values after rescale)".to_string(), stats)
    } else {
        let mut reader = nifti::NiftiReader::open(path)?;
        let mut stats = ValueStats::default();
        reader.for_each_block(|_, block| stats.add(block))?;
        let geometry = (reader.dims, reader.spacing, reader.affine);
        (geometry, nifti_kind(&reader.info), stats)
    };
    let ([d, h, w], spacing, affine) = geometry;
    println!("file: {}", path.display());
    println!("format: {source}");
    println!("shape: {d} x {h} x {w} ({} voxels)", d * h * w);
    println!("spacing: {:.6} x {:.6} x {:.6} mm", spacing[0], spacing[1], spacing[2]);
    println!("orientation: {}", orientation::axis_codes(&affine));
    println!("affine (voxel -> RAS mm):");
    for row in &affine {
        // `+ 0.0` turns -0.0 (from negating zero terms) into 0.0 for printing.
        let r = row.map(|v| v + 0.0);
        println!("  [{:>12.6} {:>12.6} {:>12.6} {:>12.6}]", r[0], r[1], r[2], r[3]);
    }
    match stats.range {
        Some((lo, hi)) => println!("values: {lo} .. {hi}"),
        None => println!("values: none finite"),
    }
    println!(
        "non-finite voxels: {} ({} NaN, {} infinite)",
        stats.nan + stats.infinite,
        stats.nan,
        stats.infinite
    );
    Ok(())
}

/// The datatype, scaling and codes line of a NIfTI header.
fn nifti_kind(h: &nifti::NiftiInfo) -> String {
    let scaled = if h.scl_slope != 0.0
        && h.scl_slope.is_finite()
        && (h.scl_slope != 1.0 || h.scl_inter != 0.0)
    {
        format!(", scl_slope {} scl_inter {}", h.scl_slope, h.scl_inter)
    } else {
        String::new()
    };
    let from = if h.sform_code > 0 {
        "sform"
    } else if h.qform_code > 0 {
        "qform"
    } else {
        "pixdim"
    };
    format!(
        "NIfTI-1, {}{scaled}, qform_code {} sform_code {} (affine from {from}), xyzt_units {}",
        h.datatype.name(),
        h.qform_code,
        h.sform_code,
        h.xyzt_units
    )
}
