//! The V-Net of the paper: mattmacy/vnet.pytorch with PReLU activations, the convolution counts
//! of the V-Net paper's diagram (2-3-3-3 down, 3-3-2-1 up), the input replicated over the first
//! level's channels, and a softmax over the two classes. Optionally with attention gates on the
//! skip connections (`VNetAtt`, "V-Net + Att." in the paper).
//!
//! Every BatchNorm is the original's `ContBatchNorm3d`: it normalises with batch statistics in
//! every mode (and, like PyTorch's, updates its running statistics as it goes), so a window is
//! normalised by its own statistics at inference too. The attention gates' BatchNorm3d are
//! ordinary ones (running statistics in eval mode).
//!
//! Channels for width `w` (the paper: 16): `w, 2w, 4w, 8w, 16w` down; the up path concatenates the
//! up-convolved features (`outChans / 2`) with the skip. Spatial sizes must be divisible by 16.

use super::attention::AttentionGate;
use super::layers::{BatchNorm, BnMode, Conv3d, ConvSpec, ConvTranspose3d, PRelu, Store};
use super::{Dropout, Mode};
use crate::ops;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Dropout3d probability of the original (`nn.Dropout3d()`'s default).
const P_DROP: f32 = 0.5;

/// `LUConv`: conv 5x5x5 (pad 2) -> ContBatchNorm3d -> PReLU, at constant width.
#[derive(Clone, Debug)]
struct LuConv {
    conv1: Conv3d,
    bn1: BatchNorm,
    relu1: PRelu,
}

impl LuConv {
    fn new(store: &mut Store, prefix: &str, c: usize) -> Self {
        // Registration order of the original module: relu1, conv1, bn1.
        let relu1 = PRelu::new(store, &format!("{prefix}.relu1"), c);
        let conv1 = Conv3d::new(store, &format!("{prefix}.conv1"), ConvSpec::same(c, c, 5));
        let bn1 = BatchNorm::new(store, &format!("{prefix}.bn1"), c);
        LuConv { conv1, bn1, relu1 }
    }

    fn forward(&self, store: &mut Store, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(store, x)?;
        let y = self.bn1.forward(store, &y, BnMode::Batch)?;
        self.relu1.forward(store, &y)
    }
}

fn make_ops(store: &mut Store, prefix: &str, c: usize, n: usize) -> Vec<LuConv> {
    (0..n).map(|i| LuConv::new(store, &format!("{prefix}.ops.{i}"), c)).collect()
}

fn run_ops(ops: &[LuConv], store: &mut Store, x: &Tensor) -> Result<Tensor> {
    let mut y = x.clone();
    for op in ops {
        y = op.forward(store, &y)?;
    }
    Ok(y)
}

/// `InputTransition`: `PReLU(BN(conv5(x)) + x repeated over w channels)`.
#[derive(Clone, Debug)]
struct InputTransition {
    conv1: Conv3d,
    bn1: BatchNorm,
    relu1: PRelu,
    width: usize,
}

impl InputTransition {
    fn new(store: &mut Store, width: usize) -> Self {
        InputTransition {
            conv1: Conv3d::new(store, "in_tr.conv1", ConvSpec::same(1, width, 5)),
            bn1: BatchNorm::new(store, "in_tr.bn1", width),
            relu1: PRelu::new(store, "in_tr.relu1", width),
            width,
        }
    }

    fn forward(&self, store: &mut Store, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(store, x)?;
        let y = self.bn1.forward(store, &y, BnMode::Batch)?;
        let repeated = ops::concat_channels(&vec![x; self.width])?;
        self.relu1.forward(store, &ops::add(&y, &repeated)?)
    }
}

/// `DownTransition`: `down = PReLU(BN(conv2x2x2/2(x)))`, `PReLU(LUConvs(dropout(down)) + down)`.
#[derive(Clone, Debug)]
struct DownTransition {
    down_conv: Conv3d,
    bn1: BatchNorm,
    relu1: PRelu,
    relu2: PRelu,
    ops: Vec<LuConv>,
    dropout: bool,
}

impl DownTransition {
    fn new(store: &mut Store, name: &str, cin: usize, n_convs: usize, dropout: bool) -> Self {
        let cout = 2 * cin;
        let spec = ConvSpec { cin, cout, k: 2, stride: 2, padding: 0, bias: true };
        DownTransition {
            down_conv: Conv3d::new(store, &format!("{name}.down_conv"), spec),
            bn1: BatchNorm::new(store, &format!("{name}.bn1"), cout),
            relu1: PRelu::new(store, &format!("{name}.relu1"), cout),
            relu2: PRelu::new(store, &format!("{name}.relu2"), cout),
            ops: make_ops(store, name, cout, n_convs),
            dropout,
        }
    }

    fn forward(&self, store: &mut Store, x: &Tensor, drop: &mut Dropout) -> Result<Tensor> {
        let down = self.down_conv.forward(store, x)?;
        let down = self.bn1.forward(store, &down, BnMode::Batch)?;
        let down = self.relu1.forward(store, &down)?;
        let y = if self.dropout { drop.apply(&down, P_DROP)? } else { down.clone() };
        let y = run_ops(&self.ops, store, &y)?;
        self.relu2.forward(store, &ops::add(&y, &down)?)
    }
}

/// `UpTransition`: `up = PReLU(BN(convT2x2x2/2(dropout(x))))`, `cat = [up, dropout(skip)]` (the
/// skip gated first in the attention variant), `PReLU(LUConvs(cat) + cat)`.
#[derive(Clone, Debug)]
struct UpTransition {
    up_conv: ConvTranspose3d,
    bn1: BatchNorm,
    relu1: PRelu,
    relu2: PRelu,
    ops: Vec<LuConv>,
    attention: Option<AttentionGate>,
    dropout: bool,
}

impl UpTransition {
    fn new(store: &mut Store, name: &str, cin: usize, cout: usize, n: usize, opt: UpOpts) -> Self {
        let half = cout / 2;
        let up_conv = ConvTranspose3d::new(store, &format!("{name}.up_conv"), cin, half);
        let bn1 = BatchNorm::new(store, &format!("{name}.bn1"), half);
        let relu1 = PRelu::new(store, &format!("{name}.relu1"), half);
        let relu2 = PRelu::new(store, &format!("{name}.relu2"), cout);
        let ops = make_ops(store, name, cout, n);
        let attention = opt
            .attention
            .then(|| AttentionGate::new(store, &format!("{name}.attention"), half, half, half));
        UpTransition { up_conv, bn1, relu1, relu2, ops, attention, dropout: opt.dropout }
    }

    fn forward(
        &self,
        store: &mut Store,
        x: &Tensor,
        skip: &Tensor,
        mode: Mode,
        drop: &mut Dropout,
    ) -> Result<Tensor> {
        let x = if self.dropout { drop.apply(x, P_DROP)? } else { x.clone() };
        // The original drops channels of every skip connection in training.
        let skip = drop.apply(skip, P_DROP)?;
        let up = self.up_conv.forward(store, &x)?;
        let up = self.bn1.forward(store, &up, BnMode::Batch)?;
        let up = self.relu1.forward(store, &up)?;
        let skip = match &self.attention {
            Some(gate) => gate.forward(store, &up, &skip, mode)?,
            None => skip,
        };
        let cat = ops::concat_channels(&[&up, &skip])?;
        let y = run_ops(&self.ops, store, &cat)?;
        self.relu2.forward(store, &ops::add(&y, &cat)?)
    }
}

#[derive(Clone, Copy)]
struct UpOpts {
    dropout: bool,
    attention: bool,
}

/// `OutputTransition`: `softmax(conv1x1(PReLU(BN(conv5(x)))))` over two classes.
#[derive(Clone, Debug)]
struct OutputTransition {
    conv1: Conv3d,
    bn1: BatchNorm,
    conv2: Conv3d,
    relu1: PRelu,
}

impl OutputTransition {
    fn new(store: &mut Store, cin: usize) -> Self {
        OutputTransition {
            conv1: Conv3d::new(store, "out_tr.conv1", ConvSpec::same(cin, 2, 5)),
            bn1: BatchNorm::new(store, "out_tr.bn1", 2),
            conv2: Conv3d::new(store, "out_tr.conv2", ConvSpec::same(2, 2, 1)),
            relu1: PRelu::new(store, "out_tr.relu1", 2),
        }
    }

    fn forward(&self, store: &mut Store, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(store, x)?;
        let y = self.bn1.forward(store, &y, BnMode::Batch)?;
        let y = self.relu1.forward(store, &y)?;
        ops::softmax_channels(&self.conv2.forward(store, &y)?)
    }
}

/// The V-Net (with or without attention gates), its parameters in a [`Store`].
pub struct VNet {
    pub(crate) store: Store,
    in_tr: InputTransition,
    down: [DownTransition; 4],
    up: [UpTransition; 4],
    out_tr: OutputTransition,
}

impl VNet {
    /// Builds the network into `store` (parameters drawn from the store's generator).
    ///
    /// # Errors
    /// [`Error::Config`] for width 0.
    pub fn new(mut store: Store, width: usize, attention: bool) -> Result<Self> {
        if width == 0 {
            return Err(Error::Config { msg: "V-Net width must be at least 1".into() });
        }
        let w = width;
        let s = &mut store;
        let in_tr = InputTransition::new(s, w);
        let down = [
            DownTransition::new(s, "down_tr32", w, 2, false),
            DownTransition::new(s, "down_tr64", 2 * w, 3, false),
            DownTransition::new(s, "down_tr128", 4 * w, 3, true),
            DownTransition::new(s, "down_tr256", 8 * w, 3, true),
        ];
        let opt = |dropout| UpOpts { dropout, attention };
        let up = [
            UpTransition::new(s, "up_tr256", 16 * w, 16 * w, 3, opt(true)),
            UpTransition::new(s, "up_tr128", 16 * w, 8 * w, 3, opt(true)),
            UpTransition::new(s, "up_tr64", 8 * w, 4 * w, 2, opt(false)),
            UpTransition::new(s, "up_tr32", 4 * w, 2 * w, 1, opt(false)),
        ];
        let out_tr = OutputTransition::new(s, 2 * w);
        Ok(VNet { store, in_tr, down, up, out_tr })
    }

    /// # Shapes
    /// `(N, D, H, W, 1)` with `D, H, W` divisible by 16 -> softmax probabilities `(N, D, H, W, 2)`.
    pub fn forward(&mut self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        check_input("vnet", x, 16, 16)?;
        let mut drop = Dropout::new(mode);
        let s = &mut self.store;
        let out16 = self.in_tr.forward(s, x)?;
        let mut skips = vec![out16];
        for d in &self.down {
            let last = skips.last().expect("the input level is always there");
            let next = d.forward(s, last, &mut drop)?;
            skips.push(next);
        }
        let mut y = skips.pop().expect("five levels");
        for u in &self.up {
            let skip = skips.pop().expect("one skip per up transition");
            y = u.forward(s, &y, &skip, mode, &mut drop)?;
        }
        self.out_tr.forward(s, &y)
    }
}

/// Checks an input is `(N, D, H, W, 1)` with spatial sizes at least `min` and divisible by
/// `multiple`.
pub(crate) fn check_input(op: &'static str, x: &Tensor, multiple: usize, min: usize) -> Result<()> {
    let Some([n, d, h, w, c]) = x.shape().ndhwc() else {
        return Err(Error::shape(op, "(N, D, H, W, 1)", x.dims()));
    };
    if c != 1 || n == 0 {
        return Err(Error::shape(op, "(N, D, H, W, 1)", x.dims()));
    }
    if [d, h, w].iter().any(|&s| s < min.max(1) || s % multiple != 0) {
        let want = format!("(N, D, H, W, 1), D, H, W >= {min} and divisible by {multiple}");
        return Err(Error::shape(op, want, x.dims()));
    }
    Ok(())
}
