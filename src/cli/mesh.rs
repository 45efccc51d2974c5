//! `dnvs-engine mesh`: marching-cubes surface of a mask or probability map, in world millimetres.

use std::path::PathBuf;

use anyhow::Context;
use dnvs_engine::geometry::smooth::{TAUBIN_LAMBDA, TAUBIN_MU};
use dnvs_engine::geometry::{mesh_volume, taubin_smooth};
use dnvs_engine::io::{mesh::write_mesh, read_volume};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  dnvs-engine mesh mc.nii.gz mc.stl\n  \
    dnvs-engine mesh prob.nii.gz tb.ply --level 0.5 --smooth 10\n  \
    dnvs-engine mesh ct.nii.gz bone.obj --level 300")]
pub struct Args {
    /// Input volume: NIfTI file (.nii, .nii.gz) or DICOM series folder.
    input: PathBuf,
    /// Output mesh; the extension picks the format: .stl (binary), .ply (binary), .obj.
    output: PathBuf,
    /// Iso-level: voxels with a value above it are inside (0.5 for masks and probabilities).
    #[arg(long, default_value_t = 0.5)]
    level: f32,
    /// Taubin smoothing iterations (lambda 0.5, mu -0.5025, then a closed mesh is scaled back
    /// to its enclosed volume). 0 = none.
    #[arg(long, default_value_t = 0)]
    smooth: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.level.is_finite() {
        anyhow::bail!("--level must be a finite number, got {}", args.level);
    }
    let vol = read_volume(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let mut mesh = mesh_volume(&vol, args.level).context("marching cubes")?;
    taubin_smooth(&mut mesh, args.smooth, TAUBIN_LAMBDA, TAUBIN_MU);
    write_mesh(&args.output, &mesh)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "{}: {} vertices, {} triangles, area {:.1} mm^2, enclosed volume {:.1} mm^3",
        args.output.display(),
        mesh.vertices.len(),
        mesh.triangles.len(),
        mesh.area(),
        mesh.enclosed_volume()
    );
    Ok(())
}
