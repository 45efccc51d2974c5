//! 3-D convolution: shape checks, dispatch to the CPU kernels, and the backward pass on the tape.

use crate::autograd;
use crate::backend::cpu::conv3d::{self as cpu, ConvGeom};
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// 3-D convolution with the same `stride` and zero `padding` on every axis.
///
/// # Shapes
/// `x: (N, D, H, W, C)`, `w: (K, kd, kh, kw, C)`, `b: (K)` -> `(N, D', H', W', K)` with
/// `D' = (D + 2*padding - kd) / stride + 1`.
///
/// # Errors
/// [`Error::Shape`] when a tensor is not 5-D (the bias 1-D of length K), when channels disagree
/// or the kernel is larger than the padded input; [`Error::Arg`] for a zero stride;
/// [`Error::Device`] for tensors not held as CPU f32 (the CUDA path is dispatched elsewhere).
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
    const OP: &str = "conv3d";
    if super::cuda::any_cuda(&[&[x, w], b.as_slice()].concat()) {
        return super::cuda::conv3d(x, w, b, stride, padding);
    }
    let (xd, wd) = check_operands(OP, x, w, b)?;
    let [n, d, h, wi, c] = xd;
    let [k, kd, kh, kw, wc] = wd;
    if wc != c {
        return Err(Error::shape(
            OP,
            format!("weight (K, kd, kh, kw, {c}) for input {xd:?}"),
            format!("weight {wd:?}"),
        ));
    }
    if stride == 0 {
        return Err(Error::arg(OP, "stride must be at least 1"));
    }
    let g = ConvGeom::new(n, [d, h, wi], c, k, [kd, kh, kw], stride, padding).ok_or_else(|| {
        Error::shape(
            OP,
            format!("a kernel no larger than the input {xd:?} padded by {padding}"),
            format!("weight {wd:?}"),
        )
    })?;
    let bias = b.map(|b| b.as_slice()).transpose()?;
    let out_data = cpu::fwd(x.as_slice()?, w.as_slice()?, bias, &g);
    let [od, oh, ow] = g.output;
    let out = Tensor::from_vec(out_data, [n, od, oh, ow, k])?;

    let mut inputs = vec![x, w];
    inputs.extend(b);
    if !autograd::needs_grad(&inputs) {
        return Ok(out);
    }
    let (xs, ws, has_bias) = (x.clone(), w.clone(), b.is_some());
    Ok(autograd::record(OP, out, &inputs, move |grad_out| {
        let go = grad_out.as_slice()?;
        let gx = xs
            .tracks_grad()
            .then(|| Tensor::from_vec(cpu::bwd_input(go, ws.as_slice()?, &g), xs.shape()))
            .transpose()?;
        let gw = ws
            .tracks_grad()
            .then(|| Tensor::from_vec(cpu::bwd_weight(xs.as_slice()?, go, &g), ws.shape()))
            .transpose()?;
        let mut grads = vec![gx, gw];
        if has_bias {
            grads.push(Some(Tensor::from_vec(cpu::bwd_bias(go, g.k), [g.k])?));
        }
        Ok(grads)
    }))
}

/// Checks what `conv3d` and `conv_transpose3d` share: a 5-D input and weight, a bias of length
/// `w.dims()[0]`, everything on the CPU. Returns the input and weight dims.
pub(super) fn check_operands(
    op: &'static str,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
) -> Result<([usize; 5], [usize; 5])> {
    let dims = check_shapes(op, x, w, b)?;
    for t in std::iter::once(x).chain(Some(w)).chain(b) {
        if t.device() != Device::Cpu {
            return Err(Error::Device {
                op,
                msg: format!("the CPU kernel got a tensor on {:?}", t.device()),
            });
        }
    }
    Ok(dims)
}

/// The device-independent part of [`check_operands`], shared with the GPU ops: a 5-D input and
/// weight and a bias of length `w.dims()[0]`.
pub(super) fn check_shapes(
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
    Ok((xd, wd))
}
