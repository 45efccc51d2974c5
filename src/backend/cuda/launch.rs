//! Launch helpers: kernel names, launch configurations and the checked launch. Every launcher
//! builds its grid here, so block sizes match what the kernels were written for (`THREADS` = 256,
//! the (32, 8) channel-reduction block) in one place.

use cudarc::driver::{LaunchArgs, LaunchConfig};

use super::Gpu;
use crate::{Error, Result};

pub use crate::tensor::Precision;

/// Which pass of an op a kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Fwd,
    BwdInput,
    BwdWeight,
}

impl Pass {
    fn as_str(self) -> &'static str {
        match self {
            Pass::Fwd => "fwd",
            Pass::BwdInput => "bwd_input",
            Pass::BwdWeight => "bwd_weight",
        }
    }
}

/// A kernel's symbol, built from the op's name (habit 2: no literal names a kernel at a call site):
/// `<op>_<pass>[_<stage>]_<dtype>`, e.g. `conv3d_bwd_weight_bf16`, `batch_norm_fwd_var_f32`.
pub fn kernel_name(op: &str, pass: Pass, stage: Option<&str>, dtype: &str) -> String {
    match stage {
        Some(s) => format!("{op}_{}_{s}_{dtype}", pass.as_str()),
        None => format!("{op}_{}_{dtype}", pass.as_str()),
    }
}

/// Threads per block of the 1-D kernels and of the implicit GEMM (`THREADS` in the .cu files).
pub const THREADS: u32 = 256;
/// The channel-reduction block of common.cuh (`CHANNEL_REDUCE_BLOCK_X/Y`).
pub const REDUCE_BLOCK: (u32, u32) = (32, 8);

/// Grid-stride 1-D launch over `n` items: enough blocks to fill the GPU several times over, no
/// more (the kernels loop).
pub fn grid_1d(gpu: &Gpu, n: usize) -> LaunchConfig {
    let want = n.div_ceil(THREADS as usize).max(1);
    let cap = (gpu.sms as usize) * 16;
    LaunchConfig {
        grid_dim: (want.min(cap) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One thread per item, all at once (kernels that return when the index is out of range).
pub fn grid_exact(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(THREADS as usize).max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `blocks` blocks of `THREADS`, one per tile of work (the scan's per-tile pass).
pub fn grid_blocks(blocks: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (blocks.max(1) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A 2-D grid with one row of blocks per independent item on grid y (`rows` tensors of a
/// multi-tensor launch, `rows` (sample, group) statistics) and enough blocks per row on x to
/// cover `per_row` elements, capped so the whole grid fills the GPU about four times.
///
/// # Errors
/// [`Error::Arg`] when `rows` exceeds grid y's 65535.
pub fn grid_rows(gpu: &Gpu, per_row: usize, rows: usize) -> Result<LaunchConfig> {
    if rows > 65535 {
        return Err(Error::arg("launch", format!("{rows} rows exceed one grid's 65535")));
    }
    let want = per_row.div_ceil(THREADS as usize).max(1);
    let cap = ((gpu.sms as usize) * 4).div_ceil(rows.max(1)).max(1);
    Ok(LaunchConfig {
        grid_dim: (want.min(cap) as u32, rows.max(1) as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Output tile of the implicit GEMM (BM x BN in implicit_gemm.cuh) and its reduction step (BK).
pub const TILE_M: usize = 64;
pub const TILE_N: usize = 64;
pub const TILE_K: usize = 32;

/// Grid of the implicit GEMM for an `m x n` output and `z` slices (split-K slices times taps).
///
/// # Errors
/// [`Error::Arg`] when the grid exceeds what CUDA allows.
pub fn gemm_grid(m: usize, n: usize, z: usize) -> Result<LaunchConfig> {
    let gx = u32::try_from(m.div_ceil(TILE_M))
        .map_err(|_| Error::arg("implicit_gemm", "too many rows"))?;
    let gy = n.div_ceil(TILE_N);
    if gy > 65535 || z > 65535 {
        return Err(Error::arg("implicit_gemm", format!("GEMM grid too large: {gy} x {z}")));
    }
    Ok(LaunchConfig {
        grid_dim: (gx, gy as u32, z as u32),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// A per-channel reduction over `(rows, c)`: grid y covers the channels in 32s, grid x the rows,
/// about four blocks per SM in all (each block ends in one atomicAdd per channel).
pub fn grid_channels(gpu: &Gpu, rows: usize, c: usize) -> LaunchConfig {
    let (bx, by) = REDUCE_BLOCK;
    let cy = c.div_ceil(bx as usize).max(1);
    let row_blocks = rows.div_ceil(by as usize).max(1);
    let target = ((gpu.sms as usize) * 4).div_ceil(cy).max(1);
    LaunchConfig {
        grid_dim: (row_blocks.min(target) as u32, cy as u32, 1),
        block_dim: (bx, by, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches `builder` (kernel `name`) with `cfg`, maps a failure to [`Error::Cuda`] naming the
/// kernel, and in debug builds waits for the kernel so that an asynchronous fault is reported
/// here, against its own name, rather than at some later call.
///
/// While `backend::cpu::profile` records (`bench --profile --device cuda`), the stream is
/// synchronised before and after the launch and the wall time between goes to the profile table
/// under the kernel's name and grid: one kernel's time each, plus a launch and a synchronisation
/// (~10-20 us), so only kernels well above that read true.
///
/// # Safety
/// The caller guarantees that the arguments pushed on `builder` match the kernel's signature in
/// order and type, and that every buffer is large enough for the indices the kernel computes
/// from those arguments and `cfg`.
pub unsafe fn launch(
    gpu: &Gpu,
    name: &str,
    builder: &mut LaunchArgs<'_>,
    cfg: LaunchConfig,
) -> Result<()> {
    let sync = |what: &str| {
        gpu.stream.synchronize().map_err(|e| Error::Cuda(format!("{name} {what}: {e}")))
    };
    let profiled = crate::backend::cpu::profile::enabled();
    if profiled {
        sync("(waiting for the work before it)")?;
    }
    let timing = match profiled {
        true => crate::backend::cpu::profile::scope(|| {
            let (gx, gy, gz) = cfg.grid_dim;
            format!("{name} grid {gx}x{gy}x{gz}")
        }),
        false => None,
    };
    // SAFETY: forwarded from this function's contract.
    unsafe { builder.launch(cfg) }.map_err(|e| Error::Cuda(format!("launching {name}: {e}")))?;
    if profiled || cfg!(debug_assertions) {
        sync("failed")?;
    }
    drop(timing);
    Ok(())
}

/// Narrows a size to the kernels' `int` parameters.
pub fn int(op: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::arg(op, format!("size {v} exceeds the kernels' 32-bit int")))
}

/// Narrows a count to the kernels' `long long` parameters.
pub fn long(v: usize) -> i64 {
    i64::try_from(v).expect("tensor sizes fit in i64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_op_pass_dtype() {
        assert_eq!(kernel_name("conv3d", Pass::BwdWeight, None, "bf16"), "conv3d_bwd_weight_bf16");
        assert_eq!(
            kernel_name("batch_norm", Pass::Fwd, Some("var"), "f32"),
            "batch_norm_fwd_var_f32"
        );
    }
}
