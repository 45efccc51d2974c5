//! The 3D U-Net of wolny/pytorch-3dunet as the paper configures it: four levels of feature maps
//! `f, 2f, 4f, 8f` (the library's default `f = 32`), `DoubleConv` blocks of two
//! conv3x3x3 -> ReLU -> GroupNorm ("crg", convolutions without bias), max pooling down, nearest
//! upsampling to the skip's size and concatenation `[skip, upsampled]` up, a final 1x1x1
//! convolution and a softmax over the two classes. The attention variant ("3D U-Net + Att.") gates
//! each skip with the upsampled decoder features before the concatenation.
//!
//! GroupNorm uses 8 groups, or as many groups as channels when a layer has fewer than 8 (what
//! the paper's version of pytorch-3dunet does: `num_groups = min(8, channels)`).

use super::attention::AttentionGate;
use super::layers::{Conv3d, ConvSpec, GroupNorm, Store};
use super::Mode;
use crate::ops;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// GroupNorm groups of pytorch-3dunet's default.
const GROUPS: usize = 8;

/// `SingleConv` with order "crg": conv3x3x3 (no bias) -> ReLU -> GroupNorm.
#[derive(Clone, Debug)]
struct SingleConv {
    conv: Conv3d,
    norm: GroupNorm,
}

impl SingleConv {
    fn new(store: &mut Store, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        let groups = GROUPS.min(cout);
        if !cout.is_multiple_of(groups) {
            return Err(Error::Config {
                msg: format!("{prefix}: {cout} channels do not split into {groups} groups"),
            });
        }
        let spec = ConvSpec { bias: false, ..ConvSpec::same(cin, cout, 3) };
        Ok(SingleConv {
            conv: Conv3d::new(store, &format!("{prefix}.conv"), spec),
            norm: GroupNorm::new(store, &format!("{prefix}.groupnorm"), cout, groups),
        })
    }

    fn forward(&self, store: &Store, x: &Tensor) -> Result<Tensor> {
        let y = ops::relu(&self.conv.forward(store, x)?)?;
        self.norm.forward(store, &y)
    }
}

/// `DoubleConv`: two [`SingleConv`]s under `prefix.basic_module`.
#[derive(Clone, Debug)]
struct DoubleConv {
    c1: SingleConv,
    c2: SingleConv,
}

impl DoubleConv {
    fn new(store: &mut Store, prefix: &str, cin: usize, mid: usize, cout: usize) -> Result<Self> {
        Ok(DoubleConv {
            c1: SingleConv::new(store, &format!("{prefix}.basic_module.SingleConv1"), cin, mid)?,
            c2: SingleConv::new(store, &format!("{prefix}.basic_module.SingleConv2"), mid, cout)?,
        })
    }

    fn forward(&self, store: &Store, x: &Tensor) -> Result<Tensor> {
        self.c2.forward(store, &self.c1.forward(store, x)?)
    }
}

/// One decoder level: upsample, (gate the skip), concatenate, DoubleConv.
#[derive(Clone, Debug)]
struct Decoder {
    block: DoubleConv,
    attention: Option<AttentionGate>,
}

/// The 3D U-Net (with or without attention gates), its parameters in a [`Store`].
pub struct UNet3d {
    pub(crate) store: Store,
    encoders: Vec<DoubleConv>,
    decoders: Vec<Decoder>,
    final_conv: Conv3d,
}

impl UNet3d {
    /// Builds the network with `f_maps = [f, 2f, 4f, 8f]` into `store`.
    ///
    /// # Errors
    /// [`Error::Config`] when `f` is 0 or a layer's channels do not split into its groups.
    pub fn new(mut store: Store, f: usize, attention: bool) -> Result<Self> {
        if f == 0 {
            return Err(Error::Config { msg: "U-Net f_maps must be at least 1".into() });
        }
        let maps = [f, 2 * f, 4 * f, 8 * f];
        let s = &mut store;
        let mut encoders = Vec::with_capacity(4);
        let mut cin = 1;
        for (i, &cout) in maps.iter().enumerate() {
            // Encoder DoubleConv: the first conv goes to half the output, never below the input.
            let mid = (cout / 2).max(cin);
            encoders.push(DoubleConv::new(s, &format!("encoders.{i}"), cin, mid, cout)?);
            cin = cout;
        }
        let mut decoders = Vec::with_capacity(3);
        for i in 0..3 {
            let (deep, skip) = (maps[3 - i], maps[2 - i]);
            let name = format!("decoders.{i}");
            let block = DoubleConv::new(s, &name, deep + skip, skip, skip)?;
            let attention = attention
                .then(|| AttentionGate::new(s, &format!("{name}.attention"), deep, skip, skip / 2));
            decoders.push(Decoder { block, attention });
        }
        let final_conv = Conv3d::new(s, "final_conv", ConvSpec::same(f, 2, 1));
        Ok(UNet3d { store, encoders, decoders, final_conv })
    }

    /// # Shapes
    /// `(N, D, H, W, 1)` with `D, H, W >= 8` -> softmax probabilities `(N, D, H, W, 2)`.
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        super::vnet::check_input("unet3d", x, 1, 8)?;
        let s = &mut self.store;
        let mut feats: Vec<Tensor> = Vec::with_capacity(4);
        let mut y = x.clone();
        for (i, enc) in self.encoders.iter().enumerate() {
            if i > 0 {
                y = ops::max_pool3d_k2(&y)?;
            }
            y = enc.forward(s, &y)?;
            feats.push(y.clone());
        }
        feats.pop();
        for dec in &self.decoders {
            let skip = feats.pop().expect("one skip per decoder");
            let [_, d, h, w, _] = skip.shape().ndhwc().expect("activations are 5-D");
            let up = ops::upsample_nearest(&y, [d, h, w])?;
            let skip = match &dec.attention {
                Some(gate) => gate.forward(s, &up, &skip, mode)?,
                None => skip,
            };
            y = dec.block.forward(s, &ops::concat_channels(&[&skip, &up])?)?;
        }
        ops::softmax_channels(&self.final_conv.forward(s, &y)?)
    }
}
