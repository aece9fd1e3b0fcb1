//! Host errors as the Python exceptions of `odelt.errors` (defined in Python, so they can inherit from both
//! `OdeltError` and the matching built-in): each carries ComfyUI's error type (`exception_type`), the node id and
//! class, and the prompt id where there is one.

use odelt_host::{
    BatchRunError, LoadError, PromptError, RunError, ValidationFailure, WorkflowError,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Value as Json;

use crate::convert::json_to_py;

/// Builds `odelt.errors.<class>(message, **attrs)` as a `PyErr`.
pub fn raise(py: Python<'_>, class: &str, message: &str, attrs: &[(&str, Json)]) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = py.import("odelt.errors")?.getattr(class)?;
        let kw = PyDict::new(py);
        for (k, v) in attrs {
            kw.set_item(*k, json_to_py(py, v)?)?;
        }
        let obj = cls.call((message,), Some(&kw))?;
        Ok(PyErr::from_value(obj))
    };
    build().unwrap_or_else(|e| e)
}

fn s(v: &str) -> Json {
    Json::String(v.to_string())
}

/// A malformed workflow (not JSON, not an object of nodes, a bad override).
pub fn workflow_error(py: Python<'_>, e: &WorkflowError) -> PyErr {
    raise(
        py,
        "WorkflowError",
        &e.to_string(),
        &[("exception_type", s("invalid_prompt"))],
    )
}

/// A structurally invalid prompt.
pub fn prompt_error(py: Python<'_>, e: &PromptError) -> PyErr {
    raise(
        py,
        "WorkflowError",
        &e.to_string(),
        &[
            ("exception_type", s("invalid_prompt")),
            ("details", e.to_comfy()),
        ],
    )
}

/// ComfyUI's validation failure: the first node error gives the type and node id.
pub fn validation_error(py: Python<'_>, v: &ValidationFailure) -> PyErr {
    let mut message = v.summary();
    let mut ty = v.error_type().to_string();
    let mut node_id = Json::Null;
    let mut class_type = Json::Null;
    if let Some((id, n)) = v.node_errors.iter().next() {
        node_id = s(id);
        class_type = n["class_type"].clone();
        if let Some(first) = n["errors"].as_array().and_then(|a| a.first()) {
            if let Some(t) = first["type"].as_str() {
                ty = t.to_string();
            }
            let m = first["message"].as_str().unwrap_or("");
            let d = first["details"].as_str().unwrap_or("");
            if !message.contains(d) || d.is_empty() {
                message = format!(
                    "{message}: node {id} ({}): {m}{}{d}",
                    class_type.as_str().unwrap_or("?"),
                    if d.is_empty() { "" } else { ": " }
                );
            }
        }
    }
    raise(
        py,
        "ValidationError",
        &message,
        &[
            ("exception_type", Json::String(ty)),
            ("node_id", node_id),
            ("class_type", class_type),
            ("error", v.error.clone()),
            ("node_errors", Json::Object(v.node_errors.clone())),
        ],
    )
}

/// A failed or interrupted run.
pub fn run_error(py: Python<'_>, e: &RunError) -> PyErr {
    match e {
        RunError::Validation(v) => validation_error(py, v),
        RunError::Node {
            prompt_id,
            node_id,
            class_type,
            kind,
            message,
            executed,
        } => raise(
            py,
            "NodeError",
            &format!("node {node_id} ({class_type}) failed: {message}"),
            &[
                ("exception_type", s(kind.exception_type())),
                ("node_id", s(node_id)),
                ("class_type", s(class_type)),
                ("prompt_id", s(prompt_id)),
                ("executed", serde_json::json!(executed)),
                ("details", s(message)),
            ],
        ),
        RunError::Interrupted {
            prompt_id,
            node_id,
            executed,
        } => raise(
            py,
            "Interrupted",
            &e.to_string(),
            &[
                ("exception_type", s("InterruptProcessingException")),
                ("node_id", node_id.as_deref().map_or(Json::Null, s)),
                ("prompt_id", s(prompt_id)),
                ("executed", serde_json::json!(executed)),
            ],
        ),
    }
}

/// A failed batch item.
pub fn batch_error(py: Python<'_>, e: &BatchRunError) -> PyErr {
    match e {
        BatchRunError::Prompt(p) => prompt_error(py, p),
        BatchRunError::Override(w) => workflow_error(py, w),
        BatchRunError::Run(r) => run_error(py, r),
    }
}

/// Plugins that could not be loaded.
pub fn load_error(py: Python<'_>, e: &LoadError) -> PyErr {
    raise(
        py,
        "PluginLoadError",
        &e.to_string(),
        &[("exception_type", s("PluginLoadError"))],
    )
}
