//! The one call from training into the phantom generator (`crate::synth`), kept in one place so
//! the config's `loaders.synth` stays independent of the generator's API (it shares only
//! `synth::VoiScan`, the plain voxel-size ranges, rather than a copy of it).

use std::path::Path;

use crate::synth::{self, GapRange, HeadProfile, SynthConfig, VoiScan};
use crate::Result;

/// Writes `cases` phantoms with VOIs of `voi` voxels (0.4 mm) into `dir` (a `dataset.json` data
/// set, as `dnvs-engine synth --out DIR --cases N --seed S --voi-size D,H,W` writes it; with
/// `voi_scan`, as `--voi-scan-inplane-mm/--voi-scan-slice-mm` do; joint spaces from `gaps`, as
/// `--gap-mm` does).
///
/// # Errors
/// Those of [`synth::write_dataset`].
pub fn write_phantoms(
    dir: &Path,
    cases: usize,
    seed: u64,
    voi: [usize; 3],
    voi_scan: Option<VoiScan>,
    gaps: GapRange,
) -> Result<()> {
    let cfg = SynthConfig { seed, voi_dims: voi, voi_scan, gaps, ..SynthConfig::default() };
    synth::write_dataset(dir, cases, &cfg, false, &|_| {})?;
    Ok(())
}

/// Writes `cases` whole-head scans of the `head` profile for the `joints` target, as
/// `dnvs-engine synth --profile head --inplane-mm 1.5,3 --slice-mm 1.5,4 --voi-size 16,16,16
/// --p-one-side-out 0.25`
/// writes them: voxels no finer than the localiser needs (it sees 4 mm), tiny VOIs.
///
/// # Errors
/// Those of [`synth::write_dataset`].
pub fn write_heads(dir: &Path, cases: usize, seed: u64) -> Result<()> {
    let cfg = SynthConfig {
        seed,
        voi_dims: [16, 16, 16],
        head: Some(HeadProfile {
            inplane_mm: [1.5, 3.0],
            slice_mm: [1.5, 4.0],
            p_one_side_out: 0.25,
            ..Default::default()
        }),
        ..SynthConfig::default()
    };
    synth::write_dataset(dir, cases, &cfg, false, &|_| {})?;
    Ok(())
}
