//! The state shared by the HTTP handlers and the prompt worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Map, Value as Json};

use super::config::ServeConfig;
use super::hub::{self, Hub};
use super::queue::Queue;
use crate::executor::Executor;
use crate::sync::lock;

/// The node running now (told to a socket that connects meanwhile, as ComfyUI does).
pub(crate) struct Current {
    pub client: Option<String>,
    pub prompt_id: String,
    pub node_id: String,
}

/// Settings and user files of the (single) frontend user, in memory.
#[derive(Default)]
pub(crate) struct CompatStore {
    pub settings: Mutex<Map<String, Json>>,
    pub userdata: Mutex<HashMap<String, Vec<u8>>>,
}

/// State shared by the HTTP handlers and the worker.
pub(crate) struct Shared {
    pub exec: Arc<Executor>,
    pub queue: Queue,
    pub hub: Hub,
    pub cfg: ServeConfig,
    pub started: Instant,
    /// Settings and user files the stock ComfyUI frontend stores (in memory).
    pub compat: CompatStore,
    /// The node running now.
    pub current: Mutex<Option<Current>>,
    /// Serialises `status` broadcasts so the last one sent is the current count.
    status_lock: Mutex<()>,
}

impl Shared {
    /// An empty queue with `cfg`'s limits.
    pub fn queue_for(cfg: &ServeConfig) -> Queue {
        Queue::new(cfg.max_queue, cfg.max_history)
            .with_byte_limits(cfg.max_queue_bytes, cfg.max_history_bytes)
    }

    /// The state of a server over `exec` configured by `cfg`, with `queue` (no sockets).
    pub fn new(exec: Arc<Executor>, cfg: ServeConfig, queue: Queue) -> Self {
        Shared {
            exec,
            queue,
            hub: Hub::new(),
            cfg,
            started: Instant::now(),
            compat: CompatStore::default(),
            current: Mutex::new(None),
            status_lock: Mutex::new(()),
        }
    }

    /// Sends `status` with the current queue count to every socket.
    pub fn broadcast_status(&self) {
        let _g = lock(&self.status_lock);
        let n = self.queue.remaining();
        self.hub.send_json(None, &hub::status_message(n, None));
    }

    /// The server's feature flags (`/features` and the WebSocket `feature_flags` reply).
    pub fn features(&self) -> Json {
        json!({"supports_preview_metadata": true, "max_upload_size": self.cfg.max_upload_bytes})
    }
}
