//! `Host.call`: one node run with Python values, outside any workflow (no cache, no graph). Widget values go
//! through the host's own literal checks (ranges, combos, INT to FLOAT); tensors come from numpy arrays and
//! handles from `odelt.Handle` objects.

use std::sync::Arc;

use odelt_host::odelt_contract::abi_stable::std_types::{ROption, RStr, RString};
use odelt_host::odelt_contract::{
    types, ExecContext, HostHooks, InputSpec, InputType, NamedValue, NodeError, NodeInfo,
    NodeOutput, PreviewImage, Value,
};
use odelt_host::validate::check_literal;
use odelt_host::{CancelToken, Event, EventKind, EventSink, Preview};
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

/// What the plugin's hooks see: the event sink and the cancel token of the call.
struct HookData<'a> {
    sink: &'a dyn EventSink,
    cancel: &'a CancelToken,
    prompt_id: Arc<str>,
    node_id: &'a str,
}

extern "C" fn hook_progress(
    data: *const (),
    value: u64,
    max: u64,
    preview: ROption<PreviewImage<'_>>,
) {
    // SAFETY: `data` is the HookData built in `execute`, alive for the whole plugin call.
    let d = unsafe { &*(data as *const HookData<'_>) };
    let preview = preview.into_option().map(|p| Preview {
        format: p.format,
        width: p.width,
        height: p.height,
        data: p.data.as_slice().to_vec(),
    });
    let ev = Event::new(
        d.prompt_id.clone(),
        EventKind::Progress {
            node_id: d.node_id.to_string(),
            value,
            max,
            preview,
        },
    );
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.sink.emit(&ev)));
}

extern "C" fn hook_cancelled(data: *const ()) -> bool {
    // SAFETY: see hook_progress.
    let d = unsafe { &*(data as *const HookData<'_>) };
    d.cancel.is_cancelled()
}

extern "C" fn hook_text(data: *const (), text: RStr<'_>) {
    // SAFETY: see hook_progress.
    let d = unsafe { &*(data as *const HookData<'_>) };
    let ev = Event::new(
        d.prompt_id.clone(),
        EventKind::ProgressText {
            node_id: d.node_id.to_string(),
            text: text.to_string(),
        },
    );
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.sink.emit(&ev)));
}

/// The host's side of one call (directories as absolute strings, as the executor gives them).
pub struct CallSite<'a> {
    pub node_id: &'a str,
    pub class_type: &'a str,
    pub prompt_id: Arc<str>,
    pub device: &'a str,
    pub prompt_json: &'a str,
    pub extra_pnginfo: &'a str,
    pub output_dir: &'a str,
    pub temp_dir: &'a str,
    pub models_dir: &'a str,
    pub input_dir: &'a str,
}

/// Calls the plugin's `execute` for one node (on the current thread).
pub fn execute(
    plugin: &odelt_host::LoadedPlugin,
    site: &CallSite<'_>,
    inputs: &[NamedValue],
    sink: &dyn EventSink,
    cancel: &CancelToken,
) -> Result<NodeOutput, NodeError> {
    if cancel.is_cancelled() {
        return Err(NodeError::interrupted());
    }
    let data = HookData {
        sink,
        cancel,
        prompt_id: site.prompt_id.clone(),
        node_id: site.node_id,
    };
    // SAFETY: `data` outlives the call; the hooks only read it and never unwind.
    let hooks = unsafe {
        HostHooks::new(
            &data as *const HookData<'_> as *const (),
            hook_progress,
            hook_cancelled,
            hook_text,
        )
    };
    // Built from `detached()` so that fields a newer contract adds keep their "none" defaults.
    let mut ctx = ExecContext::detached();
    ctx.node_id = RStr::from_str(site.node_id);
    ctx.class_type = RStr::from_str(site.class_type);
    ctx.prompt_id = RStr::from_str(&site.prompt_id);
    ctx.device = RStr::from_str(site.device);
    ctx.prompt_json = RStr::from_str(site.prompt_json);
    ctx.extra_pnginfo_json = RStr::from_str(site.extra_pnginfo);
    ctx.output_dir = RStr::from_str(site.output_dir);
    ctx.temp_dir = RStr::from_str(site.temp_dir);
    ctx.models_dir = RStr::from_str(site.models_dir);
    ctx.input_dir = RStr::from_str(site.input_dir);
    ctx.hooks = hooks;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        plugin.execute(site.class_type, inputs, &ctx)
    }))
    .unwrap_or_else(|_| {
        Err(NodeError::failed(
            "the host panicked while running this node",
        ))
    })
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
