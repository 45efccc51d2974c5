//! Compute backends. `cpu` is the reference every other backend is tested against; `cuda` runs
//! NVRTC-compiled kernels from `kernels/`. Both are called only from `crate::ops`, which checks
//! shapes first.

pub mod cpu;
pub mod cuda;
