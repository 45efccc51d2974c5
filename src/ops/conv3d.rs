//! 3-D convolution: one shape check into a [`ConvGeom`], the kernel of the device that holds the
//! tensors (CPU im2col GEMM or the CUDA implicit GEMM, both built from that geometry), and one
//! backward closure that does the same.

use super::{data, device_of, inputs};
use crate::autograd;
use crate::backend::cpu::conv3d::{self as cpu, ConvGeom};
use crate::backend::cuda::{conv3d as cu, reduce};
use crate::tensor::{Device, Precision, Tensor};
use crate::{Error, Result};

impl ConvGeom {
    /// The geometry of `conv3d(x, w, b, stride, padding)`, after the one check of the shapes
    /// every backend relies on (the CUDA kernel parameters are built from it).
    ///
    /// # Errors
    /// [`Error::Shape`] when a tensor is not 5-D (the bias 1-D of length K), when channels
    /// disagree or the kernel is larger than the padded input; [`Error::Arg`] for a zero stride.
    pub fn check(
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<ConvGeom> {
        const OP: &str = "conv3d";
        let (xd, wd) = check_operands(OP, x, w, b)?;
        let [n, d, h, wi, c] = xd;
        let [k, kd, kh, kw, _] = wd;
        if stride == 0 {
            return Err(Error::arg(OP, "stride must be at least 1"));
        }
        ConvGeom::new(n, [d, h, wi], c, k, [kd, kh, kw], stride, padding).ok_or_else(|| {
            Error::shape(
                OP,
                format!("a kernel no larger than the input {xd:?} padded by {padding}"),
                format!("weight {wd:?}"),
            )
        })
    }
}

/// 3-D convolution with the same `stride` and zero `padding` on every axis, f32 operands on every
/// device (see [`conv3d_prec`] for bf16 tensor cores on a GPU).
///
/// # Shapes
/// `x: (N, D, H, W, C)`, `w: (K, kd, kh, kw, C)`, `b: (K)` -> `(N, D', H', W', K)` with
/// `D' = (D + 2*padding - kd) / stride + 1`.
///
/// # Errors
/// [`Error::Shape`] when a tensor is not 5-D (the bias 1-D of length K), when channels disagree
/// or the kernel is larger than the padded input; [`Error::Arg`] for a zero stride;
/// [`Error::Device`] for tensors on different devices.
///
/// # Example
/// ```
/// use dnvs_engine::{ops, Tensor};
/// let x = Tensor::from_vec(vec![1.0; 27], [1, 3, 3, 3, 1]).unwrap();
/// let w = Tensor::from_vec(vec![1.0; 27], [1, 3, 3, 3, 1]).unwrap();
/// let y = ops::conv3d(&x, &w, None, 1, 1).unwrap();
/// assert_eq!(y.dims(), &[1, 3, 3, 3, 1]);
/// assert_eq!(y.to_vec().unwrap()[13], 27.0); // the centre sees the whole input
/// ```
pub fn conv3d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv3d_prec(x, w, b, stride, padding, Precision::F32)
}

/// [`conv3d`] with the operand precision of the GPU kernels (`prec` is ignored on the CPU, which
/// is f32 throughout). Networks pass the precision their parameter store holds.
pub fn conv3d_prec(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    padding: usize,
    prec: Precision,
) -> Result<Tensor> {
    const OP: &str = "conv3d";
    let ins = inputs(&[x, w], &[b]);
    let dev = device_of(OP, &ins)?;
    let g = ConvGeom::check(x, w, b, stride, padding)?;
    let out = match dev {
        Device::Cpu => {
            let bias = b.map(|b| data(OP, b)).transpose()?;
            let [od, oh, ow] = g.output;
            // A tape-free forward may take Winograd's different rounding (see `fwd_inference`).
            let fwd = if autograd::needs_grad(&ins) { cpu::fwd } else { cpu::fwd_inference };
            Tensor::from_vec(fwd(data(OP, x)?, data(OP, w)?, bias, &g), [g.n, od, oh, ow, g.k])?
        }
        Device::Cuda(_) => cu::conv3d(x, w, b, &g, prec)?,
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
                Device::Cuda(_) => cu::conv3d_backward_input(go, &ws, &g, prec),
            })
            .transpose()?;
        let gw = ws
            .tracks_grad()
            .then(|| match dev {
                Device::Cpu => {
                    Tensor::from_vec(cpu::bwd_weight(data(OP, &xs)?, data(OP, go)?, &g), ws.shape())
                }
                Device::Cuda(_) => cu::conv3d_backward_weight(go, &xs, &g, prec),
            })
            .transpose()?;
        let mut grads = vec![gx, gw];
        if has_bias {
            grads.push(Some(bias_grad(OP, go, g.k)?));
        }
        Ok(grads)
    }))
}

/// The gradient of a per-output-channel bias: the output gradient summed over all voxels.
pub(super) fn bias_grad(op: &'static str, go: &Tensor, k: usize) -> Result<Tensor> {
    match go.device() {
        Device::Cpu => Tensor::from_vec(cpu::bwd_bias(data(op, go)?, k), [k]),
        Device::Cuda(_) => reduce::sum_channels(go),
    }
}

/// Checks what `conv3d` and `conv_transpose3d` share: a 5-D input and weight with the same
/// channel count, and a bias of length `w.dims()[0]`. Returns the input and weight dims.
pub(super) fn check_operands(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<([usize; 5], [usize; 5])> {
    let xd =
        x.shape().ndhwc().ok_or_else(|| Error::shape(op, "input (N, D, H, W, C)", x.dims()))?;
    let wd =
        w.shape().ndhwc().ok_or_else(|| Error::shape(op, "weight (K, kd, kh, kw, C)", w.dims()))?;
    if let Some(b) = b {
        if b.dims() != [wd[0]] {
            return Err(Error::shape(
                op,
                format!("bias [{}] for weight {wd:?}", wd[0]),
                format!("bias {:?}", b.dims()),
            ));
        }
    }
    if wd[4] != xd[4] {
        return Err(Error::shape(
            op,
            format!("weight (K, kd, kh, kw, {}) for input {xd:?}", xd[4]),
            format!("weight {wd:?}"),
        ));
    }
    Ok((xd, wd))
}
