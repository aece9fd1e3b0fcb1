//! The workflow executor: validates, plans, caches, schedules nodes on a worker pool
//! (one node at a time per device for device-bound nodes), streams events and honours
//! cancellation. One `Executor` serves the CLI, scripts and a server (`Send + Sync`, share
//! it in an `Arc`).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use odelt_contract::{ErrorKind, NamedValue, NodeError, NodeOutput, Value};
use serde_json::{Map, Value as Json};

use crate::cache::{compute_keys, CacheEntry, CacheKey, OutputCache};
use crate::dirs::{ExtraModelDirs, HostDirs, HostStrings};
use crate::events::{CancelToken, Event, EventKind, EventSink};
use crate::loader::PluginSet;
use crate::node_call::{call_node, CallSite};
use crate::node_io::{check_output, gather_inputs};
use crate::pool;
use crate::prompt::Prompt;
use crate::schedule::{schedule, Schedule};
use crate::sync::lock;
use crate::validate::{validate, Plan, ValidateOptions, ValidationFailure};

/// How an [`Executor`] runs nodes.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Maximum number of nodes running at once (worker threads per run).
    pub workers: usize,
    /// The device assigned to device-bound nodes (`"cpu"`, `"cuda:0"`).
    pub device: String,
    /// Where output nodes write (ComfyUI's `output/`).
    pub output_dir: PathBuf,
    /// Where preview nodes write (ComfyUI's `temp/`).
    pub temp_dir: PathBuf,
    /// Root of model files.
    pub models_dir: PathBuf,
    /// User inputs (uploads, files nodes load).
    pub input_dir: PathBuf,
    /// How many recent runs' outputs stay cached (0 disables caching).
    pub cache_runs: u32,
    /// Model folders besides `models_dir` (ComfyUI's `extra_model_paths.yaml`).
    pub extra_model_dirs: ExtraModelDirs,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            device: "cpu".into(),
            output_dir: PathBuf::from("output"),
            temp_dir: PathBuf::from("temp"),
            models_dir: PathBuf::from("models"),
            input_dir: PathBuf::from("input"),
            cache_runs: 1,
            extra_model_dirs: ExtraModelDirs::default(),
        }
    }
}

impl ExecutorConfig {
    /// The device and directories this configuration gives the plugins.
    pub fn host_dirs(&self) -> HostDirs {
        HostDirs {
            device: self.device.clone(),
            models_dir: self.models_dir.clone(),
            input_dir: self.input_dir.clone(),
            output_dir: self.output_dir.clone(),
            temp_dir: self.temp_dir.clone(),
            extra_model_dirs: self.extra_model_dirs.clone(),
        }
    }
}

/// Per-run options.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The prompt id to report in events (a random UUID when absent).
    pub prompt_id: Option<String>,
    /// ComfyUI's `extra_data.extra_pnginfo` (usually `{"workflow": {...}}`), given to nodes.
    pub extra_pnginfo: Option<Json>,
    /// Only these output nodes (ComfyUI's `partial_execution_targets`).
    pub targets: Option<Vec<String>>,
    /// ComfyUI behaviour: outputs that fail validation are dropped and the others run
    /// (their errors are in [`RunOutcome::node_errors`]). Default: any error refuses the run.
    pub partial: bool,
}

/// Why a run did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The prompt failed validation; nothing ran.
    #[error("{}", .0.summary())]
    Validation(ValidationFailure),
    /// A node failed; the run stopped.
    #[error("node {node_id} ({class_type}) failed: {message}")]
    Node {
        /// The prompt id.
        prompt_id: String,
        /// The failing node.
        node_id: String,
        /// Its class.
        class_type: String,
        /// The failure kind (`Panicked` for a caught panic).
        kind: ErrorKind,
        /// The message.
        message: String,
        /// Nodes that completed before.
        executed: Vec<String>,
    },
    /// The run was cancelled.
    #[error("interrupted{}", .node_id.as_ref().map(|n| format!(" while running node {n}")).unwrap_or_default())]
    Interrupted {
        /// The prompt id.
        prompt_id: String,
        /// The node that was running, if any.
        node_id: Option<String>,
        /// Nodes that completed before.
        executed: Vec<String>,
    },
}

/// The result of one node of a completed run.
#[derive(Clone, Debug)]
pub struct NodeResult {
    /// Node id.
    pub node_id: String,
    /// Class type.
    pub class_type: String,
    /// Whether it came from cache.
    pub cached: bool,
    entry: Arc<CacheEntry>,
}

impl NodeResult {
    /// The output values.
    pub fn values(&self) -> &[Value] {
        self.entry.values.as_slice()
    }
    /// The UI payload (output nodes).
    pub fn ui(&self) -> Option<&Json> {
        self.entry.ui.as_ref()
    }
    /// The `ui.text` lines, if any.
    pub fn ui_text(&self) -> Vec<String> {
        self.ui()
            .and_then(|u| u["text"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A completed run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// The prompt id.
    pub prompt_id: String,
    /// Output nodes, in execution order of the plan.
    pub outputs: Vec<NodeResult>,
    /// Every node of the plan (outputs included), by id.
    pub nodes: HashMap<String, NodeResult>,
    /// Ids of the nodes that ran, in completion order.
    pub executed: Vec<String>,
    /// Ids of the nodes served from cache.
    pub cached: Vec<String>,
    /// Errors of outputs dropped by `partial` validation.
    pub node_errors: Map<String, Json>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl RunOutcome {
    /// The result of output node `id`.
    pub fn output(&self, id: &str) -> Option<&NodeResult> {
        self.outputs.iter().find(|o| o.node_id == id)
    }
    /// The values of any node of the plan.
    pub fn values(&self, id: &str) -> Option<&[Value]> {
        self.nodes.get(id).map(|n| n.values())
    }
    /// `{node_id: ui}` for every output node with a UI payload (ComfyUI history `outputs`).
    pub fn ui_outputs(&self) -> Json {
        let mut m = Map::new();
        for o in &self.outputs {
            if let Some(ui) = o.ui() {
                m.insert(o.node_id.clone(), ui.clone());
            }
        }
        Json::Object(m)
    }
}

/// Runs prompts against a set of loaded plugins.
pub struct Executor {
    plugins: Arc<PluginSet>,
    /// `plugins` as last described for this executor's directories ([`Executor::refresh`]).
    current: RwLock<Arc<PluginSet>>,
    config: ExecutorConfig,
    host: HostStrings,
    cache: Mutex<OutputCache>,
    device_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    runs: AtomicU64,
}

/// A random UUID v4 (RFC 9562: 122 random bits, version 4, variant `10`), lowercase and
/// hyphenated, from the operating system's random generator. Should that ever fail, the bits
/// come from std's randomly keyed hasher instead (unpredictable across processes, but not a
/// cryptographic generator), with a warning on stderr.
pub fn new_prompt_id() -> String {
    let mut b = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut b) {
        eprintln!("warning: the OS random generator failed ({e}); prompt id from a hasher instead");
        for (i, chunk) in b.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

struct Job {
    node: usize,
    inputs: Vec<NamedValue>,
}

struct Done {
    node: usize,
    result: Result<NodeOutput, NodeError>,
    elapsed: Duration,
}

/// What the worker needs for every call of one run.
struct RunCtx<'a> {
    prompt_id: Arc<str>,
    prompt_json: String,
    extra_pnginfo: String,
    sink: &'a dyn EventSink,
    cancel: &'a CancelToken,
    /// Set after a node failed: queued nodes are skipped.
    aborted: AtomicBool,
}

fn emit_safely(sink: &dyn EventSink, ev: Event) {
    let _ = catch_unwind(AssertUnwindSafe(|| sink.emit(&ev)));
}

impl Executor {
    /// An executor over `plugins`. Validation and runs use `config`'s device and directories;
    /// when the plugins were described for another host ([`PluginSet::host`]), they are
    /// described again for this one, so combo lists, validation and execution agree. (Should a
    /// plugin fail to describe itself for these directories, the set is kept as it was loaded.)
    pub fn new(plugins: Arc<PluginSet>, config: ExecutorConfig) -> Self {
        let dirs = config.host_dirs();
        let plugins = if plugins.host() == &dirs {
            plugins
        } else {
            plugins.with_host(dirs.clone()).map_or(plugins, Arc::new)
        };
        Executor {
            cache: Mutex::new(OutputCache::new(config.cache_runs)),
            host: HostStrings::of(&dirs),
            current: RwLock::new(plugins.clone()),
            plugins,
            config,
            device_locks: Mutex::new(HashMap::new()),
            runs: AtomicU64::new(0),
        }
    }

    /// The loaded plugins, as described when the executor was made (their combo lists may have
    /// gone stale since: [`Executor::current_plugins`] has the latest description).
    pub fn plugins(&self) -> &Arc<PluginSet> {
        &self.plugins
    }

    /// The plugins as last described ([`Executor::refresh`]): the same plugins and nodes as
    /// [`Executor::plugins`], with combo lists as of the last `/object_info` or validation.
    pub fn current_plugins(&self) -> Arc<PluginSet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Describes the plugins again for this executor's directories, so that combo lists show
    /// the files there now (an image just uploaded to the input directory, a checkpoint just
    /// copied in), and returns that description. Done by [`Executor::object_info`] and before
    /// every validation; cheap (plugins list their directories). Should a plugin fail to
    /// describe itself, the last description stays.
    pub fn refresh(&self) -> Arc<PluginSet> {
        match self.plugins.with_host(self.config.host_dirs()) {
            Ok(set) => {
                let set = Arc::new(set);
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = set.clone();
                set
            }
            Err(_) => self.current_plugins(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// `/object_info` for every loaded node, described anew ([`Executor::refresh`]).
    pub fn object_info(&self) -> Json {
        self.refresh().object_info()
    }

    /// Validates a prompt without running it.
    pub fn validate(&self, prompt: &Prompt, opts: &RunOptions) -> Result<Plan, ValidationFailure> {
        validate(
            prompt,
            &self.refresh(),
            &ValidateOptions {
                targets: opts.targets.clone(),
                partial: opts.partial,
            },
        )
    }

    /// Drops every cached output (handles in it are released, so plugins free their
    /// objects unless a run still uses them). Returns the number of entries dropped.
    pub fn free_cache(&self) -> usize {
        lock(&self.cache).clear()
    }

    /// Number of cached node outputs.
    pub fn cache_len(&self) -> usize {
        lock(&self.cache).len()
    }

    /// ComfyUI's `POST /free`: `free_memory` drops the output cache, `unload_models` asks
    /// every plugin to drop the models it keeps. Returns plugin errors, if any.
    pub fn free(&self, unload_models: bool, free_memory: bool) -> Vec<String> {
        if free_memory || unload_models {
            self.free_cache();
        }
        let mut errors = Vec::new();
        for p in self.plugins.plugins() {
            if let Err(e) = p.free_memory(unload_models) {
                errors.push(format!("{}: {e}", p.name()));
            }
        }
        errors
    }

    fn device_lock(&self) -> Arc<Mutex<()>> {
        lock(&self.device_locks)
            .entry(self.config.device.clone())
            .or_default()
            .clone()
    }

    /// Validates and runs `prompt`, streaming events to `sink`. Stops at the first node
    /// error, or within one progress step of `cancel` being set.
    pub fn run(
        &self,
        prompt: &Prompt,
        opts: &RunOptions,
        sink: &dyn EventSink,
        cancel: &CancelToken,
    ) -> Result<RunOutcome, RunError> {
        let plan = self.validate(prompt, opts).map_err(RunError::Validation)?;
        self.run_plan(prompt, &plan, opts, sink, cancel)
    }

    /// Runs an already validated plan of `prompt`.
    pub fn run_plan(
        &self,
        prompt: &Prompt,
        plan: &Plan,
        opts: &RunOptions,
        sink: &dyn EventSink,
        cancel: &CancelToken,
    ) -> Result<RunOutcome, RunError> {
        let started = Instant::now();
        let run_id = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let prompt_id: Arc<str> = Arc::from(opts.prompt_id.clone().unwrap_or_else(new_prompt_id));
        let run = RunCtx {
            prompt_id: prompt_id.clone(),
            prompt_json: Json::Object(prompt.json().clone()).to_string(),
            extra_pnginfo: opts
                .extra_pnginfo
                .as_ref()
                .map(|j| j.to_string())
                .unwrap_or_default(),
            sink,
            cancel,
            aborted: AtomicBool::new(false),
        };
        lock(&self.cache).begin_run(run_id);
        let result = self.run_inner(plan, &run, run_id, started);
        lock(&self.cache).end_run(run_id);
        result.map(|mut o| {
            o.node_errors = plan.node_errors.clone();
            o
        })
    }

    fn run_inner(
        &self,
        plan: &Plan,
        run: &RunCtx<'_>,
        run_id: u64,
        started: Instant,
    ) -> Result<RunOutcome, RunError> {
        let emit = |kind: EventKind| emit_safely(run.sink, Event::new(run.prompt_id.clone(), kind));
        let keys = compute_keys(plan, run_id);

        // Every cached node of the plan is looked up (and so kept for this run), as ComfyUI
        // reports them all in `execution_cached`.
        let results: Vec<Option<Arc<CacheEntry>>> = {
            let mut cache = lock(&self.cache);
            plan.nodes
                .iter()
                .zip(&keys)
                .map(|(node, &key)| {
                    if node.info.odelt.always_run {
                        None
                    } else {
                        cache.get(key, run_id)
                    }
                })
                .collect()
        };
        let is_cached: Vec<bool> = results.iter().map(Option::is_some).collect();
        let schedule = schedule(plan, &is_cached);
        let cached: Vec<String> = (0..plan.nodes.len())
            .filter(|&i| is_cached[i])
            .map(|i| plan.nodes[i].id.clone())
            .collect();
        emit(EventKind::ExecutionStart);
        emit(EventKind::ExecutionCached {
            nodes: cached.clone(),
            to_execute: schedule.to_execute(),
        });
        for &o in &plan.outputs {
            if let Some(ui) = results[o].as_ref().and_then(|e| e.ui.clone()) {
                emit(EventKind::Executed {
                    node_id: plan.nodes[o].id.clone(),
                    class_type: plan.nodes[o].class_type.clone(),
                    output: ui,
                    cached: true,
                });
            }
        }

        let mut state = RunState {
            exec: self,
            plan,
            run,
            keys,
            run_id,
            ready: schedule.initially_ready(),
            schedule,
            results,
            executed: Vec::new(),
            failure: None,
            interrupted_at: None,
        };
        pool::run(&mut state, self.config.workers, &|job: Job| {
            self.invoke(plan, run, job.node, job.inputs)
        });
        state.outcome(cached, started)
    }

    /// Calls the plugin for node `i` (on a worker or the scheduler thread).
    fn invoke(&self, plan: &Plan, run: &RunCtx<'_>, i: usize, inputs: Vec<NamedValue>) -> Done {
        let node = &plan.nodes[i];
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            if run.cancel.is_cancelled() || run.aborted.load(Ordering::SeqCst) {
                return Err(NodeError::interrupted());
            }
            let device_lock = node.info.odelt.device_bound.then(|| self.device_lock());
            let _guard = device_lock.as_ref().map(|l| lock(l));
            if run.cancel.is_cancelled() {
                return Err(NodeError::interrupted());
            }
            emit_safely(
                run.sink,
                Event::new(
                    run.prompt_id.clone(),
                    EventKind::Executing {
                        node_id: node.id.clone(),
                        class_type: node.class_type.clone(),
                    },
                ),
            );
            let site = CallSite {
                node_id: &node.id,
                class_type: &node.class_type,
                prompt_id: run.prompt_id.clone(),
                prompt_json: &run.prompt_json,
                extra_pnginfo: &run.extra_pnginfo,
                host: self.host.context(),
            };
            let plugin = &self.plugins.plugins()[node.plugin];
            call_node(plugin, &site, &inputs, run.sink, run.cancel)
        }))
        .unwrap_or_else(|_| {
            Err(NodeError::failed(
                "the host panicked while running this node",
            ))
        });
        Done {
            node: i,
            result,
            elapsed: started.elapsed(),
        }
    }
}

/// The shared state of one run while its nodes execute: the results so far, the nodes
/// that can start, and why the run stops. The worker pool drives it ([`pool::Jobs`]).
struct RunState<'a> {
    exec: &'a Executor,
    plan: &'a Plan,
    run: &'a RunCtx<'a>,
    keys: Vec<CacheKey>,
    run_id: u64,
    schedule: Schedule,
    /// Nodes whose inputs are all available, in the order they became so.
    ready: VecDeque<usize>,
    /// Per plan node: its outputs, once cached or computed.
    results: Vec<Option<Arc<CacheEntry>>>,
    /// Ids of the nodes that ran, in completion order.
    executed: Vec<String>,
    /// The first node that failed.
    failure: Option<(usize, NodeError)>,
    /// The first node that saw the run cancelled.
    interrupted_at: Option<usize>,
}

impl pool::Jobs for RunState<'_> {
    type Job = Job;
    type Done = Done;

    fn stopped(&self) -> bool {
        self.failure.is_some() || self.interrupted_at.is_some() || self.run.cancel.is_cancelled()
    }

    fn ready(&self) -> usize {
        self.ready.len()
    }

    fn next(&mut self) -> Option<Job> {
        let i = self.ready.pop_front()?;
        Some(Job {
            node: i,
            inputs: gather_inputs(&self.plan.nodes[i], &self.results),
        })
    }

    fn finish(&mut self, done: Done) {
        let i = done.node;
        if !self.complete(done) {
            self.schedule.release(i, &mut self.ready);
        }
    }
}

impl RunState<'_> {
    fn emit(&self, kind: EventKind) {
        emit_safely(self.run.sink, Event::new(self.run.prompt_id.clone(), kind));
    }

    /// Handles a finished call; returns true when the run must stop.
    fn complete(&mut self, done: Done) -> bool {
        let i = done.node;
        let node = &self.plan.nodes[i];
        let checked = done.result.and_then(|out| check_output(node, out));
        match checked {
            Ok(entry) => {
                let entry = Arc::new(entry);
                if !node.info.odelt.always_run {
                    lock(&self.exec.cache).insert(self.keys[i], entry.clone(), self.run_id);
                }
                self.emit(EventKind::NodeDone {
                    node_id: node.id.clone(),
                    class_type: node.class_type.clone(),
                    elapsed_us: done.elapsed.as_micros() as u64,
                });
                if let Some(ui) = &entry.ui {
                    self.emit(EventKind::Executed {
                        node_id: node.id.clone(),
                        class_type: node.class_type.clone(),
                        output: ui.clone(),
                        cached: false,
                    });
                }
                self.results[i] = Some(entry);
                self.executed.push(node.id.clone());
                false
            }
            Err(e) if e.is_interrupted() => {
                self.interrupted_at.get_or_insert(i);
                true
            }
            Err(e) => {
                if self.failure.is_none() && self.interrupted_at.is_none() {
                    self.failure = Some((i, e));
                    self.run.aborted.store(true, Ordering::SeqCst);
                }
                true
            }
        }
    }

    /// The run's result once nothing runs any more: the failure, the interruption, or the
    /// outcome with every node's result.
    fn outcome(self, cached: Vec<String>, started: Instant) -> Result<RunOutcome, RunError> {
        let RunState {
            plan,
            run,
            schedule,
            results,
            executed,
            failure,
            interrupted_at,
            ..
        } = self;
        let emit = |kind: EventKind| emit_safely(run.sink, Event::new(run.prompt_id.clone(), kind));
        if let Some((i, e)) = failure {
            let node = &plan.nodes[i];
            emit(EventKind::ExecutionError {
                node_id: node.id.clone(),
                node_type: node.class_type.clone(),
                message: e.message.to_string(),
                exception_type: e.kind.exception_type().to_string(),
                executed: executed.clone(),
            });
            return Err(RunError::Node {
                prompt_id: run.prompt_id.to_string(),
                node_id: node.id.clone(),
                class_type: node.class_type.clone(),
                kind: e.kind,
                message: e.message.to_string(),
                executed,
            });
        }
        let execute = &schedule.execute;
        let unfinished = (0..plan.nodes.len()).any(|i| execute[i] && results[i].is_none());
        if interrupted_at.is_some() || (unfinished && run.cancel.is_cancelled()) {
            let node = interrupted_at.map(|i| &plan.nodes[i]);
            emit(EventKind::ExecutionInterrupted {
                node_id: node.map(|n| n.id.clone()),
                node_type: node.map(|n| n.class_type.clone()),
                executed: executed.clone(),
            });
            return Err(RunError::Interrupted {
                prompt_id: run.prompt_id.to_string(),
                node_id: node.map(|n| n.id.clone()),
                executed,
            });
        }
        emit(EventKind::ExecutionSuccess);
        let mut nodes = HashMap::with_capacity(plan.nodes.len());
        for (i, r) in results.iter().enumerate() {
            if let Some(entry) = r {
                nodes.insert(
                    plan.nodes[i].id.clone(),
                    NodeResult {
                        node_id: plan.nodes[i].id.clone(),
                        class_type: plan.nodes[i].class_type.clone(),
                        cached: !execute[i],
                        entry: entry.clone(),
                    },
                );
            }
        }
        let outputs = plan
            .outputs
            .iter()
            .filter_map(|&o| nodes.get(&plan.nodes[o].id).cloned())
            .collect();
        Ok(RunOutcome {
            prompt_id: run.prompt_id.to_string(),
            outputs,
            nodes,
            executed,
            cached,
            node_errors: Map::new(),
            elapsed: started.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ids_look_like_uuids() {
        let a = new_prompt_id();
        let b = new_prompt_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-'));
        let dashes: Vec<usize> = a.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, [8, 13, 18, 23]);
    }
}
