//! `Host.call`: one node run with Python values, outside any workflow (no cache, no graph). Widget values go
//! through the host's own literal checks (ranges, combos, INT to FLOAT); tensors come from numpy arrays and
//! handles from `odelt.Handle` objects. The call itself is `odelt_host::node_call::call_node`, as in the executor.

use odelt_host::odelt_contract::abi_stable::std_types::RString;
use odelt_host::odelt_contract::{
    types, InputSpec, InputType, NamedValue, NodeInfo, NodeOutput, Value,
};
use odelt_host::validate::check_literal;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::{json, Value as Json};

use crate::convert::{is_array_like, numpy_to_tensor, py_to_json, PyHandle};
use crate::errors::raise;

/// The prepared inputs of one call.
pub struct CallInputs {
    pub values: Vec<NamedValue>,
}

fn input_error(py: Python<'_>, class_type: &str, node_id: &str, e: Json) -> PyErr {
    let ty = e["type"].as_str().unwrap_or("invalid_input").to_string();
    let message = format!(
        "node {node_id} ({class_type}): {}: {}",
        e["message"].as_str().unwrap_or("invalid input"),
        e["details"].as_str().unwrap_or("")
    );
    raise(
        py,
        "ValidationError",
        &message,
        &[
            ("exception_type", Json::String(ty)),
            ("node_id", json!(node_id)),
            ("class_type", json!(class_type)),
            ("error", e),
        ],
    )
}

fn is_tensor_type(spec: &InputSpec) -> bool {
    matches!(&spec.ty, InputType::Named(n)
        if n.split(',').any(|t| [types::IMAGE, types::LATENT, "MASK"].contains(&t.trim())))
}

/// Converts the given Python inputs for node `info`, filling missing inputs that have a default.
pub fn prepare(
    py: Python<'_>,
    info: &NodeInfo,
    node_id: &str,
    inputs: Option<&Bound<'_, PyDict>>,
) -> PyResult<CallInputs> {
    let class_type = info.name.as_str();
    let err = |e: Json| input_error(py, class_type, node_id, e);
    let mut given: Vec<(String, Bound<'_, PyAny>)> = Vec::new();
    if let Some(d) = inputs {
        for (k, v) in d.iter() {
            let name: String = k.extract()?;
            if info.input_spec(&name).is_none() {
                return Err(err(json!({
                    "type": "unknown_input", "message": "Unknown input",
                    "details": format!("{class_type} has no input '{name}'"),
                    "extra_info": {"input_name": name}})));
            }
            given.push((name, v));
        }
    }
    let declared = info
        .input
        .required
        .iter()
        .map(|(n, s)| (n, s, true))
        .chain(info.input.optional.iter().map(|(n, s)| (n, s, false)));
    let mut values = Vec::new();
    for (name, spec, required) in declared {
        let v = given.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let value = match v {
            None => match &spec.options.default {
                Some(d) if required => check_literal(name, spec, d).map_err(err)?.0,
                _ if required => {
                    return Err(err(json!({
                        "type": "required_input_missing", "message": "Required input is missing",
                        "details": name, "extra_info": {"input_name": name}})))
                }
                _ => continue,
            },
            Some(v) => {
                if let Ok(h) = v.cast::<PyHandle>() {
                    Value::Handle(h.get().handle.clone())
                } else if is_tensor_type(spec) {
                    // ComfyUI's LATENT is {"samples": tensor}; take the tensor.
                    let t = match v.cast::<PyDict>() {
                        Ok(d) => match d.get_item("samples")? {
                            Some(s) => s,
                            None => v.clone(),
                        },
                        Err(_) => v.clone(),
                    };
                    Value::tensor(numpy_to_tensor(&t)?)
                } else if is_array_like(v)? && !v.is_instance_of::<pyo3::types::PyString>() {
                    Value::tensor(numpy_to_tensor(v)?)
                } else {
                    let j = py_to_json(v)?;
                    check_literal(name, spec, &j).map_err(err)?.0
                }
            }
        };
        values.push(NamedValue {
            name: RString::from(name),
            value,
        });
    }
    Ok(CallInputs { values })
}

/// Checks the returned values against the descriptor and parses the UI payload.
pub fn check_output(
    info: &NodeInfo,
    out: NodeOutput,
) -> Result<(Vec<Value>, Option<Json>), String> {
    if out.values.len() != info.output.len() {
        return Err(format!(
            "plugin returned {} values but node {} declares {} outputs",
            out.values.len(),
            info.name,
            info.output.len()
        ));
    }
    let ui = match out.ui.into_option() {
        None => None,
        Some(s) => Some(
            serde_json::from_str::<Json>(s.as_str())
                .map_err(|e| format!("UI payload is not JSON: {e}"))?,
        ),
    };
    Ok((out.values.into_vec(), ui))
}
