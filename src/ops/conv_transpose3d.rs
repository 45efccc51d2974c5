//! 3-D transposed convolution (the V-Net's up convolution): shape checks, dispatch, backward.

use super::conv3d::check_operands;
use crate::autograd;
use crate::backend::cpu::conv_transpose3d as cpu;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Transposed 3-D convolution, no padding.
///
/// # Shapes
/// `x: (N, D, H, W, C)`, `w: (K, kd, kh, kw, C)` (K output channels; PyTorch's
/// `(C, K, kd, kh, kw)` is converted at the boundary), `b: (K)` ->
/// `(N, (D-1)*stride + kd, (H-1)*stride + kh, (W-1)*stride + kw, K)`.
///
/// # Errors
/// [`Error::Shape`] for tensors of the wrong rank, a weight whose last axis is not C, a bias not
/// of length K, or an empty input or kernel; [`Error::Arg`] for a zero stride; [`Error::Device`]
/// for tensors not held as CPU f32.
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
    const OP: &str = "conv_transpose3d";
    if super::cuda::any_cuda(&[&[x, w], b.as_slice()].concat()) {
        return super::cuda::conv_transpose3d(x, w, b, stride);
    }
    let (xd, wd) = check_operands(OP, x, w, b)?;
    let [k, kd, kh, kw, wc] = wd;
    if wc != xd[4] {
        return Err(Error::shape(
            OP,
            format!("weight (K, kd, kh, kw, {}) for input {xd:?}", xd[4]),
            format!("weight {wd:?}"),
        ));
    }
    if stride == 0 {
        return Err(Error::arg(OP, "stride must be at least 1"));
    }
    let g = cpu::geometry(xd, k, [kd, kh, kw], stride).ok_or_else(|| {
        Error::shape(OP, "a non-empty input and kernel", format!("input {xd:?}, weight {wd:?}"))
    })?;
    let bias = b.map(|b| b.as_slice()).transpose()?;
    let out_data = cpu::fwd(x.as_slice()?, w.as_slice()?, bias, &g);
    let [od, oh, ow] = g.input;
    let out = Tensor::from_vec(out_data, [xd[0], od, oh, ow, k])?;

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
            let gb = crate::backend::cpu::conv3d::bwd_bias(go, k);
            grads.push(Some(Tensor::from_vec(gb, [k])?));
        }
        Ok(grads)
    }))
}
