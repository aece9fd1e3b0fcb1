//! Conversions between the contract's values and the pipeline's: tensors, errors, validation issues, directories.

use std::path::PathBuf;

use odelt_contract::abi_stable::std_types::RStr;
use odelt_contract::{ErrorKind, NodeError, TensorBuf, ValidationIssue};
use odelt_nodes::pipeline::Array;

/// A host tensor (f32) as a pipeline array (one copy).
pub fn array_of(name: &str, t: &TensorBuf) -> Result<Array, NodeError> {
    let vals = t
        .f32_values()
        .map_err(|e| NodeError::invalid_input(name, e.message))?;
    Array::new(t.dims(), vals.into_owned()).map_err(|e| NodeError::invalid_input(name, e))
}

/// A pipeline array as a host tensor (one copy).
pub fn tensor_of(a: &Array) -> Result<TensorBuf, NodeError> {
    let shape: Vec<u64> = a.shape.iter().map(|&d| d as u64).collect();
    TensorBuf::from_f32(&shape, &a.data)
}

/// A pipeline error as a node error: cancellation → interrupted, allocation failures → out of memory.
pub fn node_error(e: odelt_nodes::Error) -> NodeError {
    let msg = e.to_string();
    match e {
        odelt_nodes::Error::Cancelled => NodeError::interrupted(),
        _ if looks_like_oom(&msg) => NodeError::new(ErrorKind::OutOfMemory, msg),
        _ => NodeError::failed(msg),
    }
}

/// A pipeline error about one input.
pub fn input_error(name: &str, e: odelt_nodes::Error) -> NodeError {
    match e {
        odelt_nodes::Error::Cancelled => NodeError::interrupted(),
        e => NodeError::invalid_input(name, e),
    }
}

fn looks_like_oom(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("out of memory")
        || m.contains("cuda_error_out_of_memory")
        || m.contains("alloc") && m.contains("fail")
}

/// A validation issue for `input` from a pipeline check.
pub fn issue(input: &str, e: impl std::fmt::Display) -> ValidationIssue {
    ValidationIssue::new(input, e.to_string())
}

/// A host directory, or `default` (relative to the working directory) when the host left it empty.
pub fn dir_or(host_dir: RStr<'_>, default: &str) -> PathBuf {
    if host_dir.is_empty() {
        PathBuf::from(default)
    } else {
        PathBuf::from(host_dir.as_str())
    }
}
