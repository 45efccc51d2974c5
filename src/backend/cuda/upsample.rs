//! Launchers for `kernels/upsample.cu`: nearest-neighbour upsampling (PyTorch's 'nearest' index
//! rule), forward and backward.

use cudarc::driver::PushKernelArg;

use super::launch::{self, grid_1d, int, kernel_name, long, Pass};
use super::{alloc, common_gpu, f32_slice, wrap, zeros};
use crate::tensor::Tensor;
use crate::{Error, Result};

const STEM: &str = "upsample";
const OP: &str = "upsample_nearest";

fn geometry(x: &[usize], size: [usize; 3]) -> Result<([usize; 5], [usize; 5])> {
    let d: [usize; 5] = x.try_into().map_err(|_| Error::shape(OP, "(N, D, H, W, C)", x))?;
    if size.contains(&0) || d[1..4].contains(&0) {
        return Err(Error::arg(OP, format!("empty extent: input {x:?}, size {size:?}")));
    }
    Ok((d, [d[0], size[0], size[1], size[2], d[4]]))
}

fn launch_pass(x_dims: [usize; 5], o: [usize; 5], pass: Pass, src: &Tensor) -> Result<Tensor> {
    let gpu = common_gpu(OP, &[src])?;
    let n_out: usize = o.iter().product();
    let name = kernel_name(OP, pass, None, "f32");
    let f = gpu.function(STEM, &name)?;
    let i = |v: usize| int(OP, v);
    let (dd, hh, ww, cc) = (i(x_dims[1])?, i(x_dims[2])?, i(x_dims[3])?, i(x_dims[4])?);
    let (od, oh, ow) = (i(o[1])?, i(o[2])?, i(o[3])?);
    let nl = long(n_out);
    let (mut out, shape) = match pass {
        Pass::Fwd => (alloc(&gpu, n_out)?, o),
        _ => (zeros(&gpu, x_dims.iter().product())?, x_dims),
    };
    {
        let mut b = gpu.stream.launch_builder(&f);
        b.arg(&nl).arg(&dd).arg(&hh).arg(&ww).arg(&cc).arg(&od).arg(&oh).arg(&ow);
        b.arg(f32_slice(OP, src)?).arg(&mut out);
        // SAFETY: upsample_nearest_{fwd,bwd_input}_f32(n_out, d, h, w, c, od, oh, ow, src, dst):
        // the source index min(floor(o * in / out), in - 1) stays inside x; forward writes all
        // n_out outputs, backward scatters into the zeroed x-shaped gradient.
        unsafe { launch::launch(&gpu, &name, &mut b, grid_1d(&gpu, n_out))? };
    }
    wrap(&gpu, out, shape)
}

/// Nearest-neighbour resize of `(N, D, H, W, C)` to `(N, size[0], size[1], size[2], C)`.
pub fn upsample_nearest(x: &Tensor, size: [usize; 3]) -> Result<Tensor> {
    let (d, o) = geometry(x.dims(), size)?;
    launch_pass(d, o, Pass::Fwd, x)
}

/// Gradient of [`upsample_nearest`] w.r.t. its input of shape `x_dims`.
pub fn upsample_nearest_backward(g: &Tensor, x_dims: &[usize]) -> Result<Tensor> {
    let gd = g.dims();
    if gd.len() != 5 {
        return Err(Error::shape(OP, "(N, OD, OH, OW, C)", gd));
    }
    let (d, o) = geometry(x_dims, [gd[1], gd[2], gd[3]])?;
    if o.as_slice() != gd {
        return Err(Error::shape(OP, o, gd));
    }
    launch_pass(d, o, Pass::BwdInput, g)
}
