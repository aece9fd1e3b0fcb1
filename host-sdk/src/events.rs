//! Execution events, their ComfyUI WebSocket form, event sinks and the cancel token.

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use odelt_contract::PreviewFormat;
use serde_json::{json, Value as Json};

/// A preview picture sent with a progress event.
#[derive(Clone, Debug, PartialEq)]
pub struct Preview {
    /// How `data` is encoded.
    pub format: PreviewFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGB8 pixels or an encoded file.
    pub data: Vec<u8>,
}

impl Preview {
    /// The picture as PNG or JPEG bytes (RGB8 is encoded to PNG) with its MIME type, ready
    /// for ComfyUI's binary preview frame.
    pub fn encoded(&self) -> Result<(&'static str, Vec<u8>), String> {
        match self.format {
            PreviewFormat::Png => Ok(("image/png", self.data.clone())),
            PreviewFormat::Jpeg => Ok(("image/jpeg", self.data.clone())),
            PreviewFormat::Rgb8 => {
                let want = self.width as usize * self.height as usize * 3;
                if self.data.len() != want {
                    return Err(format!(
                        "preview {}x{} RGB8 needs {want} bytes, got {}",
                        self.width,
                        self.height,
                        self.data.len()
                    ));
                }
                let mut out = Vec::new();
                let mut enc = png::Encoder::new(Cursor::new(&mut out), self.width, self.height);
                enc.set_color(png::ColorType::Rgb);
                enc.set_depth(png::BitDepth::Eight);
                let mut w = enc.write_header().map_err(|e| e.to_string())?;
                w.write_image_data(&self.data).map_err(|e| e.to_string())?;
                w.finish().map_err(|e| e.to_string())?;
                Ok(("image/png", out))
            }
        }
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    /// The prompt was validated and starts.
    ExecutionStart,
    /// Nodes served from cache (`nodes`), and how many will actually run.
    ExecutionCached {
        /// Ids of cached nodes.
        nodes: Vec<String>,
        /// Number of nodes that will execute.
        to_execute: usize,
    },
    /// A node starts.
    Executing {
        /// Node id.
        node_id: String,
        /// Class type.
        class_type: String,
    },
    /// A node reports progress.
    Progress {
        /// Node id.
        node_id: String,
        /// Current step.
        value: u64,
        /// Total steps.
        max: u64,
        /// Optional preview.
        preview: Option<Preview>,
    },
    /// A node sends a status line.
    ProgressText {
        /// Node id.
        node_id: String,
        /// The text.
        text: String,
    },
    /// An output node produced a UI payload (also sent for cached output nodes).
    Executed {
        /// Node id.
        node_id: String,
        /// Class type.
        class_type: String,
        /// The UI payload, e.g. `{"images": [...]}`.
        output: Json,
        /// Whether it came from cache.
        cached: bool,
    },
    /// A node finished successfully (odelt extension; not a ComfyUI message).
    NodeDone {
        /// Node id.
        node_id: String,
        /// Class type.
        class_type: String,
        /// Wall time of the call in microseconds.
        elapsed_us: u64,
    },
    /// A node failed; the prompt stops.
    ExecutionError {
        /// Node id.
        node_id: String,
        /// Class type.
        node_type: String,
        /// The message.
        message: String,
        /// ComfyUI's exception type string.
        exception_type: String,
        /// Nodes that had completed.
        executed: Vec<String>,
    },
    /// The prompt was cancelled.
    ExecutionInterrupted {
        /// The node running when it stopped, if any.
        node_id: Option<String>,
        /// Its class type.
        node_type: Option<String>,
        /// Nodes that had completed.
        executed: Vec<String>,
    },
    /// The prompt completed.
    ExecutionSuccess,
}

/// An event of one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The prompt's id.
    pub prompt_id: Arc<str>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// What happened.
    pub kind: EventKind,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Event {
    /// A new event stamped now.
    pub fn new(prompt_id: Arc<str>, kind: EventKind) -> Self {
        Event {
            prompt_id,
            timestamp_ms: now_ms(),
            kind,
        }
    }

    /// The ComfyUI WebSocket JSON messages (`{"type", "data"}`) for this event. Success also
    /// yields the final `executing {node: null}`. Previews are not included (they are binary
    /// frames: see [`Preview::encoded`]); `NodeDone` yields nothing.
    pub fn to_comfy_messages(&self) -> Vec<Json> {
        let pid = &*self.prompt_id;
        let ts = self.timestamp_ms;
        let msg = |t: &str, d: Json| json!({"type": t, "data": d});
        match &self.kind {
            EventKind::ExecutionStart => vec![msg(
                "execution_start",
                json!({"prompt_id": pid, "timestamp": ts}),
            )],
            EventKind::ExecutionCached { nodes, .. } => {
                vec![msg(
                    "execution_cached",
                    json!({"nodes": nodes, "prompt_id": pid, "timestamp": ts}),
                )]
            }
            EventKind::Executing { node_id, .. } => vec![msg(
                "executing",
                json!({"node": node_id, "display_node": node_id, "prompt_id": pid}),
            )],
            EventKind::Progress {
                node_id,
                value,
                max,
                ..
            } => vec![msg(
                "progress",
                json!({"value": value, "max": max, "prompt_id": pid, "node": node_id}),
            )],
            EventKind::ProgressText { .. } | EventKind::NodeDone { .. } => Vec::new(),
            EventKind::Executed {
                node_id, output, ..
            } => vec![msg(
                "executed",
                json!({"node": node_id, "display_node": node_id, "output": output, "prompt_id": pid}),
            )],
            EventKind::ExecutionError {
                node_id,
                node_type,
                message,
                exception_type,
                executed,
            } => vec![msg(
                "execution_error",
                json!({"prompt_id": pid, "node_id": node_id, "node_type": node_type, "executed": executed,
                       "exception_message": message, "exception_type": exception_type, "traceback": [],
                       "current_inputs": {}, "current_outputs": [], "timestamp": ts}),
            )],
            EventKind::ExecutionInterrupted {
                node_id,
                node_type,
                executed,
            } => vec![msg(
                "execution_interrupted",
                json!({"prompt_id": pid, "node_id": node_id, "node_type": node_type, "executed": executed, "timestamp": ts}),
            )],
            EventKind::ExecutionSuccess => vec![
                msg(
                    "execution_success",
                    json!({"prompt_id": pid, "timestamp": ts}),
                ),
                msg("executing", json!({"node": null, "prompt_id": pid})),
            ],
        }
    }
}

/// Receives events. Called from worker threads, so it must be `Sync`; keep it quick.
pub trait EventSink: Send + Sync {
    /// Handles one event.
    fn emit(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync> EventSink for F {
    fn emit(&self, event: &Event) {
        self(event)
    }
}

impl EventSink for crossbeam_channel::Sender<Event> {
    fn emit(&self, event: &Event) {
        let _ = self.send(event.clone());
    }
}

/// Ignores every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _: &Event) {}
}

/// A shared flag to stop a run. Cloning shares the flag.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks every run using this token to stop (nodes notice at their next progress step).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether [`CancelToken::cancel`] was called (and not reset).
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// Clears the flag, to reuse the token.
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comfy_messages_have_the_expected_types() {
        let pid: Arc<str> = Arc::from("p");
        let ev = Event::new(pid.clone(), EventKind::ExecutionSuccess);
        let m = ev.to_comfy_messages();
        assert_eq!(m[0]["type"], "execution_success");
        assert_eq!(m[1]["data"]["node"], Json::Null);
        let ev = Event::new(
            pid,
            EventKind::Progress {
                node_id: "3".into(),
                value: 2,
                max: 5,
                preview: None,
            },
        );
        assert_eq!(ev.to_comfy_messages()[0]["data"]["max"], 5);
    }

    #[test]
    fn rgb_preview_encodes_to_png() {
        let p = Preview {
            format: PreviewFormat::Rgb8,
            width: 2,
            height: 1,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let (mime, bytes) = p.encoded().unwrap();
        assert_eq!(mime, "image/png");
        assert_eq!(&bytes[1..4], b"PNG");
        let bad = Preview {
            data: vec![0; 5],
            ..p
        };
        assert!(bad.encoded().is_err());
    }
}
