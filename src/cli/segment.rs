//! `dnvs-engine segment`: a trained network on a CT volume, sliding window, mask (and optionally
//! the foreground probability map) written in the CT's geometry.

use std::path::PathBuf;

use anyhow::{bail, Context};

use dnvs_engine::io::{self, VoxelKind};
use dnvs_engine::nn::gpu_check::{self, DeviceChoice};
use dnvs_engine::nn::{self, segment, Arch};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  dnvs-engine segment --model vnet.safetensors --arch vnet --input voi.nii.gz --output mask.nii.gz
  dnvs-engine segment --model unet.safetensors --arch unet-att --width 32 --input ct.nii.gz \\
      --output mask.nii.gz --probs probs.nii.gz --window 128,128,64 --overlap 0.5 --device cuda

The input is fed to the network as stored unless --normalize says otherwise: use what the network
was trained with (the trainer's Normalize maps [min, max] to [-1, 1]: --normalize minmax --range
LO,HI with the training data's range). --model takes a weights file or a training fold folder
(its best.safetensors). Weights are safetensors with the original PyTorch names (see README).")]
pub struct Args {
    /// Network weights (.safetensors, PyTorch parameter names), or a folder holding
    /// best.safetensors.
    #[arg(long)]
    model: PathBuf,
    /// Architecture: vnet, vnet-att, unet or unet-att.
    #[arg(long)]
    arch: Arch,
    /// Width of the first level (V-Net channels, U-Net f_maps); read from the weights if omitted.
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
    /// Window size D,H,W in voxels (rounded up to the network's multiple: 16 V-Net, 8 U-Net).
    #[arg(long, value_parser = super::parse_dhw, default_value = "128,128,64")]
    window: [usize; 3],
    /// Overlap between neighbouring windows, as a fraction of the window, in [0, 1).
    #[arg(long, default_value_t = 0.5)]
    overlap: f32,
    /// Blending of overlapping windows: gaussian, linear or constant.
    #[arg(long, default_value = "gaussian")]
    blend: segment::Blend,
    /// Intensity normalisation: none, minmax (to [-1, 1]) or zscore.
    #[arg(long, value_enum, default_value_t = Normalize::None)]
    normalize: Normalize,
    /// With --normalize minmax: the LO,HI mapped to -1 and 1 (default: the volume's own range).
    #[arg(long, value_parser = parse_range, allow_hyphen_values = true)]
    range: Option<[f32; 2]>,
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
    let v: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>().map_err(|e| format!("'{p}': {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        &[lo, hi] if hi > lo => Ok([lo, hi]),
        _ => Err(format!("expected LO,HI with LO < HI, got '{s}'")),
    }
}

/// Applies the training pipeline's normalisation: min-max to [-1, 1] (pytorch-3dunet's
/// `Normalize`, not clipped) or z-score.
fn normalize(data: &mut [f32], how: Normalize, range: Option<[f32; 2]>) {
    match how {
        Normalize::None => {}
        Normalize::Minmax => {
            let [lo, hi] = range.unwrap_or_else(|| {
                data.iter()
                    .fold([f32::INFINITY, f32::NEG_INFINITY], |[l, h], &v| [l.min(v), h.max(v)])
            });
            let scale = if hi > lo { 2.0 / (hi - lo) } else { 0.0 };
            data.iter_mut().for_each(|v| *v = (*v - lo) * scale - 1.0);
        }
        Normalize::Zscore => {
            let z = io::normalize::z_score(data);
            data.copy_from_slice(&z);
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&args.overlap) {
        bail!("--overlap must be in [0, 1), got {}", args.overlap);
    }
    let model = if args.model.is_dir() {
        let best = args.model.join("best.safetensors");
        if !best.is_file() {
            bail!("{} is a folder without best.safetensors", args.model.display());
        }
        best
    } else {
        args.model.clone()
    };
    let width = match args.width {
        Some(w) => w,
        None => nn::checkpoint_width(args.arch, &model)?,
    };
    let mut net = nn::build(args.arch, width)?;
    net.load_safetensors(&model)
        .with_context(|| format!("loading {} as {} width {width}", model.display(), args.arch))?;
    let device = gpu_check::resolve(args.device, net.precision())?;
    net.to_device(device)?;
    let mut vol = if args.input.is_dir() {
        io::read_dicom_series(&args.input, None)?
    } else {
        io::read_nifti(&args.input)?
    };
    normalize(&mut vol.data, args.normalize, args.range);
    let opt = segment::Options { window: args.window, overlap: args.overlap, blend: args.blend };
    let start = std::time::Instant::now();
    let probs = segment::sliding_window_with(net.as_mut(), &vol, &opt)?;
    let mask = segment::mask_from_probs(&probs);
    let voxels = mask.data.iter().filter(|&&v| v > 0.0).count();
    io::write_nifti(&args.output, &mask, VoxelKind::Mask)?;
    if let Some(p) = &args.probs {
        io::write_nifti(p, &probs, VoxelKind::Probability)?;
    }
    eprintln!(
        "segment: {} {:?} on {device} in {:.1} s, {voxels} foreground voxels -> {}",
        args.arch,
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
    fn minmax_maps_range_to_unit_interval() {
        let mut v = vec![-1000.0, 500.0, 2000.0];
        normalize(&mut v, Normalize::Minmax, Some([-1000.0, 2000.0]));
        assert_eq!(v, vec![-1.0, 0.0, 1.0]);
        let mut v = vec![2.0, 4.0];
        normalize(&mut v, Normalize::Minmax, None);
        assert_eq!(v, vec![-1.0, 1.0]);
        assert_eq!(super::super::parse_dhw("16,32,8"), Ok([16, 32, 8]));
        assert!(super::super::parse_dhw("16,32").is_err());
        assert!(parse_range("5,1").is_err());
    }
}
