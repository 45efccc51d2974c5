//! Layers with parameters, and the [`Store`] that owns every tensor of a network.
//!
//! A network keeps all its parameters and buffers (running statistics) in one [`Store`], in
//! PyTorch's `state_dict` order and under PyTorch's names; its layers hold only [`Id`]s into it.
//! That makes the generic parts (the parameter list, `set_parameters`, safetensors load/save,
//! moving to a device) one piece of code for every architecture.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::init::{conv_bound, Rng};
use crate::io::weights::{Layout, Stored};
use crate::ops::{self, BatchStats, RunningStats};
use crate::tensor::{Device, Precision, Tensor};
use crate::{Error, Result};

/// PyTorch's BatchNorm and GroupNorm epsilon.
pub const NORM_EPS: f32 = 1e-5;
/// PyTorch's BatchNorm momentum.
pub const BN_MOMENTUM: f32 = 0.1;

/// Handle of one tensor in a [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Id(usize);

/// Trainable parameter or buffer (not trained, but saved: running mean and variance).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Param,
    Buffer,
}

struct Entry {
    name: String,
    kind: Kind,
    layout: Layout,
    /// Engine dims (kept separately so a counting store needs no data).
    dims: Vec<usize>,
    tensor: Tensor,
}

/// Every parameter and buffer of a network, in a fixed order, with PyTorch names.
pub struct Store {
    entries: Vec<Entry>,
    /// `None` for a counting store: shapes only, no values (for parameter counts of big widths).
    rng: Option<Rng>,
    device: Device,
    /// Operand precision of the convolutions on a GPU (the CPU is always f32): held with the
    /// parameters and passed to every conv op, never a process-wide setting.
    precision: Precision,
}

impl Store {
    /// An empty store whose parameters will be drawn from a generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Store {
            entries: Vec::new(),
            rng: Some(Rng::new(seed)),
            device: Device::Cpu,
            precision: Precision::default(),
        }
    }

    /// A store that records names and shapes only (its tensors are placeholders).
    pub fn counting() -> Self {
        Store {
            entries: Vec::new(),
            rng: None,
            device: Device::Cpu,
            precision: Precision::default(),
        }
    }

    fn push(
        &mut self,
        name: String,
        kind: Kind,
        layout: Layout,
        dims: Vec<usize>,
        data: Init,
    ) -> Id {
        let n: usize = dims.iter().product();
        let tensor = match &mut self.rng {
            None => Tensor::scalar(0.0),
            Some(rng) => {
                let values = match data {
                    Init::Uniform(bound) => rng.uniform(n, bound),
                    Init::Const(v) => vec![v; n],
                };
                let t = Tensor::from_vec(values, dims.clone()).expect("values fill dims");
                match kind {
                    Kind::Param => t.requires_grad(),
                    Kind::Buffer => t,
                }
            }
        };
        self.entries.push(Entry { name, kind, layout, dims, tensor });
        Id(self.entries.len() - 1)
    }

    /// Adds a trainable parameter.
    pub fn param(&mut self, name: String, layout: Layout, dims: Vec<usize>, init: Init) -> Id {
        self.push(name, Kind::Param, layout, dims, init)
    }

    /// Adds a buffer filled with `value`.
    pub fn buffer(&mut self, name: String, dims: Vec<usize>, value: f32) -> Id {
        self.push(name, Kind::Buffer, Layout::Plain, dims, Init::Const(value))
    }

    pub fn get(&self, id: Id) -> &Tensor {
        &self.entries[id.0].tensor
    }

    fn set(&mut self, id: Id, t: Tensor) {
        self.entries[id.0].tensor = t;
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The convolutions' operand precision on a GPU (bf16 by default; ignored on the CPU).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Sets the convolutions' operand precision on a GPU (`--precision bf16|fp32`).
    pub fn set_precision(&mut self, p: Precision) {
        self.precision = p;
    }

    /// Number of trainable scalars (running statistics not counted, as in PyTorch's
    /// `sum(p.numel() for p in model.parameters())`).
    pub fn param_count(&self) -> usize {
        self.params().map(|e| e.dims.iter().product::<usize>()).sum()
    }

    fn params(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.kind == Kind::Param)
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        self.params().map(|e| e.tensor.clone()).collect()
    }

    pub fn parameter_names(&self) -> Vec<String> {
        self.params().map(|e| e.name.clone()).collect()
    }

    /// Names of every entry, parameters and buffers, in order.
    pub fn state_names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.name.clone()).collect()
    }

    /// Replaces the parameters (same order and shapes as [`Store::parameters`]). Trainable leaves
    /// are kept as given, so their identities key the next backward's gradients; other tensors
    /// become new leaves.
    pub fn set_parameters(&mut self, p: Vec<Tensor>) -> Result<()> {
        let n = self.params().count();
        if p.len() != n {
            return Err(Error::arg(
                "set_parameters",
                format!("expected {n} parameters, got {}", p.len()),
            ));
        }
        let device = self.device;
        let slots = self.entries.iter_mut().filter(|e| e.kind == Kind::Param);
        let mut checked = Vec::with_capacity(n);
        for (entry, t) in slots.zip(p) {
            if t.dims() != entry.dims.as_slice() {
                return Err(Error::Shape {
                    op: "set_parameters",
                    expected: format!("{} {:?}", entry.name, entry.dims),
                    got: format!("{:?}", t.dims()),
                });
            }
            let t = if t.device() != device { t.to_device(device)? } else { t };
            let leaf = if t.tracks_grad() && t.node().is_none() { t } else { t.requires_grad() };
            checked.push((entry, leaf));
        }
        for (entry, leaf) in checked {
            entry.tensor = leaf;
        }
        Ok(())
    }

    /// Lends the parameters to `update` (an optimiser step) as the only handles to them: the
    /// store keeps none while it runs, so a CPU parameter's buffer can be rewritten in place.
    /// What `update` leaves in the slots becomes the parameters as [`Store::set_parameters`]
    /// takes them, also when it fails.
    ///
    /// # Errors
    /// The error of `update`, else those of [`Store::set_parameters`].
    pub fn update_parameters(
        &mut self,
        update: &mut dyn FnMut(&mut [Tensor]) -> Result<()>,
    ) -> Result<()> {
        let slots = self.entries.iter_mut().filter(|e| e.kind == Kind::Param);
        let mut lent: Vec<Tensor> =
            slots.map(|e| std::mem::replace(&mut e.tensor, Tensor::scalar(0.0))).collect();
        let updated = update(&mut lent);
        let back = self.set_parameters(lent);
        updated.and(back)
    }

    /// Moves every tensor to `device`; parameters stay trainable leaves.
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        if self.rng.is_none() {
            self.device = device;
            return Ok(());
        }
        let mut moved = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let t = e.tensor.to_device(device)?;
            moved.push(match e.kind {
                Kind::Param if !t.tracks_grad() => t.requires_grad(),
                _ => t,
            });
        }
        for (e, t) in self.entries.iter_mut().zip(moved) {
            e.tensor = t;
        }
        self.device = device;
        Ok(())
    }

    /// Every tensor in PyTorch's names and layouts (values copied to the host).
    pub fn state_dict(&self) -> Result<BTreeMap<String, Stored>> {
        let mut out = BTreeMap::new();
        for e in &self.entries {
            let data = e.layout.to_torch(&e.tensor.to_vec()?, &e.dims);
            out.insert(e.name.clone(), Stored { dims: e.layout.torch_dims(&e.dims), data });
        }
        Ok(out)
    }

    /// Replaces every tensor from a PyTorch-named `state_dict`. Nothing changes unless every name
    /// matches: `num_batches_tracked` entries are ignored.
    ///
    /// # Errors
    /// [`Error::Format`] naming the missing, unexpected and mis-shaped keys (`path` is only used
    /// in the message).
    pub fn load_state_dict(&mut self, state: &BTreeMap<String, Stored>, path: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut misshaped = Vec::new();
        let mut tensors = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let want = e.layout.torch_dims(&e.dims);
            match state.get(&e.name) {
                None => missing.push(e.name.clone()),
                Some(s) if s.dims != want => {
                    misshaped.push(format!("{} (expected {:?}, got {:?})", e.name, want, s.dims))
                }
                Some(s) => {
                    let data = e.layout.to_engine(&s.data, &s.dims);
                    let t = Tensor::from_vec(data, e.dims.clone())?.to_device(self.device)?;
                    tensors.push(match e.kind {
                        Kind::Param => t.requires_grad(),
                        Kind::Buffer => t,
                    });
                }
            }
        }
        let known: BTreeSet<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
        let unexpected: Vec<&String> = state
            .keys()
            .filter(|k| !known.contains(k.as_str()) && !k.ends_with("num_batches_tracked"))
            .collect();
        if !missing.is_empty() || !misshaped.is_empty() || !unexpected.is_empty() {
            let mut msg = String::from("weights do not fit this network:");
            if !missing.is_empty() {
                msg += &format!(" missing {} key(s): {};", missing.len(), list(&missing));
            }
            if !unexpected.is_empty() {
                msg += &format!(" unexpected {} key(s): {};", unexpected.len(), list(&unexpected));
            }
            if !misshaped.is_empty() {
                msg += &format!(" mis-shaped {} key(s): {};", misshaped.len(), list(&misshaped));
            }
            msg += " (check --arch and --width)";
            return Err(Error::format(path, msg));
        }
        for (e, t) in self.entries.iter_mut().zip(tensors) {
            e.tensor = t;
        }
        Ok(())
    }
}

/// The first eight items, comma-separated, with a count of the rest.
fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let shown: Vec<String> = items.iter().take(8).map(|s| s.to_string()).collect();
    let rest = items.len().saturating_sub(8);
    if rest > 0 {
        format!("{}, ... and {rest} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// How a new tensor is filled.
#[derive(Clone, Copy, Debug)]
pub enum Init {
    Uniform(f32),
    Const(f32),
}

fn join(prefix: &str, name: &str) -> String {
    format!("{prefix}.{name}")
}

/// `nn.Conv3d` with a cubic kernel, one stride and one zero padding.
#[derive(Clone, Debug)]
pub struct Conv3d {
    w: Id,
    b: Option<Id>,
    stride: usize,
    padding: usize,
}

/// Geometry of a [`Conv3d`]: channels, kernel, stride, padding, bias.
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
}

impl ConvSpec {
    /// Stride 1 with "same" padding (`k` odd).
    pub fn same(cin: usize, cout: usize, k: usize) -> Self {
        ConvSpec { cin, cout, k, stride: 1, padding: k / 2, bias: true }
    }
}

impl Conv3d {
    /// Registers `prefix.weight` (and `prefix.bias`).
    pub fn new(store: &mut Store, prefix: &str, s: ConvSpec) -> Self {
        let bound = conv_bound(s.cin * s.k * s.k * s.k);
        let w = store.param(
            join(prefix, "weight"),
            Layout::Conv,
            vec![s.cout, s.k, s.k, s.k, s.cin],
            Init::Uniform(bound),
        );
        let b = s.bias.then(|| {
            store.param(join(prefix, "bias"), Layout::Plain, vec![s.cout], Init::Uniform(bound))
        });
        Conv3d { w, b, stride: s.stride, padding: s.padding }
    }

    /// # Shapes
    /// `(N, D, H, W, C_in)` -> `(N, D', H', W', C_out)`.
    pub fn forward(&self, store: &Store, x: &Tensor) -> Result<Tensor> {
        let b = self.b.map(|b| store.get(b));
        ops::conv3d_prec(x, store.get(self.w), b, self.stride, self.padding, store.precision())
    }
}

/// `nn.ConvTranspose3d(cin, cout, kernel_size=2, stride=2)`: the V-Net's up convolution.
#[derive(Clone, Debug)]
pub struct ConvTranspose3d {
    w: Id,
    b: Id,
}

impl ConvTranspose3d {
    pub fn new(store: &mut Store, prefix: &str, cin: usize, cout: usize) -> Self {
        // PyTorch's fan_in for a transposed conv is weight.size(1) * kernel volume = cout * 8.
        let bound = conv_bound(cout * 8);
        let w = store.param(
            join(prefix, "weight"),
            Layout::ConvTranspose,
            vec![cout, 2, 2, 2, cin],
            Init::Uniform(bound),
        );
        let b = store.param(join(prefix, "bias"), Layout::Plain, vec![cout], Init::Uniform(bound));
        ConvTranspose3d { w, b }
    }

    /// # Shapes
    /// `(N, D, H, W, C_in)` -> `(N, 2D, 2H, 2W, C_out)`.
    pub fn forward(&self, store: &Store, x: &Tensor) -> Result<Tensor> {
        let (w, b) = (store.get(self.w), Some(store.get(self.b)));
        ops::conv_transpose3d_prec(x, w, b, 2, store.precision())
    }
}

/// Which statistics a [`BatchNorm`] normalises with, and whether it updates its running ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// Batch statistics; running statistics updated with momentum 0.1 (training, and the V-Net's
    /// ContBatchNorm3d in every mode).
    Batch,
    /// The stored running statistics (an ordinary BatchNorm3d in eval mode).
    Running,
}

/// `nn.BatchNorm3d` (affine, with running statistics).
#[derive(Clone, Debug)]
pub struct BatchNorm {
    w: Id,
    b: Id,
    mean: Id,
    var: Id,
}

impl BatchNorm {
    pub fn new(store: &mut Store, prefix: &str, c: usize) -> Self {
        let w = store.param(join(prefix, "weight"), Layout::Plain, vec![c], Init::Const(1.0));
        let b = store.param(join(prefix, "bias"), Layout::Plain, vec![c], Init::Const(0.0));
        let mean = store.buffer(join(prefix, "running_mean"), vec![c], 0.0);
        let var = store.buffer(join(prefix, "running_var"), vec![c], 1.0);
        BatchNorm { w, b, mean, var }
    }

    /// # Shapes
    /// `(N, D, H, W, C)` -> same.
    pub fn forward(&self, store: &mut Store, x: &Tensor, mode: BnMode) -> Result<Tensor> {
        let mut running = RunningStats {
            mean: store.get(self.mean).clone(),
            var: store.get(self.var).clone(),
            momentum: BN_MOMENTUM,
        };
        let (w, b) = (store.get(self.w), store.get(self.b));
        let y = match mode {
            BnMode::Batch => {
                let stats = BatchStats::Batch { running: Some(&mut running) };
                ops::batch_norm(x, Some(w), Some(b), stats, NORM_EPS)?
            }
            BnMode::Running => {
                ops::batch_norm(x, Some(w), Some(b), BatchStats::Running(&running), NORM_EPS)?
            }
        };
        if mode == BnMode::Batch {
            store.set(self.mean, running.mean.detach());
            store.set(self.var, running.var.detach());
        }
        Ok(y)
    }
}

/// `nn.GroupNorm(groups, c)` (affine).
#[derive(Clone, Debug)]
pub struct GroupNorm {
    w: Id,
    b: Id,
    groups: usize,
}

impl GroupNorm {
    pub fn new(store: &mut Store, prefix: &str, c: usize, groups: usize) -> Self {
        let w = store.param(join(prefix, "weight"), Layout::Plain, vec![c], Init::Const(1.0));
        let b = store.param(join(prefix, "bias"), Layout::Plain, vec![c], Init::Const(0.0));
        GroupNorm { w, b, groups }
    }

    pub fn forward(&self, store: &Store, x: &Tensor) -> Result<Tensor> {
        let (w, b) = (store.get(self.w), store.get(self.b));
        ops::group_norm(x, self.groups, Some(w), Some(b), NORM_EPS)
    }
}

/// `nn.PReLU(c)`: one slope per channel, starting at 0.25.
#[derive(Clone, Debug)]
pub struct PRelu {
    w: Id,
}

impl PRelu {
    pub fn new(store: &mut Store, prefix: &str, c: usize) -> Self {
        PRelu { w: store.param(join(prefix, "weight"), Layout::Plain, vec![c], Init::Const(0.25)) }
    }

    pub fn forward(&self, store: &Store, x: &Tensor) -> Result<Tensor> {
        ops::prelu(x, store.get(self.w))
    }
}
