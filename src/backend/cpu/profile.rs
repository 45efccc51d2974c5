//! Per-op wall-clock timing of the CPU kernels, for `dnvs-engine bench --profile`.
//!
//! Off by default: a kernel's [`scope`] then costs one relaxed atomic load and records nothing.
//! When on, each scope adds its wall time to a table keyed by op and shape (`conv3d_fwd k5
//! C256->256 4x4x2`), so one training step shows which layer and which pass the time goes to.
//! Scopes nest (a transposed convolution runs a convolution kernel inside): only the outermost
//! scope of a thread records, so nothing is counted twice.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Option<HashMap<String, Entry>>> = Mutex::new(None);

thread_local! {
    /// An outer scope is open on this thread: inner ones do not record.
    static OPEN: Cell<bool> = const { Cell::new(false) };
}

/// Calls and total seconds of one op at one shape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    pub calls: u64,
    pub secs: f64,
}

/// Starts (or stops) recording; starting clears the table.
pub fn enable(on: bool) {
    if on {
        *lock() = Some(HashMap::new());
    }
    ON.store(on, Ordering::Relaxed);
}

/// Whether scopes record now.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The table so far, slowest first, and clears it.
pub fn take() -> Vec<(String, Entry)> {
    let mut rows: Vec<_> =
        lock().as_mut().map(std::mem::take).unwrap_or_default().into_iter().collect();
    rows.sort_by(|a, b| b.1.secs.total_cmp(&a.1.secs));
    rows
}

fn lock() -> std::sync::MutexGuard<'static, Option<HashMap<String, Entry>>> {
    // A panic while holding the lock leaves a table that is still valid: keep using it.
    TABLE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Times until dropped, under the name `name()` builds (only called when recording).
pub fn scope(name: impl FnOnce() -> String) -> Option<Scope> {
    if !enabled() || OPEN.with(Cell::get) {
        return None;
    }
    OPEN.with(|o| o.set(true));
    Some(Scope { name: name(), start: Instant::now() })
}

/// An open timing scope; records when dropped.
pub struct Scope {
    name: String,
    start: Instant,
}

impl Drop for Scope {
    fn drop(&mut self) {
        let secs = self.start.elapsed().as_secs_f64();
        OPEN.with(|o| o.set(false));
        if let Some(table) = lock().as_mut() {
            let e = table.entry(std::mem::take(&mut self.name)).or_default();
            e.calls += 1;
            e.secs += secs;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_scopes_record_once() {
        enable(true);
        {
            let _outer = scope(|| "outer".into());
            let inner = scope(|| "inner".into());
            assert!(inner.is_none());
        }
        let rows = take();
        enable(false);
        assert!(scope(|| "off".into()).is_none());
        let names: Vec<_> = rows.iter().map(|(n, e)| (n.as_str(), e.calls)).collect();
        assert!(names.contains(&("outer", 1)), "{names:?}");
        assert!(!names.iter().any(|(n, _)| *n == "inner"));
    }
}
