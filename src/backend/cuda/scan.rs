//! Launchers for `kernels/scan.cu`: exclusive prefix sums of u32 counts on the GPU (marching
//! cubes' offsets).

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::launch::{self, grid_1d, kernel_name, long, Pass};
use super::{cuda_err, Gpu};
use crate::{Error, Result};

const STEM: &str = "scan";
const OP: &str = "scan";
/// Values per block of `scan_fwd_block_u32` (`SCAN_TILE` in scan.cu).
const TILE: usize = 1024;
// `scan_fwd_block_u32` needs `blockDim.x == SCAN_THREADS` (256): `launch::grid_blocks` gives
// `launch::THREADS` threads, checked equal here at compile time.
const _: () = assert!(super::launch::THREADS == 256);

/// Exclusive prefix sum of the first `n` values of `input`, and their total.
///
/// # Errors
/// [`Error::Cuda`] on a launch failure; [`Error::Arg`] when `input` is shorter than `n`.
pub fn exclusive_u32(gpu: &Gpu, input: &CudaSlice<u32>, n: usize) -> Result<(CudaSlice<u32>, u64)> {
    if input.len() < n {
        return Err(Error::shape(OP, n, input.len()));
    }
    let tiles = n.div_ceil(TILE).max(1);
    let mut out = gpu.stream.alloc_zeros::<u32>(n.max(1)).map_err(cuda_err)?;
    let mut sums = gpu.stream.alloc_zeros::<u32>(tiles).map_err(cuda_err)?;
    let name = kernel_name(OP, Pass::Fwd, Some("block"), "u32");
    let f = gpu.function(STEM, &name)?;
    let nl = long(n);
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&nl).arg(input).arg(&mut out).arg(&mut sums);
        let cfg = launch::grid_blocks(tiles);
        // SAFETY: scan_fwd_block_u32(n, in, out, block_sums): one block per TILE values, reads
        // and writes only indices < n (input holds >= n, out max(n, 1)); block_sums has `tiles`.
        unsafe { launch::launch(gpu, &name, &mut b, cfg)? };
    }
    if tiles == 1 {
        let total = gpu.stream.clone_dtoh(&sums).map_err(cuda_err)?;
        return Ok((out, total[0] as u64));
    }
    let (offsets, total) = exclusive_u32(gpu, &sums, tiles)?;
    let name = kernel_name(OP, Pass::Fwd, Some("add"), "u32");
    let f = gpu.function(STEM, &name)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&nl).arg(&mut out).arg(&offsets);
        // SAFETY: scan_fwd_add_u32(n, out, offsets): out holds n, offsets one per tile of TILE.
        unsafe { launch::launch(gpu, &name, &mut b, grid_1d(gpu, n))? };
    }
    Ok((out, total))
}
