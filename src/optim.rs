//! Optimisers and schedules: Adam with L2 weight decay exactly as `torch.optim.Adam`, StepLR.
//!
//! [`Adam::step_in_place`] replaces the parameters it is lent by their updated leaves, rewriting a
//! CPU parameter's buffer in place when nothing else shares it (a network lends its parameters
//! that way, `nn::Network::update_parameters`); [`Adam::step`] returns new leaves and leaves its
//! arguments alone. The moments live in the optimiser, indexed by the parameters' order, and
//! serialise with serde so a run can resume bit for bit.

use serde::{Deserialize, Serialize};

use crate::backend::cpu::optim::{adam_update, adam_update_in_place, AdamStep};
use crate::backend::cuda::optim::{AdamHyper, CudaAdam};
use crate::backend::device_of;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// [`Error::Shape`] with a described expectation (`Error::shape` would quote a string).
/// Adam's hyper-parameters (`torch.optim.Adam(lr, betas=(beta1, beta2), eps, weight_decay)`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// L2 penalty added to the gradient (`grad += weight_decay * param`), not AdamW's decay.
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    /// PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay.
    fn default() -> Self {
        AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Adam's state: the step count and the first and second moments of every parameter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AdamState {
    /// Steps taken (PyTorch's `state["step"]`).
    pub step: u64,
    /// First moments, one vector per parameter (empty before the first step).
    pub m: Vec<Vec<f32>>,
    /// Second moments, one vector per parameter.
    pub v: Vec<Vec<f32>>,
}

/// `torch.optim.Adam` with L2 weight decay and bias-corrected moments.
pub struct Adam {
    cfg: AdamConfig,
    /// The moments while the parameters live on the CPU (or before the first GPU step).
    state: AdamState,
    /// The moments while the parameters live on a GPU: they stay there between steps and come
    /// to the host only for [`Adam::state`] (checkpoints).
    gpu: Option<CudaAdam>,
}

impl std::fmt::Debug for Adam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = if self.gpu.is_some() { "gpu" } else { "cpu" };
        write!(f, "Adam({:?}, step {}, moments on the {on})", self.cfg, self.steps_taken())
    }
}

impl Adam {
    pub fn new(cfg: AdamConfig) -> Self {
        Adam { cfg, state: AdamState::default(), gpu: None }
    }

    /// Resumes from a saved state (its moments must match the parameters at the next step).
    pub fn from_state(cfg: AdamConfig, state: AdamState) -> Self {
        Adam { cfg, state, gpu: None }
    }

    pub fn lr(&self) -> f32 {
        self.cfg.lr
    }

    /// Sets the learning rate for the following steps (schedules call this per epoch).
    pub fn set_lr(&mut self, lr: f32) {
        self.cfg.lr = lr;
    }

    pub fn config(&self) -> &AdamConfig {
        &self.cfg
    }

    /// The state to save for a resume (with moments on a GPU, use [`Adam::state_synced`]).
    pub fn state(&self) -> AdamState {
        self.state.clone()
    }

    /// The state with the moments brought to the host first when they live on a GPU (one
    /// download per moment tensor): what a checkpoint writes. [`Adam::state`] alone returns the
    /// copy taken by the last call of this (or the CPU moments themselves).
    ///
    /// # Errors
    /// [`Error::Cuda`] when the download fails.
    pub fn state_synced(&mut self) -> Result<AdamState> {
        if let Some(g) = &self.gpu {
            let (m, v) = g.moments()?;
            self.state = AdamState { step: g.step, m, v };
        }
        Ok(self.state.clone())
    }

    /// Steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.gpu.as_ref().map_or(self.state.step, |g| g.step)
    }

    /// One Adam step: returns the updated parameters as new trainable leaves, in order.
    ///
    /// # Example
    /// ```
    /// use dnvs_engine::optim::{Adam, AdamConfig};
    /// use dnvs_engine::{autograd, ops, Tensor};
    ///
    /// let mut adam = Adam::new(AdamConfig { lr: 0.1, ..AdamConfig::default() });
    /// let mut w = Tensor::param(vec![1.0, -2.0], [2])?;
    /// for _ in 0..3 {
    ///     let loss = ops::mul(&w, &w)?; // minimise w^2, summed by the seed below
    ///     let g = autograd::backward_with(&loss, Tensor::from_vec(vec![1.0; 2], [2])?)?;
    ///     let grad = g.get(&w).expect("w is used").clone();
    ///     w = adam.step(&[w], &[grad])?.remove(0);
    /// }
    /// assert!(w.to_vec()?.iter().all(|v| v.abs() < 2.0));
    /// # Ok::<(), dnvs_engine::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Shape`] when `params` and `grads` differ in count or shape, or do not match the
    /// moments of earlier steps; [`Error::Device`] for non-CPU tensors.
    pub fn step(&mut self, params: &[Tensor], grads: &[Tensor]) -> Result<Vec<Tensor>> {
        // The copies share their buffers with `params`, so the update below writes fresh ones.
        let mut out = params.to_vec();
        self.step_in_place(&mut out, grads)?;
        Ok(out)
    }

    /// One Adam step that replaces each of `params` by its updated trainable leaf. A CPU
    /// parameter that nothing else shares (see [`Tensor::try_into_cpu_vec`]) is updated in its
    /// own buffer, so a training step fills no fresh pages; a shared one gets a new buffer with
    /// the same values. On a GPU the moments stay there and one multi-tensor launch updates all.
    /// On an error every slot still holds a valid tensor (the old or the new parameter).
    ///
    /// # Errors
    /// As [`Adam::step`].
    pub fn step_in_place(&mut self, params: &mut [Tensor], grads: &[Tensor]) -> Result<()> {
        let op = "adam";
        if params.len() != grads.len() {
            return Err(Error::shape(
                op,
                format!("{} gradients (one per parameter)", params.len()),
                grads.len(),
            ));
        }
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            if p.dims() != g.dims() {
                let want = format!("gradient {i} shaped like its parameter {:?}", p.dims());
                return Err(Error::shape(op, want, g.dims()));
            }
        }
        let all: Vec<&Tensor> = params.iter().chain(grads).collect();
        if let Device::Cuda(ordinal) = device_of(op, &all)? {
            let new = self.step_cuda(ordinal, params, grads)?;
            params.clone_from_slice(&new);
            return Ok(());
        }
        if self.gpu.is_some() {
            return Err(Error::Device {
                op,
                msg: "the moments live on a GPU but the parameters on the CPU".into(),
            });
        }
        if self.state.m.is_empty() && self.state.step == 0 {
            self.state.m = params.iter().map(|p| vec![0.0; p.numel()]).collect();
            self.state.v = self.state.m.clone();
        }
        let sizes_ok = self.state.m.len() == params.len()
            && self.state.v.len() == params.len()
            && params
                .iter()
                .zip(&self.state.m)
                .zip(&self.state.v)
                .all(|((p, m), v)| m.len() == p.numel() && v.len() == p.numel());
        if !sizes_ok {
            let want: Vec<usize> = self.state.m.iter().map(Vec::len).collect();
            let got: Vec<usize> = params.iter().map(Tensor::numel).collect();
            return Err(Error::Shape {
                op,
                expected: format!("parameters of {want:?} elements (the optimiser's state)"),
                got: format!("{got:?}"),
            });
        }
        let t = self.state.step + 1;
        // PyTorch computes the bias corrections in double precision on the host.
        let (b1, b2) = (f64::from(self.cfg.beta1), f64::from(self.cfg.beta2));
        let s = AdamStep {
            beta1: self.cfg.beta1,
            beta2: self.cfg.beta2,
            eps: self.cfg.eps,
            weight_decay: self.cfg.weight_decay,
            step_size: (f64::from(self.cfg.lr) / (1.0 - b1.powf(t as f64))) as f32,
            bias2_sqrt: (1.0 - b2.powf(t as f64)).sqrt() as f32,
        };
        // Every operand is checked before the first parameter is touched, so an error leaves
        // `params` as it was.
        for t in params.iter().chain(grads) {
            cpu(t)?;
        }
        for (i, g) in grads.iter().enumerate() {
            let (gs, m, v) = (cpu(g)?, &mut self.state.m[i], &mut self.state.v[i]);
            let p = std::mem::replace(&mut params[i], Tensor::scalar(0.0));
            let shape = p.shape().clone();
            let data = match p.try_into_cpu_vec() {
                Ok(mut own) => {
                    adam_update_in_place(&s, &mut own, gs, m, v);
                    own
                }
                Err(shared) => {
                    params[i] = shared;
                    adam_update(&s, cpu(&params[i])?, gs, m, v)
                }
            };
            params[i] = Tensor::param(data, shape).expect("the parameter's own length fits it");
        }
        self.state.step = t;
        Ok(())
    }
}

impl Adam {
    /// [`Adam::step`] for parameters on GPU `ordinal`: one multi-tensor launch, the moments on
    /// the GPU (seeded once from the host state when a run resumes), nothing read back.
    fn step_cuda(
        &mut self,
        ordinal: usize,
        params: &[Tensor],
        grads: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        if self.gpu.is_none() {
            let s = &self.state;
            let moments = if s.m.is_empty() {
                CudaAdam::new()
            } else {
                CudaAdam::from_moments(ordinal, s.step, &s.m, &s.v)?
            };
            self.gpu = Some(moments);
        }
        let c = self.cfg;
        let hp = AdamHyper {
            lr: c.lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
        };
        self.gpu.as_mut().expect("set just above").step(hp, params, grads)
    }
}

fn cpu(t: &Tensor) -> Result<&[f32]> {
    t.as_slice().map_err(|_| Error::Device {
        op: "adam",
        msg: format!(
            "the CPU optimiser needs CPU f32 tensors, got {:?} {:?}",
            t.device(),
            t.dtype()
        ),
    })
}

/// `torch.optim.lr_scheduler.StepLR`: the learning rate times `gamma` every `step_size` epochs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLR {
    pub step_size: usize,
    pub gamma: f32,
}

impl StepLR {
    /// `base_lr * gamma^(epoch / step_size)` (integer division; a `step_size` of 0 is read as 1).
    pub fn lr_at(&self, base_lr: f32, epoch: usize) -> f32 {
        let k = epoch / self.step_size.max(1);
        (f64::from(base_lr) * f64::from(self.gamma).powi(k as i32)) as f32
    }
}
