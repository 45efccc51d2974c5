//! The `dnvs-engine` command line. All logic lives in `cli` and the library.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    restore_sigpipe();
    dnvs_engine::backend::cpu::memory::keep_freed_buffers();
    cli::run(cli::Cli::parse())
}

/// Rust starts programs with SIGPIPE ignored, so `dnvs-engine info ct.nii.gz | head -1` made
/// `println!` panic ("failed printing to stdout", exit 101) once `head` had gone. Restoring the
/// default action makes the process end quietly on a closed pipe, as `cat` and `grep` do. Every
/// file output is written to a temporary name and renamed, so ending mid-run leaves no
/// half-written file.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid action
    // for SIGPIPE and no handler of ours is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
