//! How the process keeps the memory it frees.
//!
//! A training step allocates and frees the same few hundred activation and gradient buffers
//! (0.1-32 MiB each) every step. By default glibc serves such sizes with fresh `mmap`s, and it
//! gives freed memory at the top of its heaps back to the system. So every step faulted every
//! page in again, and the kernel zeroed it. A page first read through the shared zero page and
//! then written costs a second fault and a TLB shootdown across the threads.
//!
//! Measured on the 2-core CI machine with the V-Net (width 16):
//!
//! | setting | 32^3 step | 64x64x32 step | peak RSS at 32^3 / 64x64x32 |
//! |---|---|---|---|
//! | glibc's default | 1180-1420 ms | | 1.09 / 1.40 GB |
//! | heap up to 32 MiB | 750-800 ms | 3370-3580 ms | 1.11 / 1.40 GB |
//! | the same, and no trimming | 700-750 ms | 2660-2830 ms | 1.15 / 1.40 GB |
//!
//! Larger buffers (a whole CT) still get their own mapping and go back to the system when freed.

/// Buffers up to this size come from the heap and stay in the process once freed. 32 MiB is
/// the largest value glibc accepts for `M_MMAP_THRESHOLD` on 64-bit targets.
const KEEP_UP_TO_BYTES: i32 = 32 << 20;

/// Freed heap memory goes back to the system only when more than this lies free at a heap's top:
/// in practice never, so a step's pages stay mapped for the next step.
const TRIM_ABOVE_BYTES: i32 = i32::MAX;

/// Makes freed buffers of up to 32 MiB stay in the process for reuse instead of going back to
/// the system. Call once, first thing in `main`; it has no effect off glibc. Returns whether
/// the allocator accepted both settings.
pub fn keep_freed_buffers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's thresholds; it is called before the
        // program allocates anything large, and both arguments are valid for glibc.
        let (heap, trim) = unsafe {
            (
                libc::mallopt(libc::M_MMAP_THRESHOLD, KEEP_UP_TO_BYTES),
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_ABOVE_BYTES),
            )
        };
        heap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = (KEEP_UP_TO_BYTES, TRIM_ABOVE_BYTES);
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_threshold() {
        assert!(super::keep_freed_buffers());
    }
}
