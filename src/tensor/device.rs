//! Devices: the CPU (rayon kernels, the reference) and CUDA GPUs (NVRTC-compiled kernels).

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Where a tensor lives and its ops run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    /// The first CUDA GPU when a driver and a device are usable, else the CPU; prints one line
    /// saying which was chosen and why.
    pub fn auto() -> Device {
        match crate::backend::cuda::probe(0) {
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

/// Whether the CUDA driver library can be loaded. cudarc panics when it is missing, so every path
/// to a CUDA context checks this first.
pub fn cuda_driver_present() -> bool {
    crate::backend::cuda::driver_present()
}
