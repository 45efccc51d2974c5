//! The additive attention gate of Oktay et al. ("Attention U-Net"), as the paper's code adds it to
//! the skip connections of the V-Net and the 3D U-Net.
//!
//! ```text
//! g1  = BN(conv1x1_g(g))          W_g.0, W_g.1   g: gating signal (decoder side)
//! x1  = BN(conv1x1_x(x))          W_x.0, W_x.1   x: skip features (encoder side)
//! psi = sigmoid(BN(conv1x1(relu(g1 + x1))))      psi.0, psi.1   -> one channel
//! out = x * psi
//! ```
//! The three BatchNorm3d are ordinary ones: batch statistics (and a running update) in training,
//! running statistics in eval mode.

use super::layers::{BatchNorm, BnMode, Conv3d, ConvSpec, Store};
use super::Mode;
use crate::ops;
use crate::tensor::Tensor;
use crate::Result;

/// One attention gate: `prefix.W_g.{0,1}`, `prefix.W_x.{0,1}`, `prefix.psi.{0,1}`.
#[derive(Clone, Debug)]
pub struct AttentionGate {
    w_g: Conv3d,
    bn_g: BatchNorm,
    w_x: Conv3d,
    bn_x: BatchNorm,
    psi: Conv3d,
    bn_psi: BatchNorm,
}

impl AttentionGate {
    /// `f_g` gating channels, `f_l` skip channels, `f_int` intermediate channels.
    pub fn new(store: &mut Store, prefix: &str, f_g: usize, f_l: usize, f_int: usize) -> Self {
        let p = |s: &str| format!("{prefix}.{s}");
        AttentionGate {
            w_g: Conv3d::new(store, &p("W_g.0"), ConvSpec::same(f_g, f_int, 1)),
            bn_g: BatchNorm::new(store, &p("W_g.1"), f_int),
            w_x: Conv3d::new(store, &p("W_x.0"), ConvSpec::same(f_l, f_int, 1)),
            bn_x: BatchNorm::new(store, &p("W_x.1"), f_int),
            psi: Conv3d::new(store, &p("psi.0"), ConvSpec::same(f_int, 1, 1)),
            bn_psi: BatchNorm::new(store, &p("psi.1"), 1),
        }
    }

    /// Gates the skip features `x` with the signal `g` (same spatial size).
    ///
    /// # Shapes
    /// `g: (N, D, H, W, f_g)`, `x: (N, D, H, W, f_l)` -> `(N, D, H, W, f_l)`.
    pub fn forward(&self, store: &mut Store, g: &Tensor, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let bn = match mode {
            Mode::Train { .. } => BnMode::Batch,
            Mode::Eval => BnMode::Running,
        };
        let g1 = self.w_g.forward(store, g)?;
        let g1 = self.bn_g.forward(store, &g1, bn)?;
        let x1 = self.w_x.forward(store, x)?;
        let x1 = self.bn_x.forward(store, &x1, bn)?;
        let a = ops::relu(&ops::add(&g1, &x1)?)?;
        let logit = self.psi.forward(store, &a)?;
        let logit = self.bn_psi.forward(store, &logit, bn)?;
        // gate_mul broadcasts the one-channel gate over x's channels; the sigmoid is ours.
        ops::gate_mul(x, &ops::sigmoid(&logit)?)
    }
}
