//! Softmax and log-softmax over the channel (last) axis.

use crate::tensor::Tensor;
use crate::{Error, Result};

pub fn softmax_channels(_x: &Tensor) -> Result<Tensor> {
    Err(Error::NotImplemented("softmax_channels"))
}

pub fn log_softmax_channels(_x: &Tensor) -> Result<Tensor> {
    Err(Error::NotImplemented("log_softmax_channels"))
}
