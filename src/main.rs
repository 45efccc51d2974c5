//! The `dnvs-engine` command line. All logic lives in `cli` and the library.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::run(cli::Cli::parse())
}
