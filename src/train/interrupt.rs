//! Ctrl-C during training: the first SIGINT sets a flag that the training loop reads between
//! iterations (it abandons the epoch in progress, whose state is not on disk yet, and returns
//! [`crate::Error::Interrupted`]); a second SIGINT exits at once with status 130. The state on
//! disk is always that of the last finished epoch, so `train --resume` continues exactly.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether an interrupt was requested since the last [`clear`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Asks the training loop to stop at the next iteration (what SIGINT does; also for tests).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Forgets a request.
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

#[cfg(unix)]
extern "C" fn on_sigint(_: libc::c_int) {
    // Only async-signal-safe work here: an atomic swap, and `_exit` on the second signal.
    if REQUESTED.swap(true, Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe and takes no pointers.
        unsafe { libc::_exit(130) };
    }
}

/// Installs the SIGINT handler (the `train` command does; the library never does on its own).
pub fn install() {
    #[cfg(unix)]
    // SAFETY: `on_sigint` has the C signature `signal` expects and touches only an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
}
