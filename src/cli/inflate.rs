//! `dnvs-engine inflate`: the negative volume between a condyle (MC) and temporal bone (TB) mask.

use std::path::PathBuf;

use anyhow::Context;
use dnvs_engine::geometry::{self, inflate, InflateConfig};
use dnvs_engine::io::{check_aligned, mesh::write_mesh, read_volume, write_nifti, VoxelKind};
use dnvs_engine::nn::gpu_check::{self, DeviceChoice};
use dnvs_engine::tensor::Precision;
use dnvs_engine::Device;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  dnvs-engine inflate --mc mc.nii.gz --tb tb.nii.gz --out nv/\n  \
    dnvs-engine inflate --mc mc.nii.gz --tb tb.nii.gz --out nv/ --max-mm 6\n\n\
    Writes DIR/nv.nii.gz (mask in MC's geometry), DIR/nv.stl and DIR/nv.json \
    (volume_mm3, voxel count and hit statistics)."
)]
pub struct Args {
    /// Mandibular condyle mask (NIfTI or DICOM folder; foreground > 0.5).
    #[arg(long)]
    mc: PathBuf,
    /// Temporal bone mask on the same voxel grid as MC.
    #[arg(long)]
    tb: PathBuf,
    /// Output folder (created when missing).
    #[arg(long)]
    out: PathBuf,
    /// Longest march along a surface normal, in mm.
    #[arg(long, default_value_t = InflateConfig::default().max_mm)]
    max_mm: f64,
    /// auto, cpu, cuda or cuda:N (auto: a GPU that is usable and passes its self-check, else
    /// the CPU).
    #[arg(long, value_parser = super::parse_device, default_value = "auto")]
    device: DeviceChoice,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mc = read_volume(&args.mc).with_context(|| format!("cannot read {}", args.mc.display()))?;
    let tb = read_volume(&args.tb).with_context(|| format!("cannot read {}", args.tb.display()))?;
    check_aligned(&mc, &tb, "MC and TB masks")?;
    let cfg = InflateConfig { max_mm: args.max_mm };
    let device = gpu_check::resolve(args.device, Precision::F32)?;
    let res = match device {
        Device::Cuda(ordinal) => geometry::gpu::inflate(&mc, &tb, cfg, ordinal),
        Device::Cpu => inflate(&mc, &tb, cfg),
    }
    .with_context(|| format!("inflation on {device}"))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let nv = mc.with_data(res.nv.iter().map(|&b| b as u8 as f32).collect());
    write_nifti(&args.out.join("nv.nii.gz"), &nv, VoxelKind::Mask)?;
    write_mesh(&args.out.join("nv.stl"), &res.mesh)?;
    let voxels = res.nv.iter().filter(|&&b| b).count();
    let json = serde_json::json!({
        "volume_mm3": res.volume_mm3,
        "voxels": voxels,
        "max_mm": args.max_mm,
        "spacing": mc.spacing,
        "hits": res.stats,
        "mesh_triangles": res.mesh.triangles.len(),
    });
    let path = args.out.join("nv.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "NV {:.2} mm^3 ({voxels} voxels); {} of {} surface points hit TB within {} mm -> {}",
        res.volume_mm3,
        res.stats.hits,
        res.stats.surface_points,
        args.max_mm,
        args.out.display()
    );
    Ok(())
}
