//! `odelt serve`: a ComfyUI-compatible HTTP and WebSocket server over the host SDK, with a
//! built-in visual editor at `/`.
//!
//! Generic: it knows nodes only through the loaded plugins' `/object_info`. Every route is
//! served bare (`/prompt`) and under `/api` (`/api/prompt`), as ComfyUI does. One worker
//! thread takes prompts from a bounded priority queue and runs them on a shared
//! [`Executor`] (outputs stay cached between prompts as the executor caches them); events go
//! to the WebSocket of the prompt's `client_id` (or to every socket when it has none).
//!
//! With [`ServeConfig::state_dir`] the queue and history are durable ([`store`](self) module
//! `store.rs`: an embedded redb database): `POST /prompt` answers only once the prompt is on
//! disk; [`start`] puts back the prompts a previous server left, the one that was running first
//! (its history entry then says it was restarted), and removes half-written outputs
//! (`.{name}.tmp-{pid}`) whose writer is gone. [`ServerHandle::shutdown`] stops gracefully: no
//! new prompts, the running one may finish within a grace period, else it stays queued.
//!
//! ```no_run
//! use std::sync::Arc;
//! use odelt_host::serve::{start, ServeConfig};
//! use odelt_host::PluginSearch;
//!
//! let plugins = Arc::new(PluginSearch::from_env(vec![]).load()?);
//! let server = start(plugins, ServeConfig::default())?;
//! println!("listening on http://{}", server.addr());
//! server.wait();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod body;
mod config;
mod extract;
mod files;
mod hub;
mod meminfo;
mod multipart;
mod queue;
mod router;
mod routes;
mod safetensors;
mod security;
mod state;
mod store;
mod web;
mod worker;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value as Json};

use crate::executor::{Executor, RunOptions};
use crate::loader::PluginSet;
use crate::prompt::Prompt;
use queue::QueueItem;
use state::Shared;
use store::{PendingRecord, Store};

pub use config::ServeConfig;
pub use files::{resolve_existing, PathFault};
pub use multipart::{parse_disposition, Disposition, MultipartError, Part};
pub use queue::History;
pub use security::origin_allowed;
pub use store::{StoreError, DB_FILE};

/// A prompt started this many times without finishing (each start ended by a crash or a stop)
/// is not run again on the next start: it goes to history as an error.
pub const MAX_STARTS: u32 = 5;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A data directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The async runtime or a thread could not be started.
    #[error("cannot start the server runtime: {0}")]
    Runtime(std::io::Error),
    /// The queue database could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A running server. Dropping it stops the server (without waiting).
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    http: Option<JoinHandle<()>>,
    worker: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The executor the server runs prompts on.
    pub fn executor(&self) -> &Arc<Executor> {
        &self.shared.exec
    }

    /// Blocks until the server stops (it stops only when told to, e.g. by [`ServerHandle::stop`]
    /// from another handle-owning thread, or when the process exits).
    pub fn wait(mut self) {
        if let Some(h) = self.http.take() {
            let _ = h.join();
        }
    }

    /// Stops accepting requests, cancels the running prompt (which stays queued on disk with
    /// a store), closes sockets and waits for the server threads.
    pub fn stop(self) {
        self.shutdown(Duration::ZERO);
    }

    /// A handle that can cut a [`ServerHandle::shutdown`] short from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.shared.clone())
    }

    /// Stops gracefully: no new prompts (`POST /prompt` answers 503 `shutting_down`), no new
    /// connections, sockets closed; the running prompt may finish within `grace`, else it is
    /// cancelled and stays queued (on disk) for the next start. Waits for the server threads
    /// and closes the database cleanly. Returns the id of the prompt put back, if any.
    pub fn shutdown(mut self, grace: Duration) -> Option<String> {
        self.shared.queue.drain();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.shared.hub.close_all();
        self.shared.queue.wait_idle(grace);
        self.shared.queue.stop();
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
        if let Some(h) = self.http.take() {
            let _ = h.join();
        }
        self.shared.queue.close_store();
        self.shared.queue.requeued()
    }

    fn signal_stop(&mut self) {
        self.shared.queue.stop();
        self.shared.hub.close_all();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Cuts a graceful shutdown short: the running prompt is cancelled now and stays queued.
#[derive(Clone)]
pub struct Stopper(Arc<Shared>);

impl Stopper {
    /// Cancels the running prompt (it stays queued) and stops the worker.
    pub fn requeue_now(&self) {
        self.0.queue.stop();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// Starts the server on its own threads (an async runtime for HTTP/WebSocket, one worker
/// for prompts) and returns once it listens.
pub fn start(plugins: Arc<PluginSet>, cfg: ServeConfig) -> Result<ServerHandle, ServeError> {
    for dir in [
        &cfg.executor.output_dir,
        &cfg.executor.temp_dir,
        &cfg.executor.input_dir,
    ] {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::Dir {
            path: dir.clone(),
            source,
        })?;
    }
    let std_listener = TcpListener::bind(cfg.listen).map_err(|source| ServeError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let addr = std_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            addr: cfg.listen,
            source,
        })?;
    std_listener
        .set_nonblocking(true)
        .map_err(ServeError::Runtime)?;

    let exec = Arc::new(Executor::new(plugins, cfg.executor.clone()));
    let mut queue = Shared::queue_for(&cfg);
    if let Some(dir) = &cfg.state_dir {
        let (store, loaded) = Store::open(dir)?;
        for d in &loaded.damaged {
            eprintln!(
                "odelt serve: skipped a damaged record in {}: {d}",
                store.path().display()
            );
        }
        let (items, failed) = resume(&exec, loaded.pending);
        if !items.is_empty() || !failed.is_empty() {
            eprintln!(
                "odelt serve: resumed {} queued prompt(s) from {}{}",
                items.len(),
                store.path().display(),
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} could not be resumed (see their history)",
                        failed.len()
                    )
                }
            );
        }
        queue = queue.with_store(store);
        queue.restore(loaded.history, (loaded.counter, loaded.seq), failed, items);
    }
    for dir in [&cfg.executor.output_dir, &cfg.executor.temp_dir] {
        for f in store::remove_stale_temp_outputs(dir) {
            eprintln!(
                "odelt serve: removed a half-written output left by a stopped writer: {}",
                f.display()
            );
        }
    }
    let shared = Arc::new(Shared::new(exec, cfg, queue));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("odelt-serve")
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let listener = {
        let _enter = runtime.enter();
        tokio::net::TcpListener::from_std(std_listener).map_err(ServeError::Runtime)?
    };
    let app = router::router(shared.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let http = std::thread::Builder::new()
        .name("odelt-serve-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let server = axum::serve(listener, app).with_graceful_shutdown(async move {
                    let _ = rx.await;
                });
                if let Err(e) = server.await {
                    eprintln!("odelt serve: server error: {e}");
                }
            });
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
        })
        .map_err(ServeError::Runtime)?;
    let worker_shared = shared.clone();
    let worker = std::thread::Builder::new()
        .name("odelt-serve-worker".into())
        .spawn(move || worker::run(worker_shared))
        .map_err(ServeError::Runtime)?;
    Ok(ServerHandle {
        addr,
        shared,
        shutdown: Some(tx),
        http: Some(http),
        worker: Some(worker),
    })
}

/// Validates the stored prompts again (the models or plugins may have changed since) and turns
/// them into queue items; the ones that fail, or that were started [`MAX_STARTS`] times, become
/// error entries for history.
fn resume(exec: &Executor, records: Vec<PendingRecord>) -> (Vec<QueueItem>, Vec<(String, Json)>) {
    let mut items = Vec::new();
    let mut failed = Vec::new();
    for rec in records {
        match resume_one(exec, &rec) {
            Ok(item) => items.push(item),
            Err(why) => {
                let entry = unresumable_entry(&rec, &why);
                failed.push((rec.prompt_id, entry));
            }
        }
    }
    (items, failed)
}

fn resume_one(exec: &Executor, rec: &PendingRecord) -> Result<QueueItem, String> {
    if rec.starts >= MAX_STARTS {
        return Err(format!(
            "it was started {} times and each time the server stopped before it ended; it is not run again",
            rec.starts
        ));
    }
    let prompt = Prompt::from_json(rec.prompt.clone()).map_err(|e| e.to_string())?;
    let opts = RunOptions {
        prompt_id: Some(rec.prompt_id.clone()),
        extra_pnginfo: rec.extra_pnginfo.clone(),
        targets: rec.targets.clone(),
        partial: rec.partial,
    };
    let plan = exec
        .validate(&prompt, &opts)
        .map_err(|v| format!("it no longer validates: {}", v.summary()))?;
    Ok(QueueItem {
        rank: if rec.starts > 0 { 0 } else { 1 },
        number: rec.number,
        seq: rec.seq,
        prompt_id: rec.prompt_id.clone(),
        prompt,
        outputs: plan
            .outputs
            .iter()
            .map(|&i| plan.nodes[i].id.clone())
            .collect(),
        plan,
        extra_data: rec.extra_data.clone(),
        client_id: rec.client_id.clone(),
        opts,
        bytes: rec.bytes,
        starts: rec.starts,
    })
}

/// The history entry of a stored prompt that could not be queued again.
fn unresumable_entry(rec: &PendingRecord, why: &str) -> Json {
    let message = format!("the prompt could not be resumed after a restart: {why}");
    let data = json!({"prompt_id": rec.prompt_id, "node_id": null, "node_type": null,
        "executed": [], "exception_message": message, "exception_type": "ResumeError",
        "traceback": [], "current_inputs": {}, "current_outputs": [],
        "timestamp": crate::events::now_ms()});
    json!({
        "prompt": [queue::number_json(rec.number), rec.prompt_id, rec.prompt, rec.extra_data, rec.outputs],
        "outputs": {},
        "status": {"status_str": "error", "completed": false, "restarts": rec.starts,
                   "messages": [["execution_error", data]]},
        "meta": {},
    })
}
