//! CUDA backend: per-GPU context and stream, NVRTC compilation with an on-disk CUBIN cache
//! ([`nvrtc`]), launch helpers ([`launch`]: the only place launch configurations are built) and one
//! launcher file per op family, named as the kernel files in `kernels/`. The driver is loaded at
//! run time (cudarc `dynamic-loading`), so this builds and the CPU path runs on machines without
//! CUDA; every path to a context first checks [`crate::tensor::cuda_driver_present`].
//!
//! Launchers take and return CUDA f32 tensors with the semantics of the CPU ops in `crate::ops`;
//! shapes are checked by the ops before dispatch, and checked again here only where a wrong shape
//! would make a kernel read out of bounds. All work of one GPU is ordered on one stream;
//! allocation is stream-ordered (`cuMemAllocAsync`), and nothing synchronises the host inside a
//! training step except reading the loss (debug builds synchronise after every launch so that a
//! fault names its kernel).
//!
//! How the launchers pair with `crate::ops` (for the dispatch in `src/ops`):
//!
//! | op | forward | backward |
//! |---|---|---|
//! | conv3d | [`conv3d::conv3d`] | [`conv3d::conv3d_backward_input`], [`conv3d::conv3d_backward_weight`], bias: [`reduce::sum_channels`] |
//! | conv_transpose3d | [`conv_transpose3d::conv_transpose3d`] | `..._backward_input`, `..._backward_weight`, bias: [`reduce::sum_channels`] |
//! | add, mul, scale | [`elementwise::add`], [`elementwise::mul`], [`elementwise::scale`] | identity; `mul(g, other)`; `scale(g, s)` |
//! | relu, elu, sigmoid | [`elementwise::relu`], [`elementwise::elu`], [`elementwise::sigmoid`] | `relu_backward(x, g)`, `elu_backward(x, g, a)`, `sigmoid_backward(y, g)` |
//! | prelu, gate_mul | [`elementwise::prelu`], [`elementwise::gate_mul`] | `prelu_backward`, `gate_mul_backward` (both gradients) |
//! | concat_channels | [`elementwise::concat_channels`] | [`elementwise::concat_channels_backward`] |
//! | max_pool3d_k2 | [`pool::max_pool3d_k2`] | [`pool::max_pool3d_k2_backward`] |
//! | upsample_nearest | [`upsample::upsample_nearest`] | [`upsample::upsample_nearest_backward`] |
//! | softmax / log_softmax | [`softmax::softmax_channels`], [`softmax::log_softmax_channels`] | `*_backward(y, g)` |
//! | batch_norm, group_norm | [`norm::batch_norm`], [`norm::group_norm`] | [`norm::batch_norm_backward`], [`norm::group_norm_backward`] |
//! | losses | [`loss::dice_ce`] with a [`loss::LossSpec`], [`loss::hard_dice`] | [`loss::dice_ce_backward`], [`loss::hard_dice_backward`] |
//! | Adam | [`optim::CudaAdam::step`] | |

pub mod conv3d;
pub mod conv_transpose3d;
pub mod edt;
pub mod elementwise;
pub mod inflate;
pub mod launch;
pub mod loss;
pub mod marching_cubes;
pub mod norm;
pub mod nvrtc;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod scan;
pub mod softmax;
pub mod upsample;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream};

pub(crate) use crate::tensor::device_cuda_err as cuda_err;
pub use crate::tensor::{probe, CudaBuffer, CudaData, Precision};
use crate::tensor::{Device, Shape, Storage, Tensor};
use crate::{Error, Result};

/// One GPU: its context, the stream all its work is ordered on, what the launchers need to know
/// about it, and the kernels loaded so far.
pub struct Gpu {
    pub ordinal: usize,
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    /// Compute capability, e.g. (9, 0) on an H100.
    pub arch: (i32, i32),
    /// Streaming multiprocessors (sizes grids and split-K).
    pub sms: u32,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
}

impl Gpu {
    /// The NVRTC architecture name, `sm_90` on an H100.
    pub fn arch_name(&self) -> String {
        format!("sm_{}{}", self.arch.0, self.arch.1)
    }

    /// Kernel `name` of module `stem` (`kernels/<stem>.cu`), compiling and loading the module at
    /// first use.
    ///
    /// # Errors
    /// [`Error::Cuda`] when the module does not exist, does not compile, or lacks the kernel.
    pub fn function(&self, stem: &'static str, name: &str) -> Result<CudaFunction> {
        let mut fns = self.functions.lock().map_err(|_| poisoned())?;
        if let Some(f) = fns.get(name) {
            return Ok(f.clone());
        }
        let module = self.module(stem)?;
        let f = module
            .load_function(name)
            .map_err(|e| Error::Cuda(format!("kernel {name} not in kernels/{stem}.cu: {e}")))?;
        fns.insert(name.to_string(), f.clone());
        Ok(f)
    }

    fn module(&self, stem: &'static str) -> Result<Arc<CudaModule>> {
        let mut mods = self.modules.lock().map_err(|_| poisoned())?;
        if let Some(m) = mods.get(stem) {
            return Ok(m.clone());
        }
        let src = sources::ALL
            .iter()
            .find(|(s, _)| *s == stem)
            .map(|(_, src)| *src)
            .ok_or_else(|| Error::Cuda(format!("no kernel source kernels/{stem}.cu")))?;
        let cubin = nvrtc::compile_cached(stem, src, &self.arch_name())?;
        let m = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(|e| Error::Cuda(format!("loading kernels/{stem}.cu: {e}")))?;
        mods.insert(stem, m.clone());
        Ok(m)
    }
}

fn poisoned() -> Error {
    Error::Cuda("CUDA module table poisoned by a panic".into())
}

/// GPU `ordinal` with its kernel-module cache; the context and stream come from the one registry
/// in `tensor::device`.
///
/// # Errors
/// [`Error::Cuda`] when there is no driver or no such device.
pub fn gpu(ordinal: usize) -> Result<Arc<Gpu>> {
    static GPUS: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
    let table = GPUS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut table = table.lock().map_err(|_| poisoned())?;
    if let Some(g) = table.get(&ordinal) {
        return Ok(g.clone());
    }
    let d = crate::tensor::cuda_context(ordinal)?;
    let g = Arc::new(Gpu {
        ordinal,
        ctx: d.ctx.clone(),
        stream: d.stream.clone(),
        arch: d.arch,
        sms: d.sms,
        modules: Mutex::new(HashMap::new()),
        functions: Mutex::new(HashMap::new()),
    });
    table.insert(ordinal, g.clone());
    Ok(g)
}

/// The stream of GPU `ordinal`, creating its context once.
pub fn stream(ordinal: usize) -> Result<Arc<CudaStream>> {
    Ok(gpu(ordinal)?.stream.clone())
}

/// Waits until all work queued on GPU `ordinal` has finished (benchmarks, tests).
pub fn synchronize(ordinal: usize) -> Result<()> {
    gpu(ordinal)?.stream.synchronize().map_err(cuda_err)
}

// ---- tensors <-> device slices ------------------------------------------------------------------

/// The f32 device slice of a CUDA tensor.
///
/// # Errors
/// [`Error::Device`] for CPU or bf16 tensors.
pub(crate) fn f32_slice<'a>(op: &'static str, t: &'a Tensor) -> Result<&'a CudaSlice<f32>> {
    match t.storage() {
        Storage::Cuda(CudaBuffer { data: CudaData::F32(s), .. }) => Ok(s),
        _ => Err(Error::Device {
            op,
            msg: format!("needs a CUDA f32 tensor, got {:?} {:?}", t.device(), t.dtype()),
        }),
    }
}

/// The GPU all `tensors` live on (the first's), or [`Error::Device`] when they are spread out.
pub(crate) fn common_gpu(op: &'static str, tensors: &[&Tensor]) -> Result<Arc<Gpu>> {
    let mut ordinal = None;
    for t in tensors {
        match (t.device(), ordinal) {
            (Device::Cuda(o), None) => ordinal = Some(o),
            (Device::Cuda(o), Some(p)) if o == p => {}
            (d, _) => {
                return Err(Error::Device {
                    op,
                    msg: format!("all tensors must be on one GPU, got {d}"),
                })
            }
        }
        f32_slice(op, t)?;
    }
    gpu(ordinal.ok_or_else(|| Error::arg(op, "no tensor given"))?)
}

/// A CUDA f32 tensor owning `slice`.
pub(crate) fn wrap(gpu: &Gpu, slice: CudaSlice<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_storage(
        Storage::Cuda(CudaBuffer {
            data: CudaData::F32(slice),
            stream: gpu.stream.clone(),
            ordinal: gpu.ordinal,
        }),
        shape,
    )
}

static POISON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Tests: when on, every output buffer a launcher allocates uninitialised is first filled with
/// NaN, so an element a kernel forgets to write shows up as a mismatch instead of as stale memory
/// that happens to hold the right value.
pub fn poison_outputs(on: bool) {
    POISON.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// `n` uninitialised f32 on the GPU's stream, for outputs a kernel overwrites entirely (NaN-filled
/// under [`poison_outputs`]).
pub(crate) fn alloc(gpu: &Gpu, n: usize) -> Result<CudaSlice<f32>> {
    // SAFETY: callers pass the buffer only to kernels that write every element before anything
    // reads it (each call site says which kernel).
    let mut s = unsafe { gpu.stream.alloc::<f32>(n) }.map_err(cuda_err)?;
    if POISON.load(std::sync::atomic::Ordering::Relaxed) && n > 0 {
        elementwise::fill_slice(gpu, &mut s, f32::NAN)?;
    }
    Ok(s)
}

/// `n` zeros on the GPU's stream, for outputs kernels accumulate into.
pub(crate) fn zeros(gpu: &Gpu, n: usize) -> Result<CudaSlice<f32>> {
    gpu.stream.alloc_zeros::<f32>(n).map_err(cuda_err)
}

/// A stable hash of every embedded kernel source (FNV-1a): what the self-check verdict is cached
/// under, beside the GPU architecture.
pub fn sources_hash() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (stem, src) in sources::ALL {
        for &b in stem.as_bytes().iter().chain(src.as_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Kernel sources embedded by build.rs (local headers inlined): `ALL` lists `(stem, source)`.
pub mod sources {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}
