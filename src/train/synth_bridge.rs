//! The one call from training into the phantom generator (`crate::synth`), kept in one place so
//! the config's `loaders.synth` stays independent of the generator's API.

use std::path::Path;

use crate::{Error, Result};

/// Writes `cases` phantoms with VOIs of `voi` voxels into `dir` (a `dataset.json` data set).
pub fn write_phantoms(dir: &Path, cases: usize, seed: u64, voi: [usize; 3]) -> Result<()> {
    let _ = (cases, seed, voi);
    Err(Error::Config {
        msg: format!(
            "{}: no data set there and the phantom generator is not built in this version",
            dir.display()
        ),
    })
}
