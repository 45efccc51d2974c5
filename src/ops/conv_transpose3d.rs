//! 3-D transposed convolution (the V-Net's up convolution): one shape check into the geometry of
//! the convolution it transposes, the kernel of the device that holds the tensors, one backward.

use super::conv3d::{bias_grad, check_operands};
use super::{data, device_of, inputs};
use crate::autograd;
use crate::backend::cpu::conv3d::ConvGeom;
use crate::backend::cpu::conv_transpose3d as cpu;
use crate::backend::cuda::conv_transpose3d as cu;
use crate::tensor::{Device, Precision, Tensor};
use crate::{Error, Result};

/// Checks a transposed convolution's operands once and returns the geometry of the convolution
/// whose input-gradient it is (its input is our output): what both backends build on.
fn check(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize) -> Result<ConvGeom> {
    const OP: &str = "conv_transpose3d";
    let (xd, wd) = check_operands(OP, x, w, b)?;
    let [k, kd, kh, kw, _] = wd;
    if stride == 0 {
        return Err(Error::arg(OP, "stride must be at least 1"));
    }
    cpu::geometry(xd, k, [kd, kh, kw], stride).ok_or_else(|| {
        Error::shape(OP, "a non-empty input and kernel", format!("input {xd:?}, weight {wd:?}"))
    })
}

/// Transposed 3-D convolution, no padding, f32 operands on every device.
///
/// # Shapes
/// `x: (N, D, H, W, C)`, `w: (K, kd, kh, kw, C)` (K output channels; PyTorch's
/// `(C, K, kd, kh, kw)` is converted at the boundary), `b: (K)` ->
/// `(N, (D-1)*stride + kd, (H-1)*stride + kh, (W-1)*stride + kw, K)`.
///
/// # Errors
/// [`Error::Shape`] for tensors of the wrong rank, a weight whose last axis is not C, a bias not
/// of length K, or an empty input or kernel; [`Error::Arg`] for a zero stride; [`Error::Device`]
/// for tensors on different devices.
///
/// # Example
/// ```
/// use dnvs_engine::{ops, Tensor};
/// let x = Tensor::from_vec(vec![1.0, 2.0], [1, 1, 1, 2, 1]).unwrap();
/// let w = Tensor::from_vec(vec![1.0; 8], [1, 2, 2, 2, 1]).unwrap();
/// let y = ops::conv_transpose3d(&x, &w, None, 2).unwrap();
/// assert_eq!(y.dims(), &[1, 2, 2, 4, 1]);
/// assert_eq!(&y.to_vec().unwrap()[..4], &[1.0, 1.0, 2.0, 2.0]);
/// ```
pub fn conv_transpose3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
) -> Result<Tensor> {
    conv_transpose3d_prec(x, w, b, stride, Precision::F32)
}

/// [`conv_transpose3d`] with the operand precision of the GPU kernels (ignored on the CPU).
pub fn conv_transpose3d_prec(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    prec: Precision,
) -> Result<Tensor> {
    const OP: &str = "conv_transpose3d";
    let ins = inputs(&[x, w], &[b]);
    let dev = device_of(OP, &ins)?;
    let g = check(x, w, b, stride)?;
    let k = g.c;
    let out = match dev {
        Device::Cpu => {
            let bias = b.map(|b| data(OP, b)).transpose()?;
            let [od, oh, ow] = g.input;
            let y = cpu::fwd(data(OP, x)?, data(OP, w)?, bias, &g);
            Tensor::from_vec(y, [g.n, od, oh, ow, k])?
        }
        Device::Cuda(_) => cu::conv_transpose3d(x, w, b, &g, prec)?,
    };
    if !autograd::needs_grad(&ins) {
        return Ok(out);
    }
    let (xs, ws, has_bias) = (x.clone(), w.clone(), b.is_some());
    Ok(autograd::record(OP, out, &ins, move |go| {
        let gx = xs
            .tracks_grad()
            .then(|| match dev {
                Device::Cpu => {
                    Tensor::from_vec(cpu::bwd_input(data(OP, go)?, data(OP, &ws)?, &g), xs.shape())
                }
                Device::Cuda(_) => cu::conv_transpose3d_backward_input(go, &ws, &g, prec),
            })
            .transpose()?;
        let gw = ws
            .tracks_grad()
            .then(|| match dev {
                Device::Cpu => {
                    Tensor::from_vec(cpu::bwd_weight(data(OP, &xs)?, data(OP, go)?, &g), ws.shape())
                }
                Device::Cuda(_) => cu::conv_transpose3d_backward_weight(go, &xs, &g, prec),
            })
            .transpose()?;
        let mut grads = vec![gx, gw];
        if has_bias {
            grads.push(Some(bias_grad(OP, go, k)?));
        }
        Ok(grads)
    }))
}
