//! The one way the engine writes a file: into a unique temporary sibling, flushed and synced to
//! disk, then renamed over the target, so a reader (or a run killed halfway) sees the old file or
//! the new one, never half of one; on any error the temporary file is removed and the target is
//! left as it was. A leaf module: everything that writes files (io, train, nn, the kernel cache)
//! uses it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Error, Result};

/// Writes through `f` into a temporary sibling of `path`, syncs it and renames it over `path`.
///
/// # Errors
/// [`Error::Io`] naming `path` when creating, writing, syncing or renaming fails.
pub fn write_with(
    path: &Path,
    f: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        f(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // Best effort: the temporary file is useless once the write failed.
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// [`write_with`] for bytes already in memory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| w.write_all(bytes))
}

/// `.name.tmp-<pid>-<n>` beside `path`: unique per process and call, so concurrent writers of one
/// target never share a temporary file.
fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let unique =
        format!(".{name}.tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    path.with_file_name(unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_and_leaves_the_target_on_error() {
        let dir = std::env::temp_dir().join(format!("dnvs-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("a.txt");
        write_atomic(&path, b"one").expect("write");
        let failed = write_with(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(matches!(failed, Err(Error::Io { .. })));
        assert_eq!(std::fs::read(&path).expect("read"), b"one");
        let left: Vec<_> = std::fs::read_dir(&dir).expect("list").collect();
        assert_eq!(left.len(), 1, "the temporary file is cleaned up");
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
}
