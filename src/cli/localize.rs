//! `dnvs-engine localize`: finds both temporomandibular joints in a head CT and writes a VOI per
//! found side, resampled exactly as `synth` samples its VOIs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use dnvs_engine::io::{self, VoxelKind};
use dnvs_engine::nn::gpu_check::{self, DeviceChoice};
use dnvs_engine::pipeline::localize::{self, LocalizeOptions, SideJson};
use dnvs_engine::synth::Side;
use dnvs_engine::tensor::Precision;

#[derive(clap::Args)]
#[command(after_help = "Writes DIR/joints.json ({\"L\": {\"condyle_center_ras_mm\": [x, y, z], \
\"voi\": {\"shape\", \"spacing_mm\", \"affine\"}, \"score\": p}, \"R\": ...}; a side not found \
has a \"reason\" instead) and DIR/voi_L_ct.nii.gz, DIR/voi_R_ct.nii.gz per found side.

Examples:
  dnvs-engine localize --input head.nii.gz --out loc/ --preview   # the default models (cache)
  dnvs-engine localize --input head.nii.gz --out loc/ --model models/localize_unet8.safetensors \
      --fine-model models/localize_fine_unet8.safetensors --preview
  dnvs-engine localize --input dicom/series --out loc/ --model runs/localize/fold1 --device cpu")]
pub struct Args {
    /// Head CT: .nii / .nii.gz file or DICOM series folder, any orientation.
    #[arg(long)]
    input: PathBuf,
    /// Output folder (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Localisation network weights (.safetensors with a model card of target `joints`), or a
    /// training fold folder holding best.safetensors (configs/localize.json). Card-less weights
    /// are taken as a U-Net on the 4 mm grid with the HU window [-1000, 2000]. Default: the
    /// default models in the cache (`dnvs-engine models`; installed from models/ when missing,
    /// run from the repository), the fine one included.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The fine localisation network (target `joints_fine`, e.g. the shipped
    /// models/localize_fine_unet8.safetensors): each centre is refined on a 64 mm box of 2 mm
    /// voxels around it, which makes it independent of the scan's orientation and field of view
    /// to well under a millimetre. Default: the cache's with the default --model; with an
    /// explicit --model and no --fine-model the coarse centres stand.
    #[arg(long, value_name = "MODEL")]
    fine_model: Option<PathBuf>,
    /// auto, cpu, cuda or cuda:N (auto: a GPU that is usable and passes its self-check, else
    /// the CPU).
    #[arg(long, value_parser = super::parse_device, default_value = "auto")]
    device: DeviceChoice,
    /// VOI size in voxels D,H,W (x, y, z) at 0.4 mm (synth's --voi-size).
    #[arg(long, value_name = "D,H,W", value_parser = super::parse_dhw, default_value = "120,150,70")]
    voi_size: [usize; 3],
    /// Also write axial, coronal and sagittal PNGs through each found joint with its box.
    #[arg(long)]
    preview: bool,
    /// Run the network once, on the canvas only, instead of nine times (the canvas and eight
    /// views of it tilted by 7 degrees and shifted by half a voxel, whose refined centres are
    /// averaged): faster, and the centre then depends more on the scan's orientation and on
    /// how the 4 mm grid samples the head.
    #[arg(long)]
    single_pass: bool,
    /// Also write the network's condylar-head probability on the coarse grid
    /// (DIR/joint_probability.nii.gz) and the coarse head it saw (DIR/coarse_head_ct.nii.gz),
    /// to see whether the network or the choice among its candidates went wrong.
    #[arg(long)]
    probs: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = gpu_check::resolve(args.device, Precision::default())?;
    let (coarse_path, fine_path) = model_paths(&args)?;
    let mut model = localize::open_model(&coarse_path, device)
        .with_context(|| format!("opening the localisation model {}", coarse_path.display()))?;
    for w in model.warnings() {
        eprintln!("localize: warning: {w}");
    }
    let mut fine = match &fine_path {
        Some(p) => Some(
            localize::open_fine_model(p, device)
                .with_context(|| format!("opening the fine localisation model {}", p.display()))?,
        ),
        None => {
            eprintln!("localize: no --fine-model: the centres are the coarse network's");
            None
        }
    };
    let start = Instant::now();
    let ct = io::read_volume(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let read_s = start.elapsed().as_secs_f64();
    if let Some(w) = io::normalize::not_hounsfield(&ct.data) {
        eprintln!("warning: {}: {w}", args.input.display());
    }
    let opts = LocalizeOptions {
        voi_dims: args.voi_size,
        views: !args.single_pass,
        ..LocalizeOptions::default()
    };
    let fine = fine.as_mut().map(|m| m as &mut dyn localize::JointNet);
    let found = localize::localize_with_maps(&ct, &mut model, fine, &opts)?;
    let joints = &found.joints;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    if args.probs {
        let (prob, coarse) = (&found.probability, &found.coarse_hu);
        io::write_nifti(&args.out.join("joint_probability.nii.gz"), prob, VoxelKind::Probability)?;
        io::write_nifti(&args.out.join("coarse_head_ct.nii.gz"), coarse, VoxelKind::Image)?;
    }
    let mut json = serde_json::Map::new();
    for side in Side::BOTH {
        let result = joints.side(side);
        let entry = SideJson::from(result);
        json.insert(side.name().into(), serde_json::to_value(&entry)?);
        match result.found() {
            Some(j) => {
                let path = args.out.join(format!("voi_{side}_ct.nii.gz"));
                io::write_nifti(&path, &j.voi, VoxelKind::Image)?;
                let c = j.condyle_center_ras_mm;
                eprintln!(
                    "localize: {side} condyle at ({:.1}, {:.1}, {:.1}) mm, score {:.2} -> {}",
                    c[0],
                    c[1],
                    c[2],
                    j.score,
                    path.display()
                );
            }
            None => {
                let stale = args.out.join(format!("voi_{side}_ct.nii.gz"));
                let _ = std::fs::remove_file(&stale);
                if let localize::SideResult::Missing { reason } = result {
                    eprintln!("localize: {side} missing: {reason}");
                }
            }
        }
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(json))? + "\n";
    let json_path = args.out.join("joints.json");
    let tmp = args.out.join("joints.json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &json_path)
        .with_context(|| format!("writing {}", json_path.display()))?;
    if args.preview {
        for p in localize::write_preview(&args.out, &ct, joints)? {
            eprintln!("localize: preview {}", p.display());
        }
    }
    eprintln!(
        "localize: {:?} CT on {device}: read {read_s:.1} s, total {:.1} s -> {}",
        ct.dims,
        start.elapsed().as_secs_f64(),
        json_path.display()
    );
    Ok(())
}

/// The coarse and fine model files: as given, else the default models of the cache (installed
/// from the repository's models/ first when missing).
fn model_paths(args: &Args) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    match &args.model {
        Some(m) => Ok((m.clone(), args.fine_model.clone())),
        None => {
            let dir = super::models::ensure_defaults(
                Path::new("configs"),
                None,
                None,
                &["localize", "localize_fine"],
            )
            .context(
                "the default localisation models (run from the repository, or give --model)",
            )?;
            let fine = args.fine_model.clone().unwrap_or(dir.join("localize_fine.safetensors"));
            Ok((dir.join("localize.safetensors"), Some(fine)))
        }
    }
}
