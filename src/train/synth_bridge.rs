//! The one call from training into the phantom generator (`crate::synth`), kept in one place so
//! the config's `loaders.synth` stays independent of the generator's API.

use std::path::Path;

use crate::synth::{self, SynthConfig};
use crate::Result;

/// Writes `cases` phantoms with VOIs of `voi` voxels (0.4 mm) into `dir` (a `dataset.json` data
/// set, as `dnvs-engine synth --out DIR --cases N --seed S --voi-size D,H,W` writes it).
///
/// # Errors
/// Those of [`synth::write_dataset`].
pub fn write_phantoms(dir: &Path, cases: usize, seed: u64, voi: [usize; 3]) -> Result<()> {
    let cfg = SynthConfig { seed, voi_dims: voi, ..SynthConfig::default() };
    synth::write_dataset(dir, cases, &cfg, false, &|_| {})?;
    Ok(())
}
