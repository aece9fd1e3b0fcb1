//! The server's settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::executor::ExecutorConfig;

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Address to listen on (loopback by default; port 0 picks a free port).
    pub listen: SocketAddr,
    /// The executor's settings (device, workers, models/input/output/temp directories, cache);
    /// its `input_dir` is ComfyUI's `input/` folder (uploads, `/view?type=input`).
    pub executor: ExecutorConfig,
    /// Most prompts waiting in the queue; more are answered 503 `queue_full`.
    pub max_queue: usize,
    /// Most history entries kept (oldest dropped first).
    pub max_history: usize,
    /// Most bytes of waiting requests; more are answered 503 `queue_full`.
    pub max_queue_bytes: usize,
    /// Most bytes of history JSON kept (oldest dropped first; the newest always stays).
    pub max_history_bytes: usize,
    /// Largest accepted upload body in bytes (413 beyond).
    pub max_upload_bytes: usize,
    /// Largest accepted JSON request body in bytes (413 beyond).
    pub max_json_bytes: usize,
    /// A stock ComfyUI frontend build to serve at `/` instead of the built-in editor.
    pub frontend_root: Option<PathBuf>,
    /// Where the queue and history are kept across restarts (`serve.redb` inside). `None`
    /// keeps them in memory only (the library default, which tests use); `odelt serve` uses
    /// `.odelt-state/` beside the output directory unless told `--no-persist`.
    pub state_dir: Option<PathBuf>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8188)),
            executor: ExecutorConfig::default(),
            max_queue: 1000,
            max_history: 10_000,
            max_queue_bytes: 512 << 20,
            max_history_bytes: 256 << 20,
            max_upload_bytes: 32 << 20,
            max_json_bytes: 16 << 20,
            frontend_root: None,
            state_dir: None,
        }
    }
}
