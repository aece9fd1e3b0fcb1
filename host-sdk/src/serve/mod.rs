//! `odelt serve`: a ComfyUI-compatible HTTP and WebSocket server over the host SDK, with a
//! built-in visual editor at `/`.
//!
//! Generic: it knows nodes only through the loaded plugins' `/object_info`. Every route is
//! served bare (`/prompt`) and under `/api` (`/api/prompt`), as ComfyUI does. One worker
//! thread takes prompts from a bounded priority queue and runs them on a shared
//! [`Executor`] (outputs stay cached between prompts as the executor caches them); events go
//! to the WebSocket of the prompt's `client_id` (or to every socket when it has none).
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
mod web;
mod worker;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::executor::Executor;
use crate::loader::PluginSet;
use state::Shared;

pub use config::ServeConfig;
pub use files::{resolve_existing, PathFault};
pub use multipart::{parse_disposition, Disposition, MultipartError, Part};
pub use queue::History;
pub use security::origin_allowed;

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

    /// Stops accepting requests, cancels the running prompt, closes sockets and waits for
    /// the server threads.
    pub fn stop(mut self) {
        self.signal_stop();
        if let Some(h) = self.http.take() {
            let _ = h.join();
        }
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }

    fn signal_stop(&mut self) {
        self.shared.queue.stop();
        self.shared.hub.close_all();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
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
    let shared = Arc::new(Shared::new(exec, cfg));

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
