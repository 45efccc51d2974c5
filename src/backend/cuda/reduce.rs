//! Launchers for `kernels/reduce.cu`: the sum of a whole tensor and per-channel sums of a
//! channels-last tensor (the bias gradient of a convolution).

use cudarc::driver::PushKernelArg;

use super::launch::{self, grid_1d, grid_channels, int, kernel_name, long, Pass};
use super::{common_gpu, f32_slice, wrap, zeros};
use crate::tensor::{Shape, Tensor};
use crate::Result;

const STEM: &str = "reduce";

/// Sum of every element, as a scalar tensor on the same GPU (no host synchronisation).
pub fn sum_all(x: &Tensor) -> Result<Tensor> {
    let op = "sum_all";
    let gpu = common_gpu(op, &[x])?;
    let name = kernel_name(op, Pass::Fwd, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let n = x.numel();
    let nn = long(n);
    let mut out = zeros(&gpu, 1)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&nn).arg(f32_slice(op, x)?).arg(&mut out);
        // SAFETY: sum_all_fwd_f32(n, x, out): x holds n elements, out one zeroed float.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, n))? };
    }
    wrap(&gpu, out, Shape::scalar())
}

/// Per-channel sums over every other axis: `(..., C) -> (C)`.
pub fn sum_channels(x: &Tensor) -> Result<Tensor> {
    let op = "sum_channels";
    let gpu = common_gpu(op, &[x])?;
    let c = x.dims().last().copied().unwrap_or(1).max(1);
    let rows = x.numel() / c;
    let name = kernel_name(op, Pass::Fwd, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let (rl, ci) = (long(rows), int(op, c)?);
    let mut out = zeros(&gpu, c)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&rl).arg(&ci).arg(f32_slice(op, x)?).arg(&mut out);
        // SAFETY: sum_channels_fwd_f32(rows, c, x, out): x is (rows, c), out c zeroed floats;
        // grid y covers ceil(c / 32) channel blocks and the kernel masks ch >= c.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_channels(&gpu, rows, c))? };
    }
    wrap(&gpu, out, [c])
}
