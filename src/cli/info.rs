//! `dnvs-engine info`: the engine and this machine (version, threads, CUDA); with a FILE, the
//! file's geometry.

use std::path::{Path, PathBuf};

use anyhow::Context;
use dnvs_engine::io::{self, nifti, orientation};
use dnvs_engine::tensor::cuda_driver_present;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dnvs-engine info\n  dnvs-engine info ct.nii.gz\n  dnvs-engine info dicom/CT_series/\n  dnvs-engine info runs/default/fold1/best.safetensors   (prints the model card)"
)]
pub struct Args {
    /// A NIfTI file or DICOM folder to describe, or a .safetensors model (its card).
    file: Option<PathBuf>,
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
