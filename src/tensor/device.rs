//! Devices and what lives on them: the CPU (rayon kernels, the reference) and CUDA GPUs. This file
//! holds the device-side storage of a tensor ([`CudaBuffer`]), the one registry of CUDA contexts
//! ([`cuda_context`]) and the host<->device transfer counter, so that `tensor` depends on nothing
//! above it: `backend::cuda` (module cache, NVRTC, launchers) builds on these, never the reverse.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use half::bf16;

use super::DType;
use crate::{Error, Result};

/// Where a tensor lives and its ops run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    /// The first CUDA GPU when a driver and a device are usable, else the CPU; prints one line
    /// saying which was chosen and why. This only probes the hardware: `nn::gpu_check::resolve`
    /// also runs the self-check before a GPU is trusted.
    pub fn auto() -> Device {
        match probe(0) {
            Ok(name) => {
                eprintln!("dnvs-engine: using cuda:0 ({name})");
                Device::Cuda(0)
            }
            Err(why) => {
                eprintln!("dnvs-engine: using the CPU ({why})");
                Device::Cpu
            }
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for Device {
    type Err = Error;
    /// Parses `cpu`, `cuda` or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => {
                s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(Device::Cuda).ok_or_else(
                    || Error::arg("device", format!("'{s}' is not cpu, cuda or cuda:N")),
                )
            }
        }
    }
}

/// Operand precision of the convolutions on a GPU: bf16 tensor cores with f32 accumulation, or
/// f32 throughout. Everything else (norms, losses, optimizer) is always f32, and so is every CPU
/// kernel. Held by a network's parameter store and passed to the conv ops: never a global.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    F32,
    #[default]
    Bf16,
}

impl Precision {
    /// The kernel-name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl FromStr for Precision {
    type Err = Error;
    /// Parses `bf16`, `fp32` or `f32`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "bf16" => Ok(Precision::Bf16),
            "fp32" | "f32" => Ok(Precision::F32),
            _ => Err(Error::arg("precision", format!("'{s}' is not bf16 or fp32"))),
        }
    }
}

// ---- CUDA contexts --------------------------------------------------------------------------------

/// Whether the CUDA driver library can be loaded. cudarc panics when it is missing, so every path
/// to a CUDA context checks this first.
pub fn cuda_driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library by its usual names; loads no symbols.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Checks that GPU `ordinal` is usable and returns its name, or says why not.
pub fn probe(ordinal: usize) -> std::result::Result<String, String> {
    if !cuda_driver_present() {
        return Err("no CUDA driver library found".into());
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| format!("cuda:{ordinal} unusable: {e}"))?;
    ctx.name().map_err(|e| format!("cuda:{ordinal}: {e}"))
}

/// One GPU's context and the one stream all its work is ordered on, with what launchers need to
/// know about the device.
pub struct CudaDevice {
    pub ordinal: usize,
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    /// Compute capability, e.g. (9, 0) on an H100.
    pub arch: (i32, i32),
    /// Streaming multiprocessors (sizes grids and split-K).
    pub sms: u32,
}

pub(crate) fn cuda_err(e: impl fmt::Display) -> Error {
    Error::Cuda(e.to_string())
}

/// GPU `ordinal`, creating its context and stream once (the process's one registry).
///
/// # Errors
/// [`Error::Cuda`] when there is no driver or no such device.
pub fn cuda_context(ordinal: usize) -> Result<Arc<CudaDevice>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
    let table = DEVICES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut table =
        table.lock().map_err(|_| Error::Cuda("CUDA context table poisoned by a panic".into()))?;
    if let Some(d) = table.get(&ordinal) {
        return Ok(d.clone());
    }
    if !cuda_driver_present() {
        return Err(Error::Cuda("no CUDA driver library found on this machine".into()));
    }
    let ctx = CudaContext::new(ordinal).map_err(cuda_err)?;
    // SAFETY: every buffer of this context is used on its one stream (`stream` below), so the
    // per-buffer events cudarc would record to order several streams are not needed.
    unsafe { ctx.disable_event_tracking() };
    let arch = ctx.compute_capability().map_err(cuda_err)?;
    let sms = ctx
        .attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )
        .map_err(cuda_err)?;
    let d = Arc::new(CudaDevice {
        ordinal,
        stream: ctx.default_stream(),
        ctx,
        arch,
        sms: sms.max(1) as u32,
    });
    table.insert(ordinal, d.clone());
    Ok(d)
}

// ---- transfer counter -----------------------------------------------------------------------------

/// Host<->device copies made through [`CudaBuffer`] since the process started: how a test proves
/// that a training step stays on the GPU (targets up once per batch, the loss down once per step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Host-to-device copies.
    pub uploads: u64,
    /// Device-to-host copies.
    pub downloads: u64,
    /// Bytes moved either way.
    pub bytes: u64,
}

impl Transfers {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: Transfers) -> Transfers {
        Transfers {
            uploads: self.uploads - earlier.uploads,
            downloads: self.downloads - earlier.downloads,
            bytes: self.bytes - earlier.bytes,
        }
    }
}

/// The counters behind [`transfers`]: one per direction plus the bytes.
struct TransferCounter {
    uploads: AtomicU64,
    downloads: AtomicU64,
    bytes: AtomicU64,
}

impl TransferCounter {
    const fn new() -> Self {
        TransferCounter {
            uploads: AtomicU64::new(0),
            downloads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    fn record(&self, upload: bool, bytes: usize) {
        let n = if upload { &self.uploads } else { &self.downloads };
        n.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Transfers {
        Transfers {
            uploads: self.uploads.load(Ordering::Relaxed),
            downloads: self.downloads.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

static TRANSFERS: TransferCounter = TransferCounter::new();

/// Host<->device copies so far (diff two snapshots with [`Transfers::since`]).
pub fn transfers() -> Transfers {
    TRANSFERS.snapshot()
}

/// Counts one copy of `bytes` bytes; every host<->device copy of the engine goes through here
/// (tensor storage below; moments and masks of the launchers call it too).
pub fn count_transfer(upload: bool, bytes: usize) {
    TRANSFERS.record(upload, bytes);
}

// ---- device storage -------------------------------------------------------------------------------

/// Device memory of one tensor.
pub enum CudaData {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<bf16>),
}

/// A tensor's storage on a GPU, with the stream its work is ordered on.
pub struct CudaBuffer {
    pub(crate) data: CudaData,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) ordinal: usize,
}

impl CudaBuffer {
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub fn dtype(&self) -> DType {
        match self.data {
            CudaData::F32(_) => DType::F32,
            CudaData::Bf16(_) => DType::Bf16,
        }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            CudaData::F32(s) => s.len(),
            CudaData::Bf16(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Uploads host f32 values to GPU `ordinal` (counted by [`transfers`]).
    pub fn from_host_f32(ordinal: usize, host: &[f32]) -> Result<Self> {
        let stream = cuda_context(ordinal)?.stream.clone();
        let slice = stream.clone_htod(host).map_err(cuda_err)?;
        count_transfer(true, std::mem::size_of_val(host));
        Ok(CudaBuffer { data: CudaData::F32(slice), stream, ordinal })
    }

    /// `len` zeros on GPU `ordinal`, set on the device (a memset: nothing crosses the bus).
    pub fn zeros_f32(ordinal: usize, len: usize) -> Result<Self> {
        let stream = cuda_context(ordinal)?.stream.clone();
        let slice = stream.alloc_zeros::<f32>(len).map_err(cuda_err)?;
        Ok(CudaBuffer { data: CudaData::F32(slice), stream, ordinal })
    }

    /// Downloads the values as f32 (synchronises the stream; counted by [`transfers`]).
    pub fn to_host_f32(&self) -> Result<Vec<f32>> {
        let out = match &self.data {
            CudaData::F32(s) => self.stream.clone_dtoh(s).map_err(cuda_err)?,
            CudaData::Bf16(s) => {
                let v: Vec<bf16> = self.stream.clone_dtoh(s).map_err(cuda_err)?;
                v.into_iter().map(|x| x.to_f32()).collect()
            }
        };
        let elem = if self.dtype() == DType::F32 { 4 } else { 2 };
        count_transfer(false, out.len() * elem);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_counter_counts_each_direction_and_the_bytes() {
        let c = TransferCounter::new();
        let before = c.snapshot();
        c.record(true, 400);
        c.record(true, 4);
        c.record(false, 8);
        let d = c.snapshot().since(before);
        assert_eq!(d, Transfers { uploads: 2, downloads: 1, bytes: 412 });
    }

    #[test]
    fn precision_and_device_parse() {
        assert_eq!("fp32".parse::<Precision>().expect("fp32"), Precision::F32);
        assert_eq!("bf16".parse::<Precision>().expect("bf16"), Precision::Bf16);
        assert!("half".parse::<Precision>().is_err());
        assert_eq!("cuda:1".parse::<Device>().expect("cuda:1"), Device::Cuda(1));
        assert!("gpu".parse::<Device>().is_err());
    }
}
