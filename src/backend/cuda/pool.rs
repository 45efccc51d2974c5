//! Launchers for `kernels/pool.cu`: 2x2x2 max pooling with stride 2, forward and backward.

use cudarc::driver::PushKernelArg;

use super::launch::{self, grid_1d, int, kernel_name, long, Pass};
use super::{alloc, common_gpu, f32_slice, wrap, zeros};
use crate::tensor::Tensor;
use crate::{Error, Result};

const STEM: &str = "pool";
const OP: &str = "max_pool3d_k2";

fn dims(x: &[usize]) -> Result<([usize; 5], [usize; 5])> {
    let d: [usize; 5] = x.try_into().map_err(|_| Error::shape(OP, "(N, D, H, W, C)", x))?;
    Ok((d, [d[0], d[1] / 2, d[2] / 2, d[3] / 2, d[4]]))
}

/// Max over non-overlapping 2x2x2 windows (a trailing odd plane is dropped).
///
/// # Shapes
/// `x (N, D, H, W, C)` -> `(N, D/2, H/2, W/2, C)`.
pub fn max_pool3d_k2(x: &Tensor) -> Result<Tensor> {
    let (d, od) = dims(x.dims())?;
    let gpu = common_gpu(OP, &[x])?;
    let n_out: usize = od.iter().product();
    let name = kernel_name(OP, Pass::Fwd, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let (nl, dd, hh, ww, cc) =
        (long(n_out), int(OP, d[1])?, int(OP, d[2])?, int(OP, d[3])?, int(OP, d[4])?);
    let mut out = alloc(&gpu, n_out)?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&nl).arg(&dd).arg(&hh).arg(&ww).arg(&cc).arg(f32_slice(OP, x)?).arg(&mut out);
        // SAFETY: max_pool3d_k2_fwd_f32(n_out, d, h, w, c, x, out): x is (N, D, H, W, C), every
        // window 2o..2o+1 lies inside it because o < D/2; out holds n_out, all written.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, n_out))? };
    }
    wrap(&gpu, out, od)
}

/// Gradient of [`max_pool3d_k2`]: each window's gradient goes to its (first) maximum.
pub fn max_pool3d_k2_backward(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    let (d, od) = dims(x.dims())?;
    if g.dims() != od {
        return Err(Error::shape(OP, od, g.dims()));
    }
    let gpu = common_gpu(OP, &[x, g])?;
    let n_out: usize = od.iter().product();
    let name = kernel_name(OP, Pass::BwdInput, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let (nl, dd, hh, ww, cc) =
        (long(n_out), int(OP, d[1])?, int(OP, d[2])?, int(OP, d[3])?, int(OP, d[4])?);
    let mut gx = zeros(&gpu, x.numel())?;
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&nl).arg(&dd).arg(&hh).arg(&ww).arg(&cc);
        b.arg(f32_slice(OP, x)?).arg(f32_slice(OP, g)?).arg(&mut gx);
        // SAFETY: max_pool3d_k2_bwd_input_f32(n_out, d, h, w, c, x, g, gx): g holds n_out, x and
        // gx (zeroed) the input's elements; each window writes one index inside its own window.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, n_out))? };
    }
    wrap(&gpu, gx, d)
}
