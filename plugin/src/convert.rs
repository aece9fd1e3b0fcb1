//! Conversions between the contract's values and the pipeline's: tensors, errors, validation issues.

use odelt_contract::{ErrorKind, NodeError, TensorBuf, ValidationIssue};
use odelt_nodes::pipeline::validate::Issue;
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

/// Validation issues for the host.
pub fn issues(v: Vec<Issue>) -> Vec<ValidationIssue> {
    v.into_iter()
        .map(|i| ValidationIssue::new(&i.input, i.message))
        .collect()
}
