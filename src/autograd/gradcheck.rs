//! Finite-difference gradient checks: the tape's gradients of a function against central
//! differences, element by element. Tests use it on tiny shapes for every differentiable op.

use super::{backward_with, no_grad};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Fixed pseudo-random weights in `[-1, 1)` (xorshift), so `sum(f(x) * r)` mixes every output
/// with a different weight and a wrong gradient cannot hide behind symmetry.
fn weights(n: usize) -> Vec<f32> {
    let mut s: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn weighted_sum(out: &Tensor, r: &[f32]) -> Result<f64> {
    Ok(out.to_vec()?.iter().zip(r).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum())
}

/// Checks the autograd gradients of `sum(f(inputs) * r)` (with `r` fixed and pseudo-random)
/// against central finite differences with step `eps`, for every input that tracks gradients.
/// An element passes when `|analytic - numeric| <= atol + rtol * |numeric|`. The objective is
/// summed in f64 and the step is the one f32 actually took (`(x + eps) - x`), so float32
/// rounding costs as little accuracy as it can.
///
/// Inputs that track gradients are replaced by fresh leaves with the same values, so `f` may be
/// given intermediate results too. Keep shapes tiny: `f` runs twice per input element.
///
/// # Example
/// ```
/// use dnvs_engine::autograd::gradcheck::gradcheck;
/// use dnvs_engine::{ops, Tensor};
///
/// let x = Tensor::param(vec![0.3, -1.2, 0.8, 2.0], [1, 1, 1, 2, 2])?;
/// gradcheck(|t| ops::softmax_channels(&t[0]), &[x], 1e-2, 1e-2, 1e-3)?;
/// # Ok::<(), dnvs_engine::Error>(())
/// ```
///
/// # Errors
/// [`Error::Arg`] naming the number of mismatches and the first five (input, element, analytic,
/// numeric); any error of `f` or of the backward pass.
pub fn gradcheck(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    eps: f32,
    rtol: f32,
    atol: f32,
) -> Result<()> {
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|t| if t.tracks_grad() { t.detach().requires_grad() } else { t.clone() })
        .collect();
    if !leaves.iter().any(Tensor::tracks_grad) {
        return Err(Error::arg("gradcheck", "no input tracks gradients"));
    }
    let out = f(&leaves)?;
    let r = weights(out.numel());
    let grads = backward_with(&out, Tensor::from_vec(r.clone(), out.shape())?)?;
    let detached: Vec<Tensor> = leaves.iter().map(Tensor::detach).collect();

    let mut bad = Vec::new();
    let mut checked = 0usize;
    for (i, x) in leaves.iter().enumerate().filter(|(_, x)| x.tracks_grad()) {
        let base = x.to_vec()?;
        let analytic = match grads.get(x) {
            Some(g) => g.to_vec()?,
            None => vec![0.0; base.len()],
        };
        let objective = |j: usize, delta: f32| -> Result<(f64, f32)> {
            let mut v = base.clone();
            v[j] += delta;
            let step = v[j] - base[j];
            let mut ins = detached.clone();
            ins[i] = Tensor::from_vec(v, x.shape())?.to_device(x.device())?;
            let o = no_grad(|| f(&ins))?;
            Ok((weighted_sum(&o, &r)?, step))
        };
        for (j, &a) in analytic.iter().enumerate() {
            let (fp, hp) = objective(j, eps)?;
            let (fm, hm) = objective(j, -eps)?;
            let numeric = (fp - fm) / f64::from(hp - hm);
            let a = f64::from(a);
            checked += 1;
            // Written so that a NaN on either side counts as a mismatch.
            let ok = (a - numeric).abs() <= f64::from(atol) + f64::from(rtol) * numeric.abs();
            if !ok {
                bad.push(format!("input {i} element {j}: analytic {a:.6e}, numeric {numeric:.6e}"));
            }
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    let first: Vec<&str> = bad.iter().take(5).map(String::as_str).collect();
    Err(Error::arg(
        "gradcheck",
        format!(
            "{} of {checked} gradient elements differ (eps {eps}, rtol {rtol}, atol {atol}); first: {}",
            bad.len(),
            first.join("; ")
        ),
    ))
}
