//! The prompt worker: takes prompts off the queue, runs them on the executor, forwards
//! events to WebSockets and stores the history entry before announcing the end. A prompt that
//! a stop cancels gets no history entry: it stays queued on disk and the next server runs it
//! again, its entry then marked as restarted (`status.restarts`, an `execution_restarted`
//! message first).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value as Json};

use super::hub::{text_frame, Hub};
use super::queue::{Next, QueueItem};
use super::state::{Current, Shared};
use crate::events::{CancelToken, Event, EventKind, EventSink};

/// Runs until the queue is stopped.
pub(crate) fn run(shared: Arc<Shared>) {
    loop {
        match shared.queue.next() {
            Next::Stop => return,
            Next::Free {
                unload_models,
                free_memory,
            } => {
                for e in shared.exec.free(unload_models, free_memory) {
                    eprintln!("odelt serve: /free: {e}");
                }
            }
            Next::Run(item, cancel) => {
                shared.broadcast_status();
                run_one(&shared, &item, &cancel);
                shared.broadcast_status();
            }
        }
    }
}

/// Forwards one prompt's events and remembers what history needs.
struct PromptSink<'a> {
    hub: &'a Hub,
    client: Option<&'a str>,
    /// `executed` UI payloads by node id.
    outputs: Mutex<Map<String, Json>>,
    /// `[type, data]` pairs for history `status.messages`.
    messages: Mutex<Vec<Json>>,
    /// Messages held back until history is stored (the end of the prompt).
    terminal: Mutex<Vec<Json>>,
    /// Per-node state for ComfyUI's newer `progress_state` message.
    states: Mutex<Map<String, Json>>,
    /// Where the prompt is, for sockets that connect while it runs.
    current: &'a Mutex<Option<Current>>,
}

impl PromptSink<'_> {
    /// Updates one node's state and sends `progress_state` with every node's.
    fn progress_state(&self, prompt_id: &str, node_id: &str, update: impl FnOnce(&mut Json)) {
        let Ok(mut states) = self.states.lock() else {
            return;
        };
        let entry = states.entry(node_id.to_string()).or_insert_with(|| {
            json!({"value": 0, "max": 1, "state": "running", "node_id": node_id,
                   "prompt_id": prompt_id, "display_node_id": node_id,
                   "parent_node_id": null, "real_node_id": node_id})
        });
        update(entry);
        let msg = json!({"type": "progress_state",
                         "data": {"prompt_id": prompt_id, "nodes": Json::Object(states.clone())}});
        drop(states);
        self.hub.send_json(self.client, &msg);
    }
}

impl EventSink for PromptSink<'_> {
    fn emit(&self, ev: &Event) {
        let msgs = ev.to_comfy_messages();
        let pid = &*ev.prompt_id;
        match &ev.kind {
            EventKind::Executing { node_id, .. } => {
                if let Ok(mut c) = self.current.lock() {
                    *c = Some(Current {
                        client: self.client.map(str::to_string),
                        prompt_id: pid.to_string(),
                        node_id: node_id.clone(),
                    });
                }
                for m in &msgs {
                    self.hub.send_json(self.client, m);
                }
                self.progress_state(pid, node_id, |_| {});
                return;
            }
            EventKind::Progress {
                node_id,
                value,
                max,
                ..
            } => {
                let (v, m) = (*value, *max);
                self.progress_state(pid, node_id, |e| {
                    e["value"] = json!(v);
                    e["max"] = json!(m);
                });
            }
            EventKind::NodeDone { node_id, .. } => {
                self.progress_state(pid, node_id, |e| {
                    e["state"] = json!("finished");
                    e["value"] = e["max"].clone();
                });
                return;
            }
            EventKind::ExecutionError { node_id, .. } => {
                self.progress_state(pid, node_id, |e| e["state"] = json!("error"));
            }
            _ => {}
        }
        match &ev.kind {
            EventKind::ExecutionStart | EventKind::ExecutionCached { .. } => {
                if let (Some(m), Ok(mut h)) = (msgs.first(), self.messages.lock()) {
                    h.push(json!([m["type"], m["data"]]));
                }
            }
            EventKind::Executed {
                node_id, output, ..
            } => {
                if let Ok(mut o) = self.outputs.lock() {
                    o.insert(node_id.clone(), output.clone());
                }
            }
            EventKind::Progress {
                node_id,
                preview: Some(p),
                ..
            } => {
                for m in &msgs {
                    self.hub.send_json(self.client, m);
                }
                match p.encoded() {
                    Ok((mime, bytes)) => {
                        self.hub
                            .send_preview(self.client, mime, &bytes, node_id, &ev.prompt_id)
                    }
                    Err(e) => eprintln!("odelt serve: preview of node {node_id}: {e}"),
                }
                return;
            }
            EventKind::ProgressText { node_id, text } => {
                self.hub.send_binary(self.client, text_frame(node_id, text));
                return;
            }
            EventKind::ExecutionError { .. }
            | EventKind::ExecutionInterrupted { .. }
            | EventKind::ExecutionSuccess => {
                if let (Some(m), Ok(mut h)) = (msgs.first(), self.messages.lock()) {
                    h.push(json!([m["type"], m["data"]]));
                }
                if let Ok(mut t) = self.terminal.lock() {
                    t.extend(msgs);
                }
                return;
            }
            _ => {}
        }
        for m in &msgs {
            self.hub.send_json(self.client, m);
        }
    }
}

fn run_one(shared: &Shared, item: &QueueItem, cancel: &CancelToken) {
    let sink = PromptSink {
        hub: &shared.hub,
        client: item.client_id.as_deref(),
        outputs: Mutex::new(Map::new()),
        messages: Mutex::new(Vec::new()),
        terminal: Mutex::new(Vec::new()),
        states: Mutex::new(Map::new()),
        current: &shared.current,
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        shared
            .exec
            .run_plan(&item.prompt, &item.plan, &item.opts, &sink, cancel)
            .is_ok()
    }));
    let (status_str, completed) = match result {
        Ok(true) => ("success", true),
        _ => ("error", false),
    };
    if !completed && cancel.is_cancelled() && shared.queue.stopping_requeues() {
        if let Ok(mut c) = shared.current.lock() {
            *c = None;
        }
        shared.queue.requeue_running();
        return;
    }
    let mut messages = Vec::new();
    if item.starts > 0 {
        messages.push(json!(["execution_restarted", {
            "prompt_id": item.prompt_id, "restarts": item.starts,
            "reason": "the server stopped while this prompt ran; it was run again from the start",
            "timestamp": crate::events::now_ms()}]));
    }
    messages.extend(sink.messages.lock().map(|m| m.clone()).unwrap_or_default());
    let mut terminal = sink.terminal.lock().map(|t| t.clone()).unwrap_or_default();
    if result.is_err() {
        // The executor itself panicked: report it like a node error.
        let data = json!({"prompt_id": item.prompt_id, "node_id": null, "node_type": null,
            "executed": [], "exception_message": "the host panicked while running this prompt",
            "exception_type": "RuntimeError", "traceback": [], "current_inputs": {},
            "current_outputs": [], "timestamp": crate::events::now_ms()});
        messages.push(json!(["execution_error", data]));
        terminal.push(json!({"type": "execution_error", "data": data}));
    }
    let has_end = terminal
        .iter()
        .any(|m| m["type"] == "executing" && m["data"]["node"].is_null());
    if !has_end {
        terminal.push(
            json!({"type": "executing", "data": {"node": null, "prompt_id": item.prompt_id}}),
        );
    }
    let outputs = sink.outputs.lock().map(|o| o.clone()).unwrap_or_default();
    let meta: Map<String, Json> = outputs
        .keys()
        .map(|id| {
            (
                id.clone(),
                json!({"node_id": id, "display_node": id, "parent_node": null, "real_node_id": id}),
            )
        })
        .collect();
    let mut status =
        json!({"status_str": status_str, "completed": completed, "messages": messages});
    if item.starts > 0 {
        status["restarts"] = json!(item.starts);
    }
    let entry = json!({
        "prompt": item.tuple(),
        "outputs": outputs,
        "status": status,
        "meta": meta,
    });
    if let Ok(mut c) = shared.current.lock() {
        *c = None;
    }
    shared.queue.finish(&item.prompt_id, entry);
    for m in &terminal {
        shared.hub.send_json(item.client_id.as_deref(), m);
    }
}
