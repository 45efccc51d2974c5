//! Tensors: a shape, a dtype and device storage, plus the autograd node that made them.
//!
//! Activations use one layout everywhere, channels-last `(N, D, H, W, C)`; convolution weights are
//! `(K, kd, kh, kw, C)`. PyTorch's `(N, C, D, H, W)` appears only at the boundary ([`layout`]).
//! A tensor is immutable once built: ops make new tensors, so sharing one is a cheap `Arc` clone.

mod device;
pub mod layout;
mod shape;

pub(crate) use device::cuda_err as device_cuda_err;
pub use device::{
    count_transfer, cuda_context, cuda_driver_present, probe, transfers, CudaBuffer, CudaData,
    CudaDevice, Device, Precision, Transfers,
};
pub use shape::Shape;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use half::bf16;

use crate::{Error, Result};

/// Element type of a tensor's storage. Compute is f32 on the CPU; bf16 is a storage format for
/// tensor-core convolutions on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    Bf16,
}

/// Where a tensor's elements live.
pub enum Storage {
    Cpu(Vec<f32>),
    CpuBf16(Vec<bf16>),
    Cuda(CudaBuffer),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) | Storage::CpuBf16(_) => Device::Cpu,
            Storage::Cuda(b) => Device::Cuda(b.ordinal()),
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(_) => DType::F32,
            Storage::CpuBf16(_) => DType::Bf16,
            Storage::Cuda(b) => b.dtype(),
        }
    }
}

/// Maps the gradient of an op's output to the gradients of its inputs (`None`: no gradient).
pub type BackwardFn = Box<dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// One recorded op: its inputs and how to send a gradient back to them. Defined here, beside the
/// tensor that holds it, so that `tensor` does not import `autograd` (which builds and replays
/// these).
pub struct Node {
    pub(crate) op: &'static str,
    pub(crate) inputs: Vec<Tensor>,
    pub(crate) backward: BackwardFn,
}

/// Identity of a tensor value, used to key gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn fresh() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

struct Inner {
    id: TensorId,
    shape: Shape,
    storage: Arc<Storage>,
    requires_grad: bool,
    node: Option<Node>,
}

/// An n-dimensional array (up to 5-D) on a device, with its place in the autograd graph.
#[derive(Clone)]
pub struct Tensor(Arc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?}, {:?})", self.shape(), self.dtype(), self.device())
    }
}

impl Tensor {
    /// Wraps storage in a new tensor (no autograd history).
    ///
    /// # Errors
    /// [`Error::Shape`] when the storage does not hold `shape.numel()` elements.
    pub fn from_storage(storage: Storage, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        let len = storage_len(&storage);
        if len != shape.numel() {
            return Err(Error::shape("tensor", shape.dims(), format!("{len} elements")));
        }
        Ok(Self::build(Arc::new(storage), shape, false, None))
    }

    fn build(storage: Arc<Storage>, shape: Shape, requires_grad: bool, node: Option<Node>) -> Self {
        Tensor(Arc::new(Inner { id: TensorId::fresh(), shape, storage, requires_grad, node }))
    }

    /// A CPU f32 tensor from a vector in row-major order.
    ///
    /// # Errors
    /// [`Error::Shape`] when `data.len()` is not the product of `shape`.
    pub fn from_vec(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Self> {
        Self::from_storage(Storage::Cpu(data), shape)
    }

    /// A CPU f32 tensor copied from a slice.
    pub fn from_slice(data: &[f32], shape: impl Into<Shape>) -> Result<Self> {
        Self::from_vec(data.to_vec(), shape)
    }

    /// All zeros on `device`.
    pub fn zeros(shape: impl Into<Shape>, device: Device) -> Result<Self> {
        let shape = shape.into();
        match device {
            Device::Cpu => Self::full(shape, 0.0, device),
            // A memset on the device: a training step's zero gradients cross no bus.
            Device::Cuda(ordinal) => Self::from_storage(
                Storage::Cuda(CudaBuffer::zeros_f32(ordinal, shape.numel())?),
                shape,
            ),
        }
    }

    /// Every element `value`, on `device` (on a GPU the values are uploaded from the host: code
    /// above the backends fills on the device with `backend::full` instead).
    pub fn full(shape: impl Into<Shape>, value: f32, device: Device) -> Result<Self> {
        let shape = shape.into();
        let t = Self::from_vec(vec![value; shape.numel()], shape)?;
        t.to_device(device)
    }

    /// A scalar (shape `[]`).
    pub fn scalar(value: f32) -> Self {
        Self::from_vec(vec![value], Shape::scalar()).expect("one element fits shape []")
    }

    /// A trainable leaf: gradients are collected for it by [`crate::autograd::backward`].
    pub fn param(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Self> {
        Ok(Self::from_vec(data, shape)?.requires_grad())
    }

    /// The same values as a leaf that collects gradients.
    pub fn requires_grad(&self) -> Self {
        Self::build(self.0.storage.clone(), self.0.shape.clone(), true, None)
    }

    /// The same values cut from the graph: no history, no gradient.
    pub fn detach(&self) -> Self {
        Self::build(self.0.storage.clone(), self.0.shape.clone(), false, None)
    }

    /// Attaches an autograd node; used by [`crate::autograd::record`] only.
    pub(crate) fn with_node(self, node: Node) -> Self {
        Self::build(self.0.storage.clone(), self.0.shape.clone(), true, Some(node))
    }

    pub fn id(&self) -> TensorId {
        self.0.id
    }
    pub fn shape(&self) -> &Shape {
        &self.0.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }
    pub fn rank(&self) -> usize {
        self.0.shape.rank()
    }
    pub fn numel(&self) -> usize {
        self.0.shape.numel()
    }
    pub fn device(&self) -> Device {
        self.0.storage.device()
    }
    pub fn dtype(&self) -> DType {
        self.0.storage.dtype()
    }
    pub fn storage(&self) -> &Storage {
        &self.0.storage
    }
    /// True for parameters and for every value computed from one while recording.
    pub fn tracks_grad(&self) -> bool {
        self.0.requires_grad
    }
    pub(crate) fn node(&self) -> Option<&Node> {
        self.0.node.as_ref()
    }

    /// The f32 elements of a CPU tensor, without copying.
    ///
    /// # Errors
    /// [`Error::Device`] for GPU or bf16 tensors: use [`Tensor::to_vec`].
    pub fn as_slice(&self) -> Result<&[f32]> {
        match &*self.0.storage {
            Storage::Cpu(v) => Ok(v),
            _ => Err(Error::Device {
                op: "as_slice",
                msg: format!("needs a CPU f32 tensor, got {:?} {:?}", self.device(), self.dtype()),
            }),
        }
    }

    /// The f32 buffer of a CPU tensor that nothing else shares (no other handle to the tensor,
    /// no view of its storage, no tape node holding it), taken without a copy, so an optimiser can
    /// rewrite a parameter in place. The tensor comes back unchanged when it is shared, on a GPU
    /// or bf16.
    pub fn try_into_cpu_vec(self) -> std::result::Result<Vec<f32>, Tensor> {
        if !matches!(*self.0.storage, Storage::Cpu(_)) {
            return Err(self);
        }
        let Inner { id, shape, storage, requires_grad, node } = match Arc::try_unwrap(self.0) {
            Ok(inner) => inner,
            Err(shared) => return Err(Tensor(shared)),
        };
        match Arc::try_unwrap(storage) {
            Ok(Storage::Cpu(v)) => Ok(v),
            Ok(other) => {
                let storage = Arc::new(other);
                Err(Tensor(Arc::new(Inner { id, shape, storage, requires_grad, node })))
            }
            Err(storage) => {
                Err(Tensor(Arc::new(Inner { id, shape, storage, requires_grad, node })))
            }
        }
    }

    /// The elements as f32 on the host (copies from the GPU; widens bf16).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        match &*self.0.storage {
            Storage::Cpu(v) => Ok(v.clone()),
            Storage::CpuBf16(v) => Ok(v.iter().map(|x| x.to_f32()).collect()),
            Storage::Cuda(b) => b.to_host_f32(),
        }
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::shape("item", "one element", self.dims()));
        }
        Ok(self.to_vec()?[0])
    }

    /// The same values viewed with another shape of equal element count (shares storage, keeps
    /// no autograd history: reshape inside a differentiable graph goes through `ops::reshape`).
    pub fn reshape_detached(&self, shape: impl Into<Shape>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(Error::shape("reshape", self.dims(), shape.dims()));
        }
        Ok(Self::build(self.0.storage.clone(), shape, false, None))
    }

    /// Copies the tensor to `device` (a clone of the handle when it is already there).
    pub fn to_device(&self, device: Device) -> Result<Self> {
        if self.device() == device {
            return Ok(self.clone());
        }
        let storage = match device {
            Device::Cpu => Storage::Cpu(self.to_vec()?),
            Device::Cuda(ordinal) => {
                let host = self.to_vec()?;
                Storage::Cuda(CudaBuffer::from_host_f32(ordinal, &host)?)
            }
        };
        Self::from_storage(storage, self.0.shape.clone())
    }
}

fn storage_len(s: &Storage) -> usize {
    match s {
        Storage::Cpu(v) => v.len(),
        Storage::CpuBf16(v) => v.len(),
        Storage::Cuda(b) => b.len(),
    }
}
