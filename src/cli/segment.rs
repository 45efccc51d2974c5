//! `dnvs-engine segment`: a trained network on a CT volume, sliding window, mask (and optionally
//! the foreground probability map) written in the CT's geometry. A model with a card needs no
//! flags: the card says the architecture, width, normalisation, spacing and window.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use dnvs_engine::io::normalize::Normalization;
use dnvs_engine::io::{self, VoxelKind};
use dnvs_engine::nn::gpu_check::{self, DeviceChoice};
use dnvs_engine::nn::model::{self, LoadedModel, ModelOverrides};
use dnvs_engine::nn::{segment, Arch};
use dnvs_engine::tensor::Precision;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  dnvs-engine segment --model runs/default/fold1 --input voi.nii.gz --output mask.nii.gz
  dnvs-engine segment --model unet.safetensors --arch unet-att --width 32 --normalize minmax \\
      --range -1024,3071 --input ct.nii.gz --output mask.nii.gz --probs probs.nii.gz \\
      --window 128,128,64 --overlap 0.5 --device cuda

--model takes a weights file or a training fold folder (its best.safetensors). Models trained by
`dnvs-engine train` carry a model card (see `dnvs-engine info MODEL`): the architecture, width,
normalisation, voxel spacing and window come from it, and the flags below only override it (with
a warning when they contradict it). An input whose spacing differs from the card's by more than
1 % is resampled to it (linear) and the probabilities brought back to the input's grid; along an
axis where the card's grid is at least 1.5x coarser a second lattice, shifted by half a card
voxel, is segmented too (up to 8 passes), so every input voxel gets a network decision. Weights
converted from PyTorch have no card: then --arch and --normalize are required.")]
pub struct Args {
    /// Network weights (.safetensors), or a folder holding best.safetensors.
    #[arg(long)]
    model: PathBuf,
    /// Architecture: vnet, vnet-att, unet or unet-att (required without a model card).
    #[arg(long)]
    arch: Option<Arch>,
    /// Width of the first level (V-Net channels, U-Net f_maps); from the card or the weights.
    #[arg(long)]
    width: Option<usize>,
    /// Input volume: .nii / .nii.gz file or DICOM series folder.
    #[arg(long)]
    input: PathBuf,
    /// Output mask (uint8 labels 0/1, argmax of the two classes).
    #[arg(long)]
    output: PathBuf,
    /// Also write the foreground probability (float32).
    #[arg(long)]
    probs: Option<PathBuf>,
    /// Window size D,H,W in voxels (default: the card's, else 128,128,64). Rounded up to the
    /// network's multiple (16 V-Net, 8 U-Net). The minimum is 8 per axis for U-Nets; 16 per
    /// axis and 32 along one axis for V-Nets (their BatchNorm needs two voxels after four
    /// halvings: 16,16,16 is refused). Smaller inputs are padded.
    #[arg(long, value_parser = super::parse_dhw)]
    window: Option<[usize; 3]>,
    /// Overlap between neighbouring windows, as a fraction of the window, in [0, 1).
    #[arg(long, default_value_t = 0.5)]
    overlap: f32,
    /// Blending of overlapping windows: gaussian, linear or constant.
    #[arg(long, default_value = "gaussian")]
    blend: segment::Blend,
    /// Intensity normalisation (default: the card's; required without one): none, minmax (to
    /// [-1, 1], with --range) or zscore.
    #[arg(long, value_enum)]
    normalize: Option<Normalize>,
    /// With --normalize minmax: the LO,HI mapped to -1 and 1 (default: the volume's own range).
    #[arg(long, value_parser = parse_range, allow_hyphen_values = true)]
    range: Option<[f32; 2]>,
    /// Replace NaN/infinite voxels by this value (HU) instead of refusing the input.
    #[arg(long, value_name = "HU", allow_hyphen_values = true)]
    nan_to: Option<f32>,
    /// auto, cpu, cuda or cuda:N (auto: a GPU that is usable and passes its self-check, else
    /// the CPU).
    #[arg(long, value_parser = super::parse_device, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Normalize {
    None,
    Minmax,
    Zscore,
}

fn parse_range(s: &str) -> Result<[f32; 2], String> {
    let v: Vec<f32> = super::parse_numbers(s)?;
    match v.as_slice() {
        &[lo, hi] if hi > lo => Ok([lo, hi]),
        _ => Err(format!("expected LO,HI with LO < HI, got '{s}'")),
    }
}

/// The normalisation the flags ask for (`None` when they ask for none: the card decides).
/// Min-max without --range takes the input's own range, as older versions did.
fn normalization_of(
    how: Option<Normalize>,
    range: Option<[f32; 2]>,
    vol: &io::Volume,
) -> Option<Normalization> {
    Some(match how? {
        Normalize::None => Normalization::None,
        Normalize::Zscore => Normalization::Zscore,
        Normalize::Minmax => match range {
            Some([min, max]) => Normalization::Minmax { min, max },
            None => {
                let (min, max) = vol.value_range().unwrap_or((0.0, 1.0));
                Normalization::Minmax { min, max }
            }
        },
    })
}

/// Refuses an output whose folder is missing or not writable, before any work is done.
fn check_writable(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!("cannot write {}: folder {} does not exist", path.display(), dir.display());
    }
    let probe = dir.join(format!(".dnvs-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| {
        format!("cannot write {}: folder {} is not writable", path.display(), dir.display())
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&args.overlap) {
        bail!("--overlap must be in [0, 1), got {}", args.overlap);
    }
    if args.nan_to.is_some_and(|v| !v.is_finite()) {
        bail!("--nan-to must be a finite value");
    }
    for out in std::iter::once(&args.output).chain(&args.probs) {
        check_writable(out)?;
    }
    let mut vol = io::read_volume(&args.input)?;
    let bad = match args.nan_to {
        Some(v) => {
            let n = io::replace_non_finite(&mut vol, v);
            if n > 0 {
                eprintln!(
                    "segment: {n} NaN/infinite voxels of {} set to {v}",
                    args.input.display()
                );
            }
            0
        }
        None => io::count_non_finite(&vol),
    };
    if bad > 0 {
        bail!(
            "{}: {bad} of {} voxels are NaN or infinite; fix the input or give --nan-to HU",
            args.input.display(),
            vol.len()
        );
    }
    let overrides = ModelOverrides {
        arch: args.arch,
        width: args.width,
        normalization: normalization_of(args.normalize, args.range, &vol),
        window: args.window,
        overlap: Some(args.overlap),
        blend: Some(args.blend),
        spacing_mm: None,
    };
    let device = gpu_check::resolve(args.device, Precision::default())?;
    let mut model = LoadedModel::open(&args.model, &overrides, device)
        .with_context(|| format!("loading the model {}", args.model.display()))?;
    for w in model.warnings() {
        eprintln!("segment: warning: {w}");
    }
    let start = std::time::Instant::now();
    let pred = model.predict(&vol)?;
    let voxels = pred.labels.data.iter().filter(|&&v| v > 0.0).count();
    // Every output is checked above and written only now, each atomically.
    if let Some(p) = &args.probs {
        io::write_nifti(p, &pred.probs[1], VoxelKind::Probability)?;
    }
    io::write_nifti(&args.output, &pred.labels, VoxelKind::Mask)?;
    let card = model.card();
    let resampled = if model::needs_resampling(vol.spacing, card.spacing_mm) {
        format!(", resampled {:?} -> {:?} mm and back", vol.spacing, card.spacing_mm)
    } else {
        String::new()
    };
    eprintln!(
        "segment: {} width {} ({}) {:?} on {device} in {:.1} s{resampled}, {voxels} foreground voxels -> {}",
        card.arch,
        card.width,
        if model.has_card() { "model card" } else { "no card: flags" },
        vol.dims,
        start.elapsed().as_secs_f64(),
        args.output.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_into_normalisations() {
        let vol = io::Volume::zeros([1, 1, 2], [1.0; 3]);
        assert_eq!(
            normalization_of(Some(Normalize::Minmax), Some([-1000.0, 2000.0]), &vol),
            Some(Normalization::Minmax { min: -1000.0, max: 2000.0 })
        );
        assert_eq!(normalization_of(None, None, &vol), None);
        assert!(parse_range("5,1").is_err());
    }
}
