//! Devices and compute precisions as the host names them.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// Compute precision of the model's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// 32-bit floats (exact parity with the reference).
    #[default]
    Fp32,
    /// bfloat16.
    Bf16,
    /// IEEE half.
    Fp16,
}

impl Precision {
    /// The combo choices, default first.
    pub const CHOICES: [&'static str; 3] = ["fp32", "bf16", "fp16"];

    /// The candle dtype.
    pub fn dtype(self) -> DType {
        match self {
            Precision::Fp32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::Fp16 => DType::F16,
        }
    }

    /// The combo spelling.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => Ok(Precision::Fp32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "fp16" | "f16" | "float16" | "half" => Ok(Precision::Fp16),
            other => Err(Error::invalid(format!(
                "unknown precision `{other}` (choose fp32, bf16 or fp16)"
            ))),
        }
    }
}

/// Turns the host's device string (`"cpu"`, `"cuda"`, `"cuda:N"`) into a candle device. One `Device` per name
/// is kept, so tensors made by different nodes on `cuda:0` live on the same candle device.
pub fn device(name: &str) -> Result<Device> {
    static DEVICES: OnceLock<Mutex<HashMap<String, Device>>> = OnceLock::new();
    let key = name.trim().to_ascii_lowercase();
    let key = if key.is_empty() {
        "cpu".to_string()
    } else {
        key
    };
    if key == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match key.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                Error::invalid(format!("bad device name `{name}` (expected cpu or cuda:N)"))
            })?,
        None => {
            return Err(Error::invalid(format!(
                "unsupported device `{name}` (this plugin runs on cpu or cuda:N)"
            )))
        }
    };
    let devices = DEVICES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = devices.lock().unwrap_or_else(|p| p.into_inner());
    let canonical = format!("cuda:{ordinal}");
    if let Some(d) = map.get(&canonical) {
        return Ok(d.clone());
    }
    let d = new_cuda(ordinal, name)?;
    map.insert(canonical, d.clone());
    Ok(d)
}

#[cfg(feature = "cuda")]
fn new_cuda(ordinal: usize, name: &str) -> Result<Device> {
    Device::new_cuda(ordinal)
        .map_err(|e| Error::invalid(format!("cannot open device `{name}`: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn new_cuda(_ordinal: usize, name: &str) -> Result<Device> {
    Err(Error::invalid(format!(
        "the host assigned device `{name}`, but this plugin was built without CUDA support \
         (rebuild with `--features cuda`, or run the host on the cpu)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_precisions() {
        assert!(device("cpu").unwrap().is_cpu());
        assert!(device("").unwrap().is_cpu());
        assert!(device("tpu:0").is_err());
        assert!(device("cuda:x").is_err());
        #[cfg(not(feature = "cuda"))]
        {
            let e = device("cuda:0").unwrap_err().to_string();
            assert!(e.contains("without CUDA"), "{e}");
        }
        assert_eq!("bf16".parse::<Precision>().unwrap().dtype(), DType::BF16);
        assert_eq!("fp32".parse::<Precision>().unwrap(), Precision::Fp32);
        assert!("fp8".parse::<Precision>().is_err());
    }
}
