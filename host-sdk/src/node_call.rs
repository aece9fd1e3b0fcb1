//! One call of a plugin's node with the host's hooks: progress and status text become [`Event`]s on a sink,
//! cancellation comes from a [`CancelToken`], and a panic on the host's side of the call is an error, not an
//! unwind across the ABI. The executor calls nodes through it, and so does any host that runs single nodes
//! (the Python module's `Host.call`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use abi_stable::std_types::{ROption, RStr};
use odelt_contract::{
    ExecContext, HostContext, HostHooks, NamedValue, NodeError, NodeOutput, PreviewImage,
};

use crate::events::{CancelToken, Event, EventKind, EventSink, Preview};
use crate::loader::LoadedPlugin;

/// Who is called, for which prompt, and where the host runs it.
pub struct CallSite<'a> {
    /// The node's id in the prompt.
    pub node_id: &'a str,
    /// The node's class.
    pub class_type: &'a str,
    /// The prompt (run) the events belong to.
    pub prompt_id: Arc<str>,
    /// The whole API-format prompt as JSON (empty: none).
    pub prompt_json: &'a str,
    /// The `extra_pnginfo` JSON object (empty: none).
    pub extra_pnginfo: &'a str,
    /// Device and directories.
    pub host: HostContext<'a>,
}

/// What the plugin's hooks see (the opaque pointer of [`HostHooks`]).
struct HookData<'a> {
    sink: &'a dyn EventSink,
    cancel: &'a CancelToken,
    prompt_id: &'a Arc<str>,
    node_id: &'a str,
}

fn emit(d: &HookData<'_>, kind: EventKind) {
    let ev = Event::new(d.prompt_id.clone(), kind);
    let _ = catch_unwind(AssertUnwindSafe(|| d.sink.emit(&ev)));
}

extern "C" fn hook_progress(
    data: *const (),
    value: u64,
    max: u64,
    preview: ROption<PreviewImage<'_>>,
) {
    // SAFETY: `data` is the `HookData` built in `call_node`, alive for the whole plugin call.
    let d = unsafe { &*(data as *const HookData<'_>) };
    let preview = preview.into_option().map(|p| Preview {
        format: p.format,
        width: p.width,
        height: p.height,
        data: p.data.as_slice().to_vec(),
    });
    let node_id = d.node_id.to_string();
    emit(
        d,
        EventKind::Progress {
            node_id,
            value,
            max,
            preview,
        },
    );
}

extern "C" fn hook_cancelled(data: *const ()) -> bool {
    // SAFETY: see hook_progress.
    let d = unsafe { &*(data as *const HookData<'_>) };
    d.cancel.is_cancelled()
}

extern "C" fn hook_text(data: *const (), text: RStr<'_>) {
    // SAFETY: see hook_progress.
    let d = unsafe { &*(data as *const HookData<'_>) };
    let node_id = d.node_id.to_string();
    emit(
        d,
        EventKind::ProgressText {
            node_id,
            text: text.to_string(),
        },
    );
}

/// Runs `site`'s node of `plugin` on the current thread with these inputs; progress and text go to `sink`,
/// `cancel` stops it at its next progress step.
pub fn call_node(
    plugin: &LoadedPlugin,
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
        prompt_id: &site.prompt_id,
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
    let h = &site.host;
    let ctx = ExecContext {
        node_id: RStr::from_str(site.node_id),
        class_type: RStr::from_str(site.class_type),
        prompt_id: RStr::from_str(&site.prompt_id),
        device: h.device,
        prompt_json: RStr::from_str(site.prompt_json),
        extra_pnginfo_json: RStr::from_str(site.extra_pnginfo),
        output_dir: h.output_dir,
        temp_dir: h.temp_dir,
        models_dir: h.models_dir,
        input_dir: h.input_dir,
        hooks,
        extra_model_dirs: h.extra_model_dirs,
    };
    catch_unwind(AssertUnwindSafe(|| {
        plugin.execute(site.class_type, inputs, &ctx)
    }))
    .unwrap_or_else(|_| {
        Err(NodeError::failed(
            "the host panicked while running this node",
        ))
    })
}
