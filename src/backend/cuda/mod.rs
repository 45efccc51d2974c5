//! CUDA backend: context, NVRTC compilation with an on-disk PTX cache, launch helpers and one
//! launcher file per op family. The driver is loaded at run time (cudarc `dynamic-loading`), so
//! this builds and the CPU path runs on machines without CUDA.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use half::bf16;

use crate::tensor::DType;
use crate::{Error, Result};

/// Whether the CUDA driver library can be loaded (cudarc panics on first use when it cannot).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library by its usual names; loads no symbols.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Checks that GPU `ordinal` is usable and returns its name, or says why not.
pub fn probe(ordinal: usize) -> std::result::Result<String, String> {
    if !driver_present() {
        return Err("no CUDA driver library found".into());
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| format!("cuda:{ordinal} unusable: {e}"))?;
    ctx.name().map_err(|e| format!("cuda:{ordinal}: {e}"))
}

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

    /// Uploads host f32 values to GPU `ordinal`.
    pub fn from_host_f32(ordinal: usize, host: &[f32]) -> Result<Self> {
        let stream = stream(ordinal)?;
        let slice = stream.clone_htod(host).map_err(cuda_err)?;
        Ok(CudaBuffer { data: CudaData::F32(slice), stream, ordinal })
    }

    /// Downloads the values as f32 (synchronises the stream).
    pub fn to_host_f32(&self) -> Result<Vec<f32>> {
        match &self.data {
            CudaData::F32(s) => self.stream.clone_dtoh(s).map_err(cuda_err),
            CudaData::Bf16(s) => {
                let v: Vec<bf16> = self.stream.clone_dtoh(s).map_err(cuda_err)?;
                Ok(v.into_iter().map(|x| x.to_f32()).collect())
            }
        }
    }
}

/// The default stream of GPU `ordinal`, creating its context once.
pub fn stream(ordinal: usize) -> Result<Arc<CudaStream>> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static STREAMS: OnceLock<Mutex<HashMap<usize, Arc<CudaStream>>>> = OnceLock::new();
    let map = STREAMS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().map_err(|_| Error::Cuda("stream table poisoned".into()))?;
    if let Some(s) = map.get(&ordinal) {
        return Ok(s.clone());
    }
    if !driver_present() {
        return Err(Error::Cuda("no CUDA driver library found on this machine".into()));
    }
    let ctx = CudaContext::new(ordinal).map_err(cuda_err)?;
    let s = ctx.default_stream();
    map.insert(ordinal, s.clone());
    Ok(s)
}

pub(crate) fn cuda_err(e: impl std::fmt::Display) -> Error {
    Error::Cuda(e.to_string())
}

/// Kernel sources embedded by build.rs (local headers inlined): `ALL` lists `(stem, source)`.
pub mod sources {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}
