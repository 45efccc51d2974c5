//! Launcher for `kernels/optim.cu`: Adam over every parameter tensor in one launch
//! (multi-tensor apply), exactly `torch.optim.Adam` with L2 weight decay. Moments live on the GPU
//! between steps; new parameters are fresh tensors (tensors are immutable).

use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, PushKernelArg};

use super::launch::{self, kernel_name, Pass};
use super::{alloc, common_gpu, cuda_err, f32_slice, wrap, zeros};
use crate::tensor::Tensor;
use crate::{Error, Result};

const STEM: &str = "optim";
const OP: &str = "adam";

/// Per-step scalars; mirrors `struct AdamParams` in kernels/optim.cu (tested below).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AdamParams {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// `lr / (1 - beta1^t)`
    pub step_size: f32,
    /// `1 / sqrt(1 - beta2^t)`
    pub inv_sqrt_bc2: f32,
}

// SAFETY: #[repr(C)] with six f32 fields and no padding, the same layout as the CUDA struct.
unsafe impl DeviceRepr for AdamParams {}

/// One row of the tensor table; mirrors `struct AdamTensor` in kernels/optim.cu: five device
/// pointers and a length, 48 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdamTensor {
    pub p: u64,
    pub g: u64,
    pub m: u64,
    pub v: u64,
    pub p_out: u64,
    pub n: i64,
}

// SAFETY: #[repr(C)], five u64 and one i64, no padding: the CUDA struct's layout (tested below).
unsafe impl DeviceRepr for AdamTensor {}

/// Adam hyperparameters (as `crate::optim::AdamConfig`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// First and second moments on the host, one vector per parameter each.
pub type Moments = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// Adam's moments on one GPU, one pair per parameter, in the parameters' order.
pub struct CudaAdam {
    pub step: u64,
    m: Vec<CudaSlice<f32>>,
    v: Vec<CudaSlice<f32>>,
}

impl CudaAdam {
    pub fn new() -> Self {
        CudaAdam { step: 0, m: Vec::new(), v: Vec::new() }
    }

    /// Moments uploaded from the host (a resumed run's checkpoint) to GPU `ordinal`, after `step`
    /// steps; `m` and `v` hold one vector per parameter, in the parameters' order.
    pub fn from_moments(ordinal: usize, step: u64, m: &[Vec<f32>], v: &[Vec<f32>]) -> Result<Self> {
        let stream = super::stream(ordinal)?;
        let up = |h: &Vec<f32>| {
            crate::tensor::count_transfer(true, std::mem::size_of_val(h.as_slice()));
            stream.clone_htod(h).map_err(cuda_err)
        };
        Ok(CudaAdam {
            step,
            m: m.iter().map(up).collect::<Result<_>>()?,
            v: v.iter().map(up).collect::<Result<_>>()?,
        })
    }

    /// The moments copied to the host (for checkpoints), `(m, v)` per parameter.
    pub fn moments(&self) -> Result<Moments> {
        let down = |s: &CudaSlice<f32>| {
            crate::tensor::count_transfer(false, s.len() * 4);
            s.stream().clone_dtoh(s).map_err(cuda_err)
        };
        Ok((
            self.m.iter().map(down).collect::<Result<_>>()?,
            self.v.iter().map(down).collect::<Result<_>>()?,
        ))
    }

    /// One Adam step over every parameter; returns the new parameters (same order and shapes).
    ///
    /// # Errors
    /// [`Error::Shape`] when the lists differ in length or a gradient's shape differs from its
    /// parameter's, or when the parameter list changes between steps.
    pub fn step(
        &mut self,
        hp: AdamHyper,
        params: &[Tensor],
        grads: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        if params.len() != grads.len() {
            return Err(Error::shape(OP, format!("{} gradients", params.len()), grads.len()));
        }
        if params.is_empty() {
            return Ok(Vec::new());
        }
        for (p, g) in params.iter().zip(grads) {
            if p.dims() != g.dims() {
                return Err(Error::shape(OP, p.dims(), g.dims()));
            }
        }
        let all: Vec<&Tensor> = params.iter().chain(grads).collect();
        let gpu = common_gpu(OP, &all)?;
        if self.m.is_empty() {
            for p in params {
                self.m.push(zeros(&gpu, p.numel())?);
                self.v.push(zeros(&gpu, p.numel())?);
            }
        } else if self.m.len() != params.len()
            || self.m.iter().zip(params).any(|(m, p)| m.len() != p.numel())
        {
            return Err(Error::shape(OP, "the parameters of the previous steps", params.len()));
        }
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - f64::from(hp.beta1).powi(t);
        let bc2 = 1.0 - f64::from(hp.beta2).powi(t);
        let ap = AdamParams {
            beta1: hp.beta1,
            beta2: hp.beta2,
            eps: hp.eps,
            weight_decay: hp.weight_decay,
            step_size: (f64::from(hp.lr) / bc1) as f32,
            inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
        };

        let mut outs: Vec<CudaSlice<f32>> =
            params.iter().map(|p| alloc(&gpu, p.numel())).collect::<Result<_>>()?;
        let stream = gpu.stream.clone();
        let mut table: Vec<AdamTensor> = Vec::with_capacity(params.len());
        let mut longest = 0usize;
        for i in 0..params.len() {
            let (pp, _a) = f32_slice(OP, &params[i])?.device_ptr(&stream);
            let (gp, _b) = f32_slice(OP, &grads[i])?.device_ptr(&stream);
            let (mp, _c) = self.m[i].device_ptr_mut(&stream);
            let (vp, _d) = self.v[i].device_ptr_mut(&stream);
            let (op, _e) = outs[i].device_ptr_mut(&stream);
            let n = params[i].numel();
            longest = longest.max(n);
            table.push(AdamTensor { p: pp, g: gp, m: mp, v: vp, p_out: op, n: n as i64 });
        }
        // Stream-ordered: the upload and the table's later free are queued behind/after the launch.
        // The table (48 bytes a tensor) is the step's one upload: pointers, not values.
        crate::tensor::count_transfer(true, std::mem::size_of_val(table.as_slice()));
        let table_dev = stream.clone_htod(&table).map_err(cuda_err)?;
        let count = i32::try_from(params.len()).map_err(|_| Error::arg(OP, "too many tensors"))?;
        if params.len() > 65535 {
            return Err(Error::arg(OP, "more than 65535 parameter tensors"));
        }
        let name = kernel_name(OP, Pass::Fwd, None, "f32");
        let f = gpu.function(STEM, &name)?;
        let cfg = launch::grid_rows(&gpu, longest, params.len())?;
        {
            let mut b = stream.launch_builder(&f);
            b.arg(&ap).arg(&table_dev).arg(&count);
            // SAFETY: adam_fwd_f32(hp, table, tensors): the table holds `count` rows of
            // (p, g, m, v, p_out, n) = AdamTensor, each pointer to n floats owned by `params`,
            // `grads`, self.m, self.v and `outs`, all alive until the launch is queued and freed
            // only stream-ordered after it; grid y = count; every p_out element is written.
            unsafe { launch::launch(&gpu, &name, &mut b, cfg)? };
        }
        drop(table_dev);
        params
            .iter()
            .zip(outs.drain(..))
            .map(|(p, o)| wrap(&gpu, o, p.shape()).map(|t| t.requires_grad()))
            .collect()
    }
}

impl Default for CudaAdam {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structs_mirror_optim_cu() {
        assert_eq!(std::mem::size_of::<AdamParams>(), 24);
        assert_eq!(std::mem::size_of::<AdamTensor>(), 48);
        assert_eq!(std::mem::offset_of!(AdamTensor, n), 40);
        let src = super::super::sources::OPTIM;
        let f = super::super::conv3d::c_struct_fields;
        assert_eq!(
            f(src, "AdamParams"),
            ["beta1", "beta2", "eps", "weight_decay", "step_size", "inv_sqrt_bc2"]
        );
        assert_eq!(f(src, "AdamTensor"), ["p", "g", "m", "v", "p_out", "n"]);
    }
}
