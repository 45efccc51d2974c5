//! `dnvs-engine metrics`: overlap and surface distances between a prediction and a ground truth.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use dnvs_engine::geometry::segmentation_metrics;
use dnvs_engine::io::{check_aligned, mask_values, read_volume, MaskValues, Volume};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  dnvs-engine metrics --pred pred.nii.gz --gt gt.nii.gz\n  \
    dnvs-engine metrics --pred seg.nii.gz --gt label.nii.gz --label 2 --json tb.json\n\n\
    Keys: dice, iou, hd_mm, hd95_mm, assd_mm (surface voxels, mm, anisotropic spacing) and \
    hd_original_vox (the original project's Hausdorff over all foreground voxels, voxel units). \
    Both masks empty: dice = iou = 1, distances 0. One empty: dice = iou = 0, mm distances \
    infinite (null in JSON), hd_original_vox 0. A --label that neither mask holds is an error.")]
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

/// Refuses a `--label` that neither mask holds (an empty-vs-empty comparison would score a
/// perfect Dice) and, without `--label`, warns when a mask is not 0/1, saying how it is read.
fn check_labels(pred: (&Path, &Volume), gt: (&Path, &Volume), label: Option<u32>) -> Result<()> {
    let (pv, gv) = (mask_values(&pred.1.data), mask_values(&gt.1.data));
    let Some(l) = label else {
        for (path, m) in [(pred.0, &pv), (gt.0, &gv)] {
            if !m.is_binary() {
                let what = m.problems().unwrap_or_else(|| format!("labels {:?}", m.labels));
                eprintln!(
                    "warning: {}: not a 0/1 mask ({what}); every voxel > 0.5 counts as \
                     foreground (pick one label with --label N)",
                    path.display()
                );
            }
        }
        return Ok(());
    };
    let max = pv.labels.iter().chain(&gv.labels).max().copied().unwrap_or(0);
    if l > max as u32 {
        bail!(
            "--label {l} is outside the masks' values (largest label {max}: {} holds {:?}, {} \
             holds {:?})",
            pred.0.display(),
            pv.labels,
            gt.0.display(),
            gv.labels
        );
    }
    let present = |m: &MaskValues| u8::try_from(l).is_ok_and(|l| m.labels.contains(&l));
    if !present(&pv) && !present(&gv) {
        bail!(
            "--label {l} is absent from both masks ({} holds {:?}, {} holds {:?}); there is \
             nothing to score",
            pred.0.display(),
            pv.labels,
            gt.0.display(),
            gv.labels
        );
    }
    Ok(())
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
    check_labels((&args.pred, &pred), (&args.gt, &gt), args.label)?;
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
