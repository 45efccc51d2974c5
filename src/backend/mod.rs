//! Compute backends. `cpu` is the reference every other backend is tested against; `cuda` runs
//! NVRTC-compiled kernels from `kernels/`. Both are called only from `crate::ops` (and the losses
//! and the optimiser), which check shapes first and pick the backend by where the storage lives.
//!
//! Layering: `backend` depends on `tensor` only; `autograd`, `ops`, `loss` and `optim` sit above
//! it (checked by `tests/layering.rs`).

pub mod cpu;
pub mod cuda;
pub mod norm;

use crate::tensor::{Device, Storage, Tensor};
use crate::{Error, Result};

/// The one device all `ts` live on, or [`Error::Device`] naming `op` and two devices found. Every
/// op calls this once, then its backend function matches on that device.
pub fn device_of(op: &'static str, ts: &[&Tensor]) -> Result<Device> {
    let first = ts.first().map(|t| t.device()).unwrap_or(Device::Cpu);
    if let Some(other) = ts.iter().map(|t| t.device()).find(|&d| d != first) {
        return Err(Error::Device {
            op,
            msg: format!("inputs on different devices ({first} and {other}); move them to one"),
        });
    }
    Ok(first)
}

/// A tensor of `shape` filled with `value` on `device`; on a GPU a fill kernel writes it, so
/// nothing crosses the bus (the seed of every backward, for one).
///
/// # Errors
/// Those of the device (a GPU that cannot be reached, a failed launch).
pub fn full(shape: impl Into<crate::tensor::Shape>, value: f32, device: Device) -> Result<Tensor> {
    match device {
        Device::Cpu => Tensor::full(shape, value, device),
        Device::Cuda(ordinal) => cuda::elementwise::full(shape, value, ordinal),
    }
}

/// `a + b` on whatever device holds them, without recording anything: the forward of `ops::add`
/// and how the tape sums gradients that meet.
///
/// # Errors
/// [`Error::Shape`] for different shapes, [`Error::Device`] for different devices.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    device_of("add", &[a, b])?;
    if a.dims() != b.dims() {
        return Err(Error::shape("add", a.dims(), b.dims()));
    }
    match (a.storage(), b.storage()) {
        (Storage::Cpu(x), Storage::Cpu(y)) => {
            let _t = cpu::profile::scope(|| format!("add {:?}", a.dims()));
            Tensor::from_vec(cpu::elementwise::map2(x, y, |p, q| p + q), a.shape())
        }
        (Storage::Cuda(_), Storage::Cuda(_)) => cuda::elementwise::add(a, b),
        _ => Err(Error::Device {
            op: "add",
            msg: format!("needs f32 storage, got {:?} and {:?}", a.dtype(), b.dtype()),
        }),
    }
}
