//! `dnvs-engine nv`: the whole pipeline on one CT or a cohort (head CT in, negative volume per
//! joint out).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use dnvs_engine::geometry::NvParams;
use dnvs_engine::nn::gpu_check::{self, DeviceChoice};
use dnvs_engine::nn::model::{LoadedModel, ModelOverrides};
use dnvs_engine::pipeline::cohort::{self, CaseStatus};
use dnvs_engine::pipeline::enhance::EnhanceParams;
use dnvs_engine::pipeline::localize;
use dnvs_engine::pipeline::models;
use dnvs_engine::pipeline::report;
use dnvs_engine::pipeline::stages::{
    FixedCenters, LabelSegmenter, Localizer, ModelLocalizer, ModelSegmenter, NegativeVolume,
    Segmenter, ThresholdSegmenter, VoiSpec,
};
use dnvs_engine::pipeline::{run_case, CaseOptions, Stages};
use dnvs_engine::tensor::Precision;
use dnvs_engine::Device;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  dnvs-engine nv --input head.nii.gz --out result/ --joints 'L=-48,10,-20;R=48,10,-20'
  dnvs-engine nv --input head.nii.gz --out result/ --gt labels.nii.gz --enhance on
  dnvs-engine nv --input cts/ --out cohort/          (a folder of CTs: one subfolder each)
  dnvs-engine nv --input cases.csv --out cohort/    (a CSV with a path column, optional id, gt)

Writes DIR/report.json, DIR/report.png, DIR/labels.nii.gz (0 bg, 1 MC, 2 TB, 3 NV in the CT's
own grid) and DIR/L, DIR/R (VOI CT, masks, mc.stl, tb.stl, nv.stl). A cohort writes one such
folder per case and DIR/cohort.csv; a rerun skips complete cases; the exit status is 1 when any
case failed.")]
pub struct Args {
    /// A CT (.nii, .nii.gz or DICOM series folder), a folder of CTs, or a CSV with a path column.
    #[arg(long)]
    input: PathBuf,
    /// Output folder (replaced only when the run completes).
    #[arg(long)]
    out: PathBuf,
    /// Folder with mc.safetensors and tb.safetensors (default: the default models in the cache);
    /// mc.2.safetensors, tb.2.safetensors, ... there are ensemble members, averaged.
    #[arg(long)]
    models: Option<PathBuf>,
    /// Localisation model (a weights file whose card has target `joints`; default:
    /// localize.safetensors in --models or in the model cache). Ignored with --joints.
    #[arg(long, value_name = "MODEL")]
    localizer: Option<PathBuf>,
    /// Fine localisation model (card target `joints_fine`; default: localize_fine.safetensors in
    /// --models or in the model cache): refines each centre on a 64 mm box of 2 mm voxels. A
    /// --models folder without one leaves the coarse centres (said on stderr).
    #[arg(long, value_name = "MODEL")]
    fine_localizer: Option<PathBuf>,
    /// auto, cpu, cuda or cuda:N (auto: a GPU that is usable and passes its self-check, else
    /// the CPU).
    #[arg(long, value_parser = super::parse_device, default_value = "auto")]
    device: DeviceChoice,
    /// Ground-truth labels in the CT's geometry (1 MC, 2 TB, 3 NV): Dice, IoU, HD, HD95, ASSD.
    #[arg(long)]
    gt: Option<PathBuf>,
    /// TB enhancement (3D Canny edges inside the TB probability, closed, added to the mask).
    /// Off by default: with the default trained models on held-out phantom heads it made TB
    /// thicker and NV smaller (TB Dice 0.943/0.947 on vs 0.954/0.970 off, NV error -21/-16 %
    /// on vs -9/-3 % off; docs/PERF.md).
    #[arg(long, value_enum, default_value_t = OnOff::Off)]
    enhance: OnOff,
    /// Also write the MC and TB probability maps per side.
    #[arg(long)]
    save_probs: bool,
    /// Replace NaN/infinite CT voxels by this value (HU) instead of refusing the CT.
    #[arg(long, value_name = "HU", allow_hyphen_values = true)]
    nan_to: Option<f32>,
    /// Condyle centres in world RAS mm, 'L=x,y,z;R=x,y,z' (either may be left out): skips
    /// automatic localisation.
    #[arg(long, value_parser = parse_joints)]
    joints: Option<Joints>,
    /// How MC and TB are segmented: the trained models, a HU threshold (a crude baseline), or
    /// the --gt labels (NV of a given segmentation; the same file for every case of a cohort).
    #[arg(long, value_enum, default_value_t = SegChoice::Models)]
    segmenter: SegChoice,
    /// With --segmenter threshold: the bone threshold (HU).
    #[arg(long, default_value_t = ThresholdSegmenter::default().bone_hu)]
    threshold_hu: f32,
    /// Longest march along a condyle normal (mm).
    #[arg(long, default_value_t = 10.0)]
    max_mm: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SegChoice {
    Models,
    Threshold,
    /// Read from the --gt labels (1 MC, 2 TB): NV of a manual or reference segmentation.
    Gt,
}

type Joints = [Option<[f64; 3]>; 2];

fn parse_joints(s: &str) -> Result<Joints, String> {
    let mut out: Joints = [None, None];
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (side, xyz) = part.split_once('=').ok_or(format!("'{part}': expected SIDE=x,y,z"))?;
        let idx = match side.trim() {
            "L" | "l" => 0,
            "R" | "r" => 1,
            other => return Err(format!("'{other}' is not L or R")),
        };
        let v: Vec<f64> = super::parse_numbers(xyz)?;
        match v.as_slice() {
            &[x, y, z] if v.iter().all(|c| c.is_finite()) => out[idx] = Some([x, y, z]),
            _ => return Err(format!("'{xyz}': expected three numbers x,y,z")),
        }
    }
    if out.iter().all(Option::is_none) {
        return Err(format!("'{s}': no joint given"));
    }
    Ok(out)
}

fn localizer(args: &Args, device: Device) -> anyhow::Result<Box<dyn Localizer>> {
    if let Some(centers) = args.joints {
        return Ok(Box::new(FixedCenters { centers, voi: VoiSpec::default() }));
    }
    let path = match &args.localizer {
        Some(p) => p.clone(),
        None => models_dir(args, &["localize"])?.join("localize.safetensors"),
    };
    if !path.is_file() {
        bail!(
            "no localisation model at {}: train the defaults with `dnvs-engine models train`, \
             pass --localizer MODEL, or give the condyle centres with --joints \
             'L=x,y,z;R=x,y,z' (world RAS mm)",
            path.display()
        );
    }
    let model = localize::open_model(&path, device)
        .with_context(|| format!("loading the localisation model {}", path.display()))?;
    let fine_path = match &args.fine_localizer {
        Some(p) => p.clone(),
        None => models_dir(args, &["localize_fine"])?.join("localize_fine.safetensors"),
    };
    let fine = if fine_path.is_file() || args.fine_localizer.is_some() {
        Some(localize::open_fine_model(&fine_path, device).with_context(|| {
            format!("loading the fine localisation model {}", fine_path.display())
        })?)
    } else {
        eprintln!(
            "nv: no fine localisation model at {}: the coarse network's centres stand",
            fine_path.display()
        );
        None
    };
    Ok(Box::new(ModelLocalizer { model, fine, opts: localize::LocalizeOptions::default() }))
}

/// `--models`, else the default models' folder in the cache, where the `wanted` default models
/// are installed or trained first when missing (saying so, with an estimate).
fn models_dir(args: &Args, wanted: &[&str]) -> anyhow::Result<PathBuf> {
    match &args.models {
        Some(d) => Ok(d.clone()),
        None => super::models::ensure_defaults(Path::new("configs"), None, None, wanted)
            .context("the default models (keyed by configs/*.json; run from the repository)"),
    }
}

/// The MC and TB models from `--models` or the cache; their cards decide how they are fed.
fn segmenter(args: &Args, device: Device) -> anyhow::Result<Box<dyn Segmenter>> {
    match args.segmenter {
        SegChoice::Threshold => {
            return Ok(Box::new(ThresholdSegmenter { bone_hu: args.threshold_hu }))
        }
        SegChoice::Gt => {
            let Some(gt) = &args.gt else {
                bail!("--segmenter gt reads the --gt labels: give --gt")
            };
            let labels = dnvs_engine::io::read_volume(gt)
                .with_context(|| format!("reading {}", gt.display()))?;
            return Ok(Box::new(LabelSegmenter { labels }));
        }
        SegChoice::Models => {}
    }
    let dir = models_dir(args, &["mc", "tb"])?;
    let load = |path: &Path| -> anyhow::Result<LoadedModel> {
        let m = LoadedModel::open(path, &ModelOverrides::default(), device)
            .with_context(|| format!("loading {}", path.display()))?;
        for w in m.warnings() {
            eprintln!("nv: {}: {w}", path.display());
        }
        Ok(m)
    };
    let members = |name: &str| -> anyhow::Result<Vec<LoadedModel>> {
        let paths = models::member_paths(&dir, name);
        if paths.is_empty() {
            bail!(
                "no {name} model at {}: train the defaults with `dnvs-engine models train`, pass \
                 --models DIR, or use --segmenter threshold|gt",
                dir.join(format!("{name}.safetensors")).display()
            );
        }
        paths.iter().map(|p| load(p)).collect()
    };
    Ok(Box::new(ModelSegmenter { mc: members("mc")?, tb: members("tb")? }))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(args.max_mm.is_finite() && args.max_mm > 0.0) {
        bail!("--max-mm must be > 0, got {}", args.max_mm);
    }
    let device = gpu_check::resolve(args.device, Precision::default())?;
    let localizer = localizer(&args, device)?;
    let mut stages = Stages {
        localizer,
        segmenter: segmenter(&args, device)?,
        nv: Box::new(NegativeVolume {
            params: NvParams { max_mm: args.max_mm, ..Default::default() },
            device,
        }),
    };
    let opts = CaseOptions {
        enhance: (args.enhance == OnOff::On).then(EnhanceParams::default),
        save_probs: args.save_probs,
        gt: args.gt.clone(),
        nan_to: args.nan_to,
    };
    if cohort::is_case_list(&args.input) || cohort::is_case_folder(&args.input) {
        return run_cohort(&args, &mut stages, &opts);
    }
    let bar = stage_bar(opts.gt.is_some(), opts.enhance.is_some());
    let t = std::time::Instant::now();
    let report = run_case(&args.input, &args.out, &mut stages, &opts, &mut |s| {
        bar.set_message(s.to_string());
        bar.inc(1);
    })
    .with_context(|| format!("nv on {}", args.input.display()))?;
    bar.finish_and_clear();
    print!("{}", report::summary(&report, &args.out));
    println!("done in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// A bar over the stages of one case (hidden when stderr is not a terminal).
fn stage_bar(gt: bool, enhance: bool) -> indicatif::ProgressBar {
    // Per side: segment, inflate, mesh, and enhance and metrics when on; read, localize, write.
    let per_side = 3 + u64::from(gt) + u64::from(enhance);
    let bar = indicatif::ProgressBar::new(3 + 2 * per_side);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn run_cohort(args: &Args, stages: &mut Stages, opts: &CaseOptions) -> anyhow::Result<()> {
    if args.joints.is_some() {
        eprintln!("nv: note: the same --joints centres are used for every case of the cohort");
    }
    let cases = cohort::list_cases(&args.input)?;
    let bar = indicatif::ProgressBar::new(cases.len() as u64);
    let sum = cohort::run_cohort(&cases, &args.out, stages, opts, &mut |case, status, secs| {
        let line = match status {
            CaseStatus::Done => format!("{}: done in {secs:.1} s", case.id),
            CaseStatus::Skipped => format!("{}: complete from an earlier run, skipped", case.id),
            CaseStatus::Failed(e) => format!("{}: FAILED: {e}", case.id),
        };
        bar.suspend(|| eprintln!("{line}"));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let mean = if sum.seconds.is_empty() {
        String::new()
    } else {
        format!(", {:.1} s per case", sum.seconds.iter().sum::<f64>() / sum.seconds.len() as f64)
    };
    println!(
        "cohort: {} done, {} skipped (complete), {} failed{mean} -> {}",
        sum.done,
        sum.skipped,
        sum.failed,
        args.out.join("cohort.csv").display()
    );
    if sum.failed > 0 {
        bail!("{} of {} cases failed (their rows in cohort.csv say why)", sum.failed, cases.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joints_parse() {
        let j = parse_joints("L=-1,2.5,3; R = 4,5,6").unwrap();
        assert_eq!(j, [Some([-1.0, 2.5, 3.0]), Some([4.0, 5.0, 6.0])]);
        assert_eq!(parse_joints("R=1,2,3").unwrap()[0], None);
        assert!(parse_joints("X=1,2,3").is_err());
        assert!(parse_joints("L=1,2").is_err());
        assert!(parse_joints("").is_err());
    }
}
