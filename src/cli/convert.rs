//! `dnvs-engine convert`: a DICOM series folder or a NIfTI file to NIfTI (`.nii` / `.nii.gz`),
//! keeping the geometry. The output appears complete or not at all.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use dnvs_engine::io::{self, mask_values, Volume, VoxelKind};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  dnvs-engine convert dicom/CT_series/ ct.nii.gz
  dnvs-engine convert dicom/mixed/ ct.nii.gz --series 1.2.840.113619.2.55.3.1234
  dnvs-engine convert labels.nii labels.nii.gz --mask")]
pub struct Args {
    /// A DICOM series folder or a NIfTI file.
    input: PathBuf,
    /// The NIfTI file to write (`.nii` or `.nii.gz`).
    output: PathBuf,
    /// SeriesInstanceUID to read when the folder holds several series.
    #[arg(long)]
    series: Option<String>,
    /// Write the volume as a uint8 label mask (values must be integers 0..=255).
    #[arg(long)]
    mask: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let name = args.output.to_string_lossy().to_ascii_lowercase();
    if !(name.ends_with(".nii") || name.ends_with(".nii.gz")) {
        bail!("output {}: the name must end in .nii or .nii.gz", args.output.display());
    }
    let vol = if args.input.is_dir() {
        io::read_dicom_series(&args.input, args.series.as_deref())
    } else {
        if args.series.is_some() {
            bail!("--series applies to a DICOM folder, and {} is a file", args.input.display());
        }
        io::read_nifti(&args.input)
    }
    .with_context(|| format!("cannot read {}", args.input.display()))?;
    let kind = if args.mask { VoxelKind::Mask } else { VoxelKind::Image };
    if args.mask {
        check_mask_values(&args.input, &vol)?;
    }
    io::write_nifti(&args.output, &vol, kind)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let [d, h, w] = vol.dims;
    println!(
        "{} -> {}: {d}x{h}x{w}, spacing {:.4}x{:.4}x{:.4} mm, {}",
        args.input.display(),
        args.output.display(),
        vol.spacing[0],
        vol.spacing[1],
        vol.spacing[2],
        io::orientation::axis_codes(&vol.affine)
    );
    Ok(())
}

/// Says what a `--mask` input holds beyond 0/1 and what is done with it: values outside 0..=255
/// are refused (uint8 cannot hold them), fractions are rounded with a warning naming them,
/// other whole labels are kept and listed.
fn check_mask_values(input: &Path, vol: &Volume) -> anyhow::Result<()> {
    let m = mask_values(&vol.data);
    if m.out_of_range > 0 {
        bail!(
            "{}: --mask needs whole labels 0..=255, but {} voxels are outside that range (e.g. \
             {:?}); nothing was written",
            input.display(),
            m.out_of_range,
            m.out_of_range_examples
        );
    }
    if m.fractional > 0 {
        eprintln!(
            "warning: {}: {} mask voxels are not whole numbers (e.g. {:?}); rounded to the \
             nearest label (0.5 and up -> 1)",
            input.display(),
            m.fractional,
            m.fractional_examples
        );
    }
    if m.labels.iter().any(|&l| l > 1) {
        eprintln!(
            "note: {}: not a 0/1 mask; labels {:?} are stored as they are",
            input.display(),
            m.labels
        );
    }
    Ok(())
}
