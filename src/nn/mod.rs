//! Layers with parameters and the paper's networks: V-Net, 3D U-Net, and both with attention
//! gates, under the original PyTorch code's parameter names so weights move both ways.
//!
//! Every network takes a one-channel volume `(N, D, H, W, 1)` and returns softmax probabilities
//! of background and foreground `(N, D, H, W, 2)`, as the original does (it trains with
//! `nll_loss(log(output))`). [`build`] makes one by [`Arch`] and width; [`Network`] is the
//! interface the training loop, evaluation and [`segment`] use.
//!
//! # Example
//! ```no_run
//! use dnvs_engine::nn::{self, Arch, Mode};
//! use dnvs_engine::Tensor;
//! # fn main() -> dnvs_engine::Result<()> {
//! let mut net = nn::build(Arch::VNet, 16)?;
//! net.load_safetensors(std::path::Path::new("vnet.safetensors"))?;
//! let x = Tensor::zeros([1, 64, 64, 32, 1], dnvs_engine::Device::Cpu)?;
//! let probs = dnvs_engine::autograd::no_grad(|| net.forward(&x, Mode::Eval))?; // (1, 64, 64, 32, 2)
//! # Ok(()) }
//! ```

pub mod attention;
pub mod gpu_check;
pub mod init;
pub mod layers;
pub mod model;
pub mod segment;
pub mod unet3d;
pub mod vnet;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::autograd::Gradients;
use crate::io::weights;
use crate::optim::Adam;
use crate::tensor::{Device, Precision, Tensor};
use crate::{Error, Result};
use layers::Store;

/// The four networks of the paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// V-Net (mattmacy/vnet.pytorch, PReLU), width = channels of the first level (paper: 16).
    VNet,
    /// V-Net with attention-gated up transitions.
    VNetAtt,
    /// 3D U-Net (wolny/pytorch-3dunet), width = `f_maps` of the first level (default 32).
    UNet,
    /// 3D U-Net with attention gates on the skip connections.
    UNetAtt,
}

impl Arch {
    /// Every architecture, in the order of the paper's tables.
    pub const ALL: [Arch; 4] = [Arch::VNet, Arch::VNetAtt, Arch::UNet, Arch::UNetAtt];

    /// The width the paper uses: 16 for the V-Nets, 32 (pytorch-3dunet's `f_maps`) for U-Nets.
    pub fn default_width(self) -> usize {
        match self {
            Arch::VNet | Arch::VNetAtt => 16,
            Arch::UNet | Arch::UNetAtt => 32,
        }
    }

    /// Spatial sizes the network accepts are multiples of this (V-Net: 16, four stride-2 convs;
    /// U-Net: 8, three poolings without losing voxels).
    pub fn size_multiple(self) -> usize {
        match self {
            Arch::VNet | Arch::VNetAtt => 16,
            Arch::UNet | Arch::UNetAtt => 8,
        }
    }

    /// The command-line name: `vnet`, `vnet-att`, `unet`, `unet-att`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::VNet => "vnet",
            Arch::VNetAtt => "vnet-att",
            Arch::UNet => "unet",
            Arch::UNetAtt => "unet-att",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = Error;
    /// Parses `vnet`, `vnet-att`, `unet`, `unet-att` (also `vnet_att`, `unet3d`, `unet3d-att`).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "vnet" => Ok(Arch::VNet),
            "vnet-att" => Ok(Arch::VNetAtt),
            "unet" | "unet3d" => Ok(Arch::UNet),
            "unet-att" | "unet3d-att" => Ok(Arch::UNetAtt),
            _ => Err(Error::arg("arch", format!("'{s}' is not vnet, vnet-att, unet or unet-att"))),
        }
    }
}

/// Training (dropout on, seeded; batch statistics for every BatchNorm) or evaluation (dropout
/// off; the V-Net's ContBatchNorm3d still uses batch statistics, the attention gates' BatchNorm3d
/// their running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train { seed: u64 },
    Eval,
}

/// A segmentation network: one-channel volume in, two-class softmax probabilities out.
pub trait Network: Send {
    /// # Shapes
    /// `(N, D, H, W, 1)` -> `(N, D, H, W, 2)` (softmax over the last axis). V-Nets need `D, H, W`
    /// divisible by 16; U-Nets at least 8 (multiples of 8 keep every voxel through the pooling).
    ///
    /// # Errors
    /// [`Error::Shape`] for other inputs; any op's error.
    fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor>;
    /// The trainable parameters, in a fixed order (PyTorch's `state_dict` order).
    fn parameters(&self) -> Vec<Tensor>;
    /// PyTorch `state_dict` names of [`Network::parameters`], same order.
    fn parameter_names(&self) -> Vec<String>;
    /// Replaces the parameters (same order and shapes as [`Network::parameters`]). Tensors that
    /// are trainable leaves are kept as they are, so gradients of the next backward are keyed by
    /// them; anything else becomes a new leaf (read it back with [`Network::parameters`]).
    fn set_parameters(&mut self, p: Vec<Tensor>) -> Result<()>;
    /// Lends the parameters (same order) to `update` as the only handles to them, so an
    /// optimiser can update CPU buffers in place (see [`adam_step`]); what it leaves in the
    /// slots becomes the parameters, as with [`Network::set_parameters`].
    fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&mut [Tensor]) -> Result<()>,
    ) -> Result<()>;
    /// Writes every parameter and running statistic, PyTorch names and layouts, atomically.
    fn save_safetensors(&self, path: &Path) -> Result<()>;
    /// Every parameter and running statistic, PyTorch names and layouts, copied to the host
    /// (what [`Network::save_safetensors`] writes; `nn::model` adds the model card to it).
    fn state_dict(&self) -> Result<std::collections::BTreeMap<String, weights::Stored>>;
    /// Reads weights written by [`Network::save_safetensors`] or converted from a PyTorch
    /// `state_dict`; an error names every missing, unexpected or mis-shaped key.
    fn load_safetensors(&mut self, path: &Path) -> Result<()>;
    /// Moves every tensor to `device`.
    fn to_device(&mut self, device: Device) -> Result<()>;
    /// The convolutions' operand precision on a GPU (the CPU is always f32).
    fn precision(&self) -> Precision;
    /// Sets the convolutions' operand precision on a GPU, held with the parameters.
    fn set_precision(&mut self, p: Precision);

    /// The device the parameters live on.
    fn device(&self) -> Device {
        self.parameters().first().map(|p| p.device()).unwrap_or(Device::Cpu)
    }
    /// Spatial sizes of the input should be multiples of this.
    fn size_multiple(&self) -> usize {
        1
    }
    /// Number of trainable scalars.
    fn param_count(&self) -> usize {
        self.parameters().iter().map(|p| p.numel()).sum()
    }
}

/// One Adam step on `net`'s parameters with the gradients of a backward pass. The parameters
/// are lent to the optimiser as the only handles to them, so on the CPU their buffers are updated
/// in place: drop the loss (and every other tensor of the step's graph) before calling, since the
/// tape's saved inputs share the parameters' buffers and would force a copy.
///
/// # Errors
/// Those of [`Adam::step_in_place`].
pub fn adam_step(net: &mut dyn Network, adam: &mut Adam, grads: &Gradients) -> Result<()> {
    let g = grads.ordered(&net.parameters())?;
    net.update_parameters(&mut |p| adam.step_in_place(p, &g))
}

macro_rules! impl_network {
    ($t:ty, $multiple:expr) => {
        impl Network for $t {
            fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
                <$t>::forward(self, x, mode)
            }
            fn parameters(&self) -> Vec<Tensor> {
                self.store.parameters()
            }
            fn parameter_names(&self) -> Vec<String> {
                self.store.parameter_names()
            }
            fn set_parameters(&mut self, p: Vec<Tensor>) -> Result<()> {
                self.store.set_parameters(p)
            }
            fn update_parameters(
                &mut self,
                update: &mut dyn FnMut(&mut [Tensor]) -> Result<()>,
            ) -> Result<()> {
                self.store.update_parameters(update)
            }
            fn save_safetensors(&self, path: &Path) -> Result<()> {
                weights::write_safetensors(path, &self.store.state_dict()?)
            }
            fn state_dict(&self) -> Result<std::collections::BTreeMap<String, weights::Stored>> {
                self.store.state_dict()
            }
            fn load_safetensors(&mut self, path: &Path) -> Result<()> {
                let state = weights::read_safetensors(path)?;
                self.store.load_state_dict(&state, path)
            }
            fn to_device(&mut self, device: Device) -> Result<()> {
                self.store.to_device(device)
            }
            fn precision(&self) -> Precision {
                self.store.precision()
            }
            fn set_precision(&mut self, p: Precision) {
                self.store.set_precision(p)
            }
            fn device(&self) -> Device {
                self.store.device()
            }
            fn size_multiple(&self) -> usize {
                $multiple
            }
            fn param_count(&self) -> usize {
                self.store.param_count()
            }
        }
    };
}

impl_network!(vnet::VNet, 16);
impl_network!(unet3d::UNet3d, 8);

/// The seed [`build`] initialises with.
pub const DEFAULT_SEED: u64 = 0x5EED;

/// A freshly initialised network on the CPU (seed [`DEFAULT_SEED`]).
///
/// # Errors
/// [`Error::Config`] for a width the architecture cannot take (0; for U-Nets, a width whose
/// layers do not split into GroupNorm groups).
pub fn build(arch: Arch, width: usize) -> Result<Box<dyn Network>> {
    build_seeded(arch, width, DEFAULT_SEED)
}

/// A network initialised from `seed` (PyTorch's default distributions, see [`init`]).
pub fn build_seeded(arch: Arch, width: usize, seed: u64) -> Result<Box<dyn Network>> {
    build_into(Store::new(seed), arch, width)
}

fn build_into(store: Store, arch: Arch, width: usize) -> Result<Box<dyn Network>> {
    Ok(match arch {
        Arch::VNet => Box::new(vnet::VNet::new(store, width, false)?),
        Arch::VNetAtt => Box::new(vnet::VNet::new(store, width, true)?),
        Arch::UNet => Box::new(unet3d::UNet3d::new(store, width, false)?),
        Arch::UNetAtt => Box::new(unet3d::UNet3d::new(store, width, true)?),
    })
}

/// Number of trainable scalars of `arch` at `width`, without allocating the weights.
pub fn param_count(arch: Arch, width: usize) -> Result<usize> {
    Ok(build_into(Store::counting(), arch, width)?.param_count())
}

/// The PyTorch `state_dict` names (parameters and running statistics) of `arch` at `width`.
pub fn state_names(arch: Arch, width: usize) -> Result<Vec<String>> {
    let store = Store::counting();
    Ok(match arch {
        Arch::VNet | Arch::VNetAtt => {
            vnet::VNet::new(store, width, arch == Arch::VNetAtt)?.store.state_names()
        }
        Arch::UNet | Arch::UNetAtt => {
            unet3d::UNet3d::new(store, width, arch == Arch::UNetAtt)?.store.state_names()
        }
    })
}

/// The width of a checkpoint written for `arch` (read from its first convolution), so a caller
/// need not be told it.
///
/// # Errors
/// [`Error::Format`] when the file lacks the first layer of `arch`.
pub fn checkpoint_width(arch: Arch, path: &Path) -> Result<usize> {
    let state = weights::read_safetensors(path)?;
    let (key, axis) = match arch {
        Arch::VNet | Arch::VNetAtt => ("in_tr.conv1.weight", 0),
        Arch::UNet | Arch::UNetAtt => ("final_conv.weight", 1),
    };
    state.get(key).and_then(|t| t.dims.get(axis).copied()).ok_or_else(|| {
        Error::format(path, format!("no {key}: not a {arch} checkpoint (check --arch)"))
    })
}

/// Dropout sites of one forward pass: a mask per site from the mode's seed; the identity in eval.
pub(crate) struct Dropout {
    seed: Option<u64>,
    site: u64,
}

impl Dropout {
    pub(crate) fn new(mode: Mode) -> Self {
        let seed = match mode {
            Mode::Train { seed } => Some(seed),
            Mode::Eval => None,
        };
        Dropout { seed, site: 0 }
    }

    pub(crate) fn apply(&mut self, x: &Tensor, p: f32) -> Result<Tensor> {
        let Some(seed) = self.seed else { return Ok(x.clone()) };
        self.site += 1;
        crate::ops::channel_dropout(x, p, init::mix(seed, self.site))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
        }
        assert!("resnet".parse::<Arch>().is_err());
    }

    #[test]
    fn unet_groups_must_divide() {
        // f = 12: encoder 0's first conv has 6 channels (6 groups), fine; 12 -> 8 groups is not.
        assert!(param_count(Arch::UNet, 12).is_err());
        assert!(param_count(Arch::VNet, 0).is_err());
    }
}
