//! `dnvs-engine synth`: writes a data set of synthetic TMJ head-CT phantoms.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use dnvs_engine::synth::{self, SynthConfig};

#[derive(clap::Args)]
#[command(
    after_help = "Writes DIR/imagesTr (head CT, HU), DIR/labelsTr (0 bg, 1 MC, 2 TB, 3 NV), \
DIR/voi (per joint: CT + MC/TB/NV masks at 0.4 mm) and DIR/dataset.json (spacing, true NV mm^3 \
and joint space per side). Identical arguments give identical bytes.\n\nExamples:\n  \
dnvs-engine synth --out data/phantoms --cases 20 --seed 1\n  \
dnvs-engine synth --out /tmp/ph --cases 2 --seed 7 --voi-size 64,56,40 --preview"
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
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = SynthConfig {
        seed: args.seed,
        voi_dims: args.voi_size,
        head_spacing: args.head_spacing,
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
