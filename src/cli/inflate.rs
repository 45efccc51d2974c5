//! `dnvs-engine inflate`: the negative volume between a condyle (MC) and temporal bone (TB) mask.

use std::path::PathBuf;

use anyhow::Context;
use dnvs_engine::geometry::{negative_volume, NvParams};
use dnvs_engine::io::weights::write_atomic;
use dnvs_engine::io::{check_aligned, mesh::write_mesh, read_volume, write_nifti, VoxelKind};
use dnvs_engine::Device;

/// The definition in two sentences (README says the same).
const ABOUT: &str = "Negative volume (NV) of one joint: the condylar head (the MC surface within \
    --head-depth-mm of MC's highest point, facing up) is inflated along its outward normals until \
    the temporal bone stops it, at most --max-mm. NV is the swept space between the two bones \
    (mm^3); the anterior, superior and posterior joint spaces are the stopping distances along \
    45 deg anterior-superior, superior and 45 deg posterior-superior.";

#[derive(clap::Args)]
#[command(
    about = ABOUT,
    long_about = ABOUT,
    after_help = "Examples:\n  dnvs-engine inflate --mc mc.nii.gz --tb tb.nii.gz --out nv/\n  \
    dnvs-engine inflate --mc mc.nii.gz --tb tb.nii.gz --out nv/ --head-depth-mm 5\n\n\
    MC cavities (marrow) are filled first; superior is world +z through the affine, so oblique \
    and LPS volumes work.\nWrites DIR/nv.nii.gz (mask in MC's geometry), DIR/nv.stl and \
    DIR/nv.json (volume_mm3, joint_space_mm {anterior, superior, posterior, min, mean, median}, \
    head_depth_mm, min_up, max_mm, hits)."
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
    /// Depth of the condylar head (mm): only MC surface within it of MC's highest point inflates;
    /// the neck and ramus below are not joint.
    #[arg(long, default_value_t = NvParams::default().head_depth_mm)]
    head_depth_mm: f64,
    /// Inflated surface must face up: its normal's superior component must exceed this (-1..1).
    #[arg(long, default_value_t = NvParams::default().min_up, allow_hyphen_values = true)]
    min_up: f64,
    /// Longest inflation along a normal (mm); head points that meet no TB within it add nothing.
    #[arg(long, default_value_t = NvParams::default().max_mm)]
    max_mm: f64,
    /// cpu, cuda or cuda:N; default: the GPU when one is usable, else the CPU.
    #[arg(long)]
    device: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mc = read_volume(&args.mc).with_context(|| format!("cannot read {}", args.mc.display()))?;
    let tb = read_volume(&args.tb).with_context(|| format!("cannot read {}", args.tb.display()))?;
    check_aligned(&mc, &tb, "MC and TB masks")?;
    let params =
        NvParams { head_depth_mm: args.head_depth_mm, min_up: args.min_up, max_mm: args.max_mm };
    let device = match &args.device {
        Some(d) => d.parse::<Device>()?,
        None => Device::auto(),
    };
    let res = negative_volume(&mc, &tb, &params, device).with_context(|| {
        format!("inflation of {} against {} on {device}", args.mc.display(), args.tb.display())
    })?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    write_nifti(&args.out.join("nv.nii.gz"), &res.nv, VoxelKind::Mask)?;
    write_mesh(&args.out.join("nv.stl"), &res.mesh)?;
    let voxels = res.nv.data.iter().filter(|&&v| v > 0.5).count();
    let json = serde_json::json!({
        "volume_mm3": res.volume_mm3,
        "joint_space_mm": res.joint_space_mm,
        "head_depth_mm": params.head_depth_mm,
        "min_up": params.min_up,
        "max_mm": params.max_mm,
        "hits": res.stats,
        "voxels": voxels,
        "spacing": mc.spacing,
        "mesh_triangles": res.mesh.triangles.len(),
    });
    let path = args.out.join("nv.json");
    write_atomic(&path, (serde_json::to_string_pretty(&json)? + "\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let js = res.joint_space_mm;
    let mm = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
    println!(
        "NV {:.2} mm^3 ({voxels} voxels); joint space anterior {} superior {} posterior {} mm; \
         {} of {} head points hit TB within {} mm -> {}",
        res.volume_mm3,
        mm(js.anterior),
        mm(js.superior),
        mm(js.posterior),
        res.stats.hits,
        res.stats.head_points,
        params.max_mm,
        args.out.display()
    );
    Ok(())
}
