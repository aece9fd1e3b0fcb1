//! Shared helpers for the host's integration tests: locating the built plugin libraries,
//! building executors, recording events, temporary directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use odelt_host::{Event, EventKind, EventSink, Executor, ExecutorConfig, PluginSet, Prompt};

/// `target/release` (or `$CARGO_TARGET_DIR/release`).
pub fn release_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release")
}

/// Path of a built cdylib by library name (`odelt_test_plugin`), or a panic saying how to build it.
pub fn lib_path(lib: &str) -> PathBuf {
    let p = release_dir().join(format!(
        "{}{lib}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        p.exists(),
        "{} is missing: build the test plugins first with \
         `cargo build --release -p odelt-test-plugin -p odelt-test-plugin-b -p odelt-old-contract-plugin` \
         (or `cargo build --release --workspace`)",
        p.display()
    );
    p
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
            cache_runs,
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
