//! # odelt-host — the generic host SDK
//!
//! Loads node plugins built against [`odelt_contract`], validates ComfyUI API-format
//! workflows, runs them (caching, worker pool, per-device serialization, progress events,
//! cancellation) and offers a batch API for scripts. The `odelt` command is a thin front end
//! over it; a server can share one [`Executor`] (it is `Send + Sync`) behind an `Arc`.
//! Nothing here knows about any particular node or model.
//!
//! ```no_run
//! use std::sync::Arc;
//! use odelt_host::{CancelToken, Event, EventKind, Executor, ExecutorConfig, PluginSearch, Prompt, RunOptions};
//!
//! // Plugins next to the executable and in ODELT_PLUGIN_PATH (or explicit paths).
//! let plugins = Arc::new(PluginSearch::from_env(vec![]).load()?);
//! let exec = Executor::new(plugins, ExecutorConfig::default());
//! let prompt = Prompt::from_json_str(&std::fs::read_to_string("workflow_api.json")?)?;
//! let cancel = CancelToken::new();
//! let sink = |ev: &Event| {
//!     if let EventKind::Progress { node_id, value, max, .. } = &ev.kind {
//!         eprintln!("node {node_id}: {value}/{max}");
//!     }
//! };
//! match exec.run(&prompt, &RunOptions::default(), &sink, &cancel) {
//!     Ok(outcome) => println!("{}", outcome.ui_outputs()),
//!     Err(odelt_host::RunError::Validation(v)) => eprintln!("{}", v.to_json()),
//!     Err(e) => eprintln!("{e}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules: [`loader`] (plugins), [`prompt`] (parsing), [`validate`] (ComfyUI error shapes),
//! [`executor`] (running), [`events`] (event stream, cancel token), [`batch`] (scripts),
//! [`serve`] (the ComfyUI-compatible HTTP/WebSocket server and built-in editor of `odelt serve`).
#![warn(missing_docs)]
// Validation failures carry ComfyUI's whole `node_errors` map by value; they are made once per refused prompt, off
// any hot path, so boxing them would only add noise to every caller.
#![allow(clippy::result_large_err)]

pub mod batch;
pub mod cache;
pub mod dirs;
pub mod events;
pub mod executor;
pub mod loader;
pub mod node_call;
mod node_io;
mod pool;
pub mod prompt;
mod schedule;
pub mod serve;
mod sync;
pub mod validate;

pub use batch::{Batch, BatchItem, BatchResult, BatchRunError, Workflow, WorkflowError};
pub use cache::CacheEntry;
pub use dirs::HostDirs;
pub use events::{CancelToken, Event, EventKind, EventSink, NullSink, Preview};
pub use executor::{
    new_prompt_id, Executor, ExecutorConfig, NodeResult, RunError, RunOptions, RunOutcome,
};
pub use loader::{LoadError, LoadedPlugin, PluginSearch, PluginSet};
pub use prompt::{InputValue, Prompt, PromptError, PromptNode};
pub use validate::{Plan, ValidationFailure};

pub use odelt_contract;
