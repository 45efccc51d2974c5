//! Launchers for `kernels/softmax.cu`: softmax and log-softmax over the channel axis, forward and
//! backward (from the forward output).

use cudarc::driver::PushKernelArg;

use super::launch::{self, grid_1d, int, kernel_name, long, Pass};
use super::{alloc, common_gpu, f32_slice, wrap};
use crate::tensor::Tensor;
use crate::{Error, Result};

const STEM: &str = "softmax";

fn run(op: &'static str, pass: Pass, inputs: &[&Tensor]) -> Result<Tensor> {
    let first = inputs[0];
    for t in inputs {
        if t.dims() != first.dims() {
            return Err(Error::shape(op, first.dims(), t.dims()));
        }
    }
    let gpu = common_gpu(op, inputs)?;
    let c = first.dims().last().copied().unwrap_or(1).max(1);
    let voxels = first.numel() / c;
    let name = kernel_name(op, pass, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let (vl, ci) = (long(voxels), int(op, c)?);
    let mut out = alloc(&gpu, first.numel())?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&vl).arg(&ci);
        for t in inputs {
            b.arg(f32_slice(op, t)?);
        }
        b.arg(&mut out);
        // SAFETY: the softmax kernels take (voxels, c, inputs..., out), every tensor (voxels, c);
        // each voxel's c outputs are written.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, voxels))? };
    }
    wrap(&gpu, out, first.shape())
}

/// Softmax over the last (channel) axis.
pub fn softmax_channels(x: &Tensor) -> Result<Tensor> {
    run("softmax_channels", Pass::Fwd, &[x])
}

/// Gradient of [`softmax_channels`] from its output `y`: `y (g - sum_c g y)`.
pub fn softmax_channels_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    run("softmax_channels", Pass::BwdInput, &[y, g])
}

/// Log-softmax over the last (channel) axis.
pub fn log_softmax_channels(x: &Tensor) -> Result<Tensor> {
    run("log_softmax_channels", Pass::Fwd, &[x])
}

/// Gradient of [`log_softmax_channels`] from its output `y`: `g - exp(y) sum_c g`.
pub fn log_softmax_channels_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    run("log_softmax_channels", Pass::BwdInput, &[y, g])
}
