//! Elementwise ops and activations.

use crate::tensor::Tensor;
use crate::{Error, Result};

/// `a + b`, same shapes.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() {
        return Err(Error::shape("add", a.dims(), b.dims()));
    }
    let (x, y) = (a.as_slice()?, b.as_slice()?);
    let out = Tensor::from_vec(x.iter().zip(y).map(|(p, q)| p + q).collect(), a.shape())?;
    Ok(crate::autograd::record("add", out, &[a, b], |g| Ok(vec![Some(g.clone()), Some(g.clone())])))
}

/// `a * b`, same shapes.
pub fn mul(_a: &Tensor, _b: &Tensor) -> Result<Tensor> {
    Err(Error::NotImplemented("mul"))
}

/// `a * s` for a constant `s`.
pub fn scale(_a: &Tensor, _s: f32) -> Result<Tensor> {
    Err(Error::NotImplemented("scale"))
}

/// `x * g` where `g: (N, D, H, W, 1)` is broadcast over the channels of `x: (N, D, H, W, C)`
/// (attention gates; the sigmoid is applied by the caller).
pub fn gate_mul(_x: &Tensor, _g: &Tensor) -> Result<Tensor> {
    Err(Error::NotImplemented("gate_mul"))
}

pub fn relu(_x: &Tensor) -> Result<Tensor> {
    Err(Error::NotImplemented("relu"))
}

/// PReLU with one slope per channel (`weight: (C)`) or one shared slope (`weight: (1)`).
pub fn prelu(_x: &Tensor, _weight: &Tensor) -> Result<Tensor> {
    Err(Error::NotImplemented("prelu"))
}

pub fn elu(_x: &Tensor, _alpha: f32) -> Result<Tensor> {
    Err(Error::NotImplemented("elu"))
}

pub fn sigmoid(_x: &Tensor) -> Result<Tensor> {
    Err(Error::NotImplemented("sigmoid"))
}
