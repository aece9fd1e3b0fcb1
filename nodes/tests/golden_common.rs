//! Shared helpers for the golden parity tests (the reference outputs of the official JAX model).
//!
//! The tests run on the device `ODELT_TEST_DEVICE` names (`cpu`, the default, or `cuda:N` in a `--features cuda`
//! build): the golden tensors are moved there, and errors are measured back on the CPU in f64.

#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use odelt_nodes::params::TensorMap;

/// `nodes/tests/data`: found from the build's source directory, or at `ODELT_TEST_DATA` (a test binary carried to
/// another machine, `scripts/gpu-check.sh`).
pub fn data_dir() -> PathBuf {
    match std::env::var_os("ODELT_TEST_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data"),
    }
}

pub struct Golden {
    pub npz: candle_core::npy::NpzTensors,
    pub json: serde_json::Value,
}

impl Golden {
    pub fn open() -> Golden {
        let dir = data_dir();
        let npz = candle_core::npy::NpzTensors::new(dir.join("tiny.npz")).expect("open tiny.npz");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("tiny.json")).expect("tiny.json"),
        )
        .expect("parse tiny.json");
        Golden { npz, json }
    }

    pub fn get(&self, name: &str) -> Tensor {
        self.npz
            .get(name)
            .unwrap_or_else(|e| panic!("npz read {name}: {e}"))
            .unwrap_or_else(|| panic!("npz has no {name}"))
            .to_device(&device())
            .unwrap_or_else(|e| panic!("{name} to the test device: {e}"))
    }

    /// Every `param/<path>` entry as a parameter map.
    pub fn params(&self) -> TensorMap {
        let mut m = TensorMap::default();
        for name in self.npz.names() {
            if let Some(p) = name.strip_prefix("param/") {
                m.0.insert(p.to_string(), self.get(name));
            }
        }
        m
    }

    pub fn cases(&self, kind: &str) -> Vec<serde_json::Value> {
        self.json["cases"]
            .as_array()
            .expect("cases")
            .iter()
            .filter(|c| c["kind"] == kind)
            .cloned()
            .collect()
    }
}

/// Relative L2 error ‖a − b‖ / ‖b‖.
pub fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let a = a
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap();
    let b = b
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap();
    let num = (&a - &b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt();
    let den = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .sqrt();
    num / den.max(1e-30)
}

/// The device under test: `ODELT_TEST_DEVICE` (default `cpu`), by the library's device names.
pub fn device() -> Device {
    let name = std::env::var("ODELT_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    odelt_nodes::pipeline::device::device(&name)
        .unwrap_or_else(|e| panic!("ODELT_TEST_DEVICE={name}: {e}"))
}
