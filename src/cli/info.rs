//! `dnvs-engine info`: the engine and this machine (version, threads, CUDA); with a FILE, the
//! file's geometry.

use std::path::{Path, PathBuf};

use anyhow::Context;
use dnvs_engine::io::{self, nifti, orientation};
use dnvs_engine::tensor::cuda_driver_present;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dnvs-engine info\n  dnvs-engine info ct.nii.gz\n  dnvs-engine info dicom/CT_series/"
)]
pub struct Args {
    /// A NIfTI file or DICOM folder to describe.
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
    println!("self-check of cuda:0 ({}), tolerance {rtol:e} relative + {atol:e} of max:", v.key);
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

/// Shape, spacing, datatype, codes, affine, orientation and value range of a volume file.
fn describe(path: &Path) -> anyhow::Result<()> {
    let (vol, source) = if path.is_dir() {
        let vol = io::read_dicom_series(path, None)?;
        (vol, "DICOM series (values after rescale)".to_string())
    } else {
        let (vol, h) = nifti::read_nifti_with_info(path)?;
        let scaled = if h.scl_slope != 0.0
            && h.scl_slope.is_finite()
            && (h.scl_slope != 1.0 || h.scl_inter != 0.0)
        {
            format!(", scl_slope {} scl_inter {}", h.scl_slope, h.scl_inter)
        } else {
            String::new()
        };
        let kind = format!(
            "NIfTI-1, {}{scaled}, qform_code {} sform_code {} (affine from {}), xyzt_units {}",
            h.datatype.name(),
            h.qform_code,
            h.sform_code,
            if h.sform_code > 0 {
                "sform"
            } else if h.qform_code > 0 {
                "qform"
            } else {
                "pixdim"
            },
            h.xyzt_units
        );
        (vol, kind)
    };
    let [d, h, w] = vol.dims;
    println!("file: {}", path.display());
    println!("format: {source}");
    println!("shape: {d} x {h} x {w} ({} voxels)", vol.len());
    println!("spacing: {:.6} x {:.6} x {:.6} mm", vol.spacing[0], vol.spacing[1], vol.spacing[2]);
    println!("orientation: {}", orientation::axis_codes(&vol.affine));
    println!("affine (voxel -> RAS mm):");
    for row in &vol.affine {
        // `+ 0.0` turns -0.0 (from negating zero terms) into 0.0 for printing.
        let r = row.map(|v| v + 0.0);
        println!("  [{:>12.6} {:>12.6} {:>12.6} {:>12.6}]", r[0], r[1], r[2], r[3]);
    }
    match vol.value_range() {
        Some((lo, hi)) => println!("values: {lo} .. {hi}"),
        None => println!("values: none finite"),
    }
    Ok(())
}
