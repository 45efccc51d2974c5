//! `dnvs-engine metrics`: overlap and surface distances between a prediction and a ground truth.

use std::path::PathBuf;

use anyhow::Context;
use dnvs_engine::geometry::segmentation_metrics;
use dnvs_engine::io::{check_aligned, read_volume, Volume};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  dnvs-engine metrics --pred pred.nii.gz --gt gt.nii.gz\n  \
    dnvs-engine metrics --pred seg.nii.gz --gt label.nii.gz --label 2 --json tb.json\n\n\
    Keys: dice, iou, hd_mm, hd95_mm, assd_mm (surface voxels, mm, anisotropic spacing) and \
    hd_original_vox (the original project's Hausdorff over all foreground voxels, voxel units). \
    Both masks empty: dice = iou = 1, distances 0. One empty: dice = iou = 0, mm distances \
    infinite (null in JSON), hd_original_vox 0.")]
pub struct Args {
    /// Predicted mask (NIfTI or DICOM folder).
    #[arg(long)]
    pred: PathBuf,
    /// Ground-truth mask on the same voxel grid.
    #[arg(long)]
    gt: PathBuf,
    /// Compare only this label value (e.g. 1 = MC, 2 = TB); default: any value > 0.5.
    #[arg(long)]
    label: Option<u32>,
    /// Also write the metrics as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn mask(vol: &Volume, label: Option<u32>) -> Vec<bool> {
    match label {
        Some(l) => vol.data.iter().map(|&v| v.round() == l as f32).collect(),
        None => vol.data.iter().map(|&v| v > 0.5).collect(),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let pred =
        read_volume(&args.pred).with_context(|| format!("cannot read {}", args.pred.display()))?;
    let gt = read_volume(&args.gt).with_context(|| format!("cannot read {}", args.gt.display()))?;
    check_aligned(&gt, &pred, "prediction and ground truth")?;
    let m = segmentation_metrics(
        &mask(&pred, args.label),
        &mask(&gt, args.label),
        gt.dims,
        gt.spacing,
    )?;
    let text = serde_json::to_string_pretty(&m)?;
    println!("{text}");
    if let Some(path) = args.json {
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
