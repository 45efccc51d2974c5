//! `dnvs-engine synth`: writes a data set of synthetic TMJ head-CT phantoms.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use dnvs_engine::synth::{self, GapRange, HeadProfile, SynthConfig, VoiScan};

#[derive(clap::Args)]
#[command(
    after_help = "Writes DIR/imagesTr (head CT, HU), DIR/labelsTr (0 bg, 1 MC, 2 TB, 3 NV), \
DIR/voi (per joint: CT + MC/TB/NV masks at 0.4 mm) and DIR/dataset.json (spacing, true NV mm^3 \
and joint space per side). Identical arguments give identical bytes.\n\nExamples:\n  \
dnvs-engine synth --out data/phantoms --cases 20 --seed 1\n  \
dnvs-engine synth --out /tmp/ph --cases 2 --seed 7 --voi-size 64,56,40 --preview\n  \
dnvs-engine synth --out data/heads --cases 40 --seed 21 --profile head --inplane-mm 1.5,3 \
--slice-mm 1.5,4 --voi-size 16,16,16"
)]
pub struct Args {
    /// Output folder (created if missing; its imagesTr, labelsTr, voi, preview and
    /// dataset.json are replaced).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Number of cases.
    #[arg(long, default_value_t = 20)]
    cases: usize,
    /// Seed: the whole data set is a function of it.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// VOI size in voxels D,H,W (x, y, z) at 0.4 mm.
    #[arg(long, value_name = "D,H,W", default_value = "120,150,70", value_parser = super::parse_dhw)]
    voi_size: [usize; 3],
    /// Whole-head voxel size in mm.
    #[arg(long, default_value_t = 1.5)]
    head_spacing: f64,
    /// Also write PNG slices through each joint with the labels over the CT into DIR/preview.
    #[arg(long)]
    preview: bool,
    /// `default`: the fixed head grid of the segmentation data set. `head`: whole-head scans that
    /// vary as real ones do (pose up to 15 deg, cropped fields of view, voxel sizes, HU offset,
    /// noise levels, table and head rest, dental metal, sometimes one joint out of view) for
    /// localisation; --head-spacing is then unused.
    #[arg(long, value_enum, default_value_t = Profile::Default)]
    profile: Profile,
    /// With --profile head: in-plane voxel size range LO,HI (mm).
    #[arg(long, value_name = "LO,HI", value_parser = parse_range, default_value = "0.3,1.0")]
    inplane_mm: [f64; 2],
    /// With --profile head: slice spacing range LO,HI (mm).
    #[arg(long, value_name = "LO,HI", value_parser = parse_range, default_value = "0.5,3.0")]
    slice_mm: [f64; 2],
    /// Cut each VOI's CT from a simulated head scan whose in-plane voxel size is drawn from LO,HI
    /// (mm) per VOI, instead of rendering it straight at 0.4 mm (the masks stay the 0.4 mm
    /// truth): training data that looks like what `nv` cuts from a real head. Needs
    /// --voi-scan-slice-mm.
    #[arg(long, value_name = "LO,HI", value_parser = parse_range, requires = "voi_scan_slice_mm")]
    voi_scan_inplane_mm: Option<[f64; 2]>,
    /// The slice spacing range LO,HI (mm) of --voi-scan-inplane-mm's simulated scan.
    #[arg(long, value_name = "LO,HI", value_parser = parse_range, requires = "voi_scan_inplane_mm")]
    voi_scan_slice_mm: Option<[f64; 2]>,
    /// Scans drawn per VOI with --voi-scan-inplane-mm (1..=16): the same anatomy through
    /// independently drawn voxel sizes, phase and noise, written as `voi/*_ct2.nii.gz`, ...
    #[arg(long, default_value_t = 1, requires = "voi_scan_inplane_mm")]
    voi_scan_draws: usize,
    /// With --profile head: probability that one joint is outside the field of view.
    #[arg(long, default_value_t = 0.15)]
    p_one_side_out: f64,
    /// Range LO,HI (mm) the joint spaces are drawn from (LO + 1 <= HI). Training data may span
    /// more than the heads it is tested on, so the edges of the test range are not the edges of
    /// what the model learned.
    #[arg(long, value_name = "LO,HI", value_parser = parse_range, default_value = "1.5,4")]
    gap_mm: [f64; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Profile {
    Default,
    Head,
}

fn parse_range(s: &str) -> Result<[f64; 2], String> {
    let v: Vec<f64> = super::parse_numbers(s)?;
    match v.as_slice() {
        &[lo, hi] if lo > 0.0 && hi >= lo => Ok([lo, hi]),
        _ => Err(format!("expected LO,HI with 0 < LO <= HI, got '{s}'")),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = SynthConfig {
        seed: args.seed,
        voi_dims: args.voi_size,
        head_spacing: args.head_spacing,
        head: (args.profile == Profile::Head).then(|| HeadProfile {
            inplane_mm: args.inplane_mm,
            slice_mm: args.slice_mm,
            p_one_side_out: args.p_one_side_out,
            ..HeadProfile::default()
        }),
        voi_scan: args.voi_scan_inplane_mm.zip(args.voi_scan_slice_mm).map(
            |(inplane_mm, slice_mm)| VoiScan { inplane_mm, slice_mm, draws: args.voi_scan_draws },
        ),
        gaps: GapRange { mm: args.gap_mm },
        ..SynthConfig::default()
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(args.cases as u64);
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} synth [{bar:30}] {pos}/{len} cases {elapsed_precise} eta {eta} {msg}",
        )
        .map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        Some(bar)
    } else {
        None
    };
    let start = Instant::now();
    let progress = |id: &str| {
        if let Some(bar) = &bar {
            bar.set_message(id.to_string());
            bar.inc(1);
        }
    };
    let manifest = synth::write_dataset(&args.out, args.cases, &cfg, args.preview, &progress)
        .with_context(|| format!("synth into {}", args.out.display()))?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    println!(
        "wrote {} cases (seed {}) to {} in {:.1} s",
        manifest.cases.len(),
        args.seed,
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    for c in &manifest.cases {
        let sides: Vec<String> = c
            .sides
            .iter()
            .map(|(s, e)| format!("{s}: gap {:.2} mm, NV {:.0} mm^3", e.joint_space_mm, e.nv_mm3))
            .collect();
        println!("  {}  {}", c.id, sides.join("  "));
    }
    Ok(())
}
