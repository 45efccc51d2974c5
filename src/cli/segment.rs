//! `dnvs-engine segment`: a trained network on a CT volume, sliding window, mask (and optionally
//! the foreground probability map) written in the CT's geometry.

use std::path::PathBuf;

use anyhow::{bail, Context};

use dnvs_engine::io::{self, VoxelKind};
use dnvs_engine::nn::{self, segment, Arch};
use dnvs_engine::Device;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  dnvs-engine segment --model vnet.safetensors --arch vnet --input voi.nii.gz --output mask.nii.gz
  dnvs-engine segment --model unet.safetensors --arch unet-att --width 32 --input ct.nii.gz \\
      --output mask.nii.gz --probs probs.nii.gz --window 128,128,64 --overlap 0.5 --device cuda

The input is fed to the network as stored (normalise it the way the network was trained).
Weights are safetensors with the original PyTorch names (see README: converting a .pth).")]
pub struct Args {
    /// Network weights (.safetensors, PyTorch parameter names).
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
    #[arg(long, value_parser = parse_window, default_value = "128,128,64")]
    window: [usize; 3],
    /// Overlap between neighbouring windows, as a fraction of the window, in [0, 1).
    #[arg(long, default_value_t = 0.5)]
    overlap: f32,
    /// Blending of overlapping windows: gaussian, linear or constant.
    #[arg(long, default_value = "gaussian")]
    blend: segment::Blend,
    /// cpu, cuda or cuda:N (default: CUDA when usable, else the CPU).
    #[arg(long)]
    device: Option<Device>,
}

fn parse_window(s: &str) -> Result<[usize; 3], String> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse::<usize>().map_err(|e| format!("'{p}': {e}")))
        .collect::<Result<_, _>>()?;
    match v.as_slice() {
        &[d, h, w] if d > 0 && h > 0 && w > 0 => Ok([d, h, w]),
        _ => Err(format!("expected three positive sizes D,H,W, got '{s}'")),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&args.overlap) {
        bail!("--overlap must be in [0, 1), got {}", args.overlap);
    }
    let width = match args.width {
        Some(w) => w,
        None => nn::checkpoint_width(args.arch, &args.model)?,
    };
    let mut net = nn::build(args.arch, width)?;
    net.load_safetensors(&args.model).with_context(|| {
        format!("loading {} as {} width {width}", args.model.display(), args.arch)
    })?;
    let device = args.device.unwrap_or_else(Device::auto);
    net.to_device(device)?;
    let vol = if args.input.is_dir() {
        io::read_dicom_series(&args.input, None)?
    } else {
        io::read_nifti(&args.input)?
    };
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
