//! Where a run happens: `cpu`, `cuda` (`cuda:0`), `cuda:N` or `auto`, as the
//! user asked for it, and the libtorch device that request resolves to.

use std::fmt;
use std::str::FromStr;
use tch::{Cuda, Device};

/// A device as the user asked for it, before we know what this machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// CUDA device 0 when libtorch sees a GPU, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// `cuda` is `cuda:0`, as in PyTorch.
    Cuda(usize),
}

impl FromStr for DeviceRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" => Ok(DeviceRequest::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(DeviceRequest::Cuda)
                .ok_or_else(|| format!("expected cpu, cuda, cuda:N or auto, got '{s}'")),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Auto => write!(f, "auto"),
            DeviceRequest::Cpu => write!(f, "cpu"),
            DeviceRequest::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceRequest {
    /// The libtorch device for this request on this machine, or an error that
    /// says why it cannot be had (no GPU, or not that many).
    pub fn resolve(self) -> Result<Device, DeviceError> {
        match self {
            DeviceRequest::Cpu => Ok(Device::Cpu),
            DeviceRequest::Auto => Ok(Device::cuda_if_available()),
            DeviceRequest::Cuda(n) => {
                let count = Cuda::device_count().max(0) as usize;
                if count == 0 {
                    return Err(DeviceError::NoCuda);
                }
                if n >= count {
                    return Err(DeviceError::NoSuchCuda { count });
                }
                Ok(Device::Cuda(n))
            }
        }
    }
}

/// Why a requested CUDA device cannot be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceError {
    /// libtorch sees no CUDA device at all.
    NoCuda,
    /// Fewer CUDA devices than the index asked for.
    NoSuchCuda { count: usize },
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::NoCuda => write!(
                f,
                "libtorch sees no CUDA device on this machine (no GPU, no driver, or a CPU-only libtorch)"
            ),
            DeviceError::NoSuchCuda { count } => write!(
                f,
                "this machine has {count} CUDA device(s), cuda:0 to cuda:{}",
                count - 1
            ),
        }
    }
}

impl std::error::Error for DeviceError {}

/// PyTorch's name for a device: `cpu`, `cuda:0`, ...
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(n) => format!("cuda:{n}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
