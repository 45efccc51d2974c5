//! `dnvs-engine bench`.

use super::NotBuilt;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    Err(NotBuilt("bench").into())
}
