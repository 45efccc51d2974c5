//! `dnvs-engine info`: the engine and this machine (version, threads, CUDA); with a FILE, the
//! file's geometry.

use std::path::PathBuf;

use dnvs_engine::tensor::cuda_driver_present;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  dnvs-engine info\n  dnvs-engine info ct.nii.gz")]
pub struct Args {
    /// A NIfTI file or DICOM folder to describe.
    file: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(file) = args.file {
        return Err(super::NotBuilt("info FILE").into())
            .map_err(|e: anyhow::Error| e.context(format!("cannot describe {}", file.display())));
    }
    println!("dnvs-engine {}", dnvs_engine::VERSION);
    println!("threads: {}", rayon::current_num_threads());
    if cuda_driver_present() {
        match dnvs_engine::backend::cuda::probe(0) {
            Ok(name) => println!("cuda: driver present, cuda:0 = {name}"),
            Err(why) => println!("cuda: driver present, but {why}"),
        }
    } else {
        println!("cuda: no driver library found (CPU only)");
    }
    Ok(())
}
