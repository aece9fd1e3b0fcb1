//! Shared helpers for the host's integration tests: locating the built plugin libraries,
//! building executors, recording events, temporary directories.
//!
//! The test plugins (tests/fixtures, a workspace of their own) are built on first use into
//! `<target>/fixtures`, not into `target/release` where `odelt` looks for plugins; see
//! tests/fixtures/artifacts.rs, which the end-to-end tests' helpers share.
#![allow(dead_code)]

#[path = "../../../tests/fixtures/artifacts.rs"]
mod artifacts;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use odelt_host::{Event, EventKind, EventSink, Executor, ExecutorConfig, PluginSet, Prompt};

#[allow(unused_imports)]
pub use artifacts::{dll_name, fixtures_release_dir, release_dir, repo_root, FIXTURE_LIBS};

/// A test plugin by library name (`odelt_test_plugin`, `odelt_test_plugin_b`,
/// `odelt_old_contract_plugin`), built on first use.
pub fn lib_path(lib: &str) -> PathBuf {
    artifacts::fixture_lib(lib)
}

pub fn test_plugin() -> PathBuf {
    lib_path("odelt_test_plugin")
}

/// The test plugin alone.
pub fn plugins() -> Arc<PluginSet> {
    let mut set = PluginSet::new();
    set.load_file(&test_plugin()).expect("load test plugin");
    Arc::new(set)
}

/// An executor over the test plugin with `workers` workers and a fresh output directory.
pub fn executor_with(workers: usize, cache_runs: u32) -> Executor {
    let out = temp_dir("out");
    Executor::new(
        plugins(),
        ExecutorConfig {
            workers,
            device: "cpu".into(),
            output_dir: out.clone(),
            temp_dir: out.join("temp"),
            models_dir: out.join("models"),
            input_dir: out.join("input"),
            cache_runs,
            ..ExecutorConfig::default()
        },
    )
}

pub fn executor() -> Executor {
    executor_with(4, 1)
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "odelt-host-test-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("create temp dir");
    p
}

pub fn prompt(v: serde_json::Value) -> Prompt {
    Prompt::from_json(v).expect("structurally valid prompt")
}

/// Records every event.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<Event>>);

impl EventSink for Recorder {
    fn emit(&self, e: &Event) {
        self.0.lock().unwrap().push(e.clone());
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
    /// Ids of nodes that started executing, in order.
    pub fn executing(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Executing { node_id, .. } => Some(node_id),
                _ => None,
            })
            .collect()
    }
    pub fn kinds(&self) -> Vec<&'static str> {
        self.events()
            .iter()
            .map(|e| match e.kind {
                EventKind::ExecutionStart => "start",
                EventKind::ExecutionCached { .. } => "cached",
                EventKind::Executing { .. } => "executing",
                EventKind::Progress { .. } => "progress",
                EventKind::ProgressText { .. } => "text",
                EventKind::Executed { .. } => "executed",
                EventKind::NodeDone { .. } => "done",
                EventKind::ExecutionError { .. } => "error",
                EventKind::ExecutionInterrupted { .. } => "interrupted",
                EventKind::ExecutionSuccess => "success",
            })
            .collect()
    }
}
