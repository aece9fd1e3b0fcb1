//! The workflow executor: validates, plans, caches, schedules nodes on a worker pool
//! (one node at a time per device for device-bound nodes), streams events and honours
//! cancellation. One `Executor` serves the CLI, scripts and a server (`Send + Sync`, share
//! it in an `Arc`).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use abi_stable::std_types::{ROption, RStr, RString, RVec};
use odelt_contract::{
    types, ErrorKind, ExecContext, HostHooks, NamedValue, NodeError, NodeOutput, PreviewImage,
    Value,
};
use serde_json::{Map, Value as Json};

use crate::cache::{compute_keys, CacheEntry, OutputCache};
use crate::events::{CancelToken, Event, EventKind, EventSink, Preview};
use crate::loader::PluginSet;
use crate::prompt::Prompt;
use crate::validate::{validate, Plan, PlanInput, PlanNode, ValidateOptions, ValidationFailure};

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
    /// How many recent runs' outputs stay cached (0 disables caching).
    pub cache_runs: u32,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            device: "cpu".into(),
            output_dir: PathBuf::from("output"),
            temp_dir: PathBuf::from("temp"),
            models_dir: PathBuf::from("models"),
            cache_runs: 1,
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
    config: ExecutorConfig,
    dirs: [String; 3],
    cache: Mutex<OutputCache>,
    device_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    runs: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A random UUID-v4-shaped id (no RNG dependency: std's randomly keyed hasher).
pub fn new_prompt_id() -> String {
    let r = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let (a, b) = (r(), r());
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// Stack size of worker threads (plugin code such as tensor libraries may need more than
/// the 2 MiB default).
const WORKER_STACK_BYTES: usize = 8 << 20;

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

/// Passed to the plugin's hooks as the opaque pointer.
struct HookData<'a> {
    run: &'a RunCtx<'a>,
    node_id: &'a str,
}

fn emit_safely(sink: &dyn EventSink, ev: Event) {
    let _ = catch_unwind(AssertUnwindSafe(|| sink.emit(&ev)));
}

extern "C" fn hook_progress(
    data: *const (),
    value: u64,
    max: u64,
    preview: ROption<PreviewImage<'_>>,
) {
    // SAFETY: `data` is the `HookData` built in `invoke`, alive for the whole plugin call.
    let d = unsafe { &*(data as *const HookData<'_>) };
    let preview = preview.into_option().map(|p| Preview {
        format: p.format,
        width: p.width,
        height: p.height,
        data: p.data.as_slice().to_vec(),
    });
    emit_safely(
        d.run.sink,
        Event::new(
            d.run.prompt_id.clone(),
            EventKind::Progress {
                node_id: d.node_id.to_string(),
                value,
                max,
                preview,
            },
        ),
    );
}

extern "C" fn hook_cancelled(data: *const ()) -> bool {
    // SAFETY: see hook_progress.
    let d = unsafe { &*(data as *const HookData<'_>) };
    d.run.cancel.is_cancelled()
}

extern "C" fn hook_text(data: *const (), text: RStr<'_>) {
    // SAFETY: see hook_progress.
    let d = unsafe { &*(data as *const HookData<'_>) };
    emit_safely(
        d.run.sink,
        Event::new(
            d.run.prompt_id.clone(),
            EventKind::ProgressText {
                node_id: d.node_id.to_string(),
                text: text.to_string(),
            },
        ),
    );
}

impl Executor {
    /// An executor over `plugins`.
    pub fn new(plugins: Arc<PluginSet>, config: ExecutorConfig) -> Self {
        let dirs = [
            config.output_dir.to_string_lossy().into_owned(),
            config.temp_dir.to_string_lossy().into_owned(),
            config.models_dir.to_string_lossy().into_owned(),
        ];
        Executor {
            cache: Mutex::new(OutputCache::new(config.cache_runs)),
            plugins,
            config,
            dirs,
            device_locks: Mutex::new(HashMap::new()),
            runs: AtomicU64::new(0),
        }
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> &Arc<PluginSet> {
        &self.plugins
    }

    /// The configuration.
    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    /// `/object_info` for every loaded node.
    pub fn object_info(&self) -> Json {
        self.plugins.object_info()
    }

    /// Validates a prompt without running it.
    pub fn validate(&self, prompt: &Prompt, opts: &RunOptions) -> Result<Plan, ValidationFailure> {
        validate(
            prompt,
            &self.plugins,
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
        let n = plan.nodes.len();
        let emit = |kind: EventKind| emit_safely(run.sink, Event::new(run.prompt_id.clone(), kind));
        let keys = compute_keys(plan, run_id);

        // What is cached, what must run: walk back from the outputs; a cached node's inputs
        // are not needed.
        let mut results: Vec<Option<Arc<CacheEntry>>> = vec![None; n];
        let mut execute = vec![false; n];
        let mut visited = vec![false; n];
        {
            // Every cached node of the plan is looked up (and so kept for this run), as
            // ComfyUI reports them all in `execution_cached`.
            let mut cache = lock(&self.cache);
            for (i, node) in plan.nodes.iter().enumerate() {
                if !node.info.odelt.always_run {
                    results[i] = cache.get(keys[i], run_id);
                }
            }
        }
        {
            let mut stack: Vec<usize> = plan.outputs.clone();
            while let Some(i) = stack.pop() {
                if std::mem::replace(&mut visited[i], true) || results[i].is_some() {
                    continue;
                }
                let node = &plan.nodes[i];
                execute[i] = true;
                for (_, input) in &node.inputs {
                    if let PlanInput::Link { node: src, .. } = input {
                        stack.push(*src);
                    }
                }
            }
        }
        let cached: Vec<String> = (0..n)
            .filter(|&i| results[i].is_some())
            .map(|i| plan.nodes[i].id.clone())
            .collect();
        let to_execute = execute.iter().filter(|&&e| e).count();
        emit(EventKind::ExecutionStart);
        emit(EventKind::ExecutionCached {
            nodes: cached.clone(),
            to_execute,
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

        // Dependency counts among the nodes to execute.
        let mut pending = vec![0usize; n];
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for i in (0..n).filter(|&i| execute[i]) {
            for (_, input) in &plan.nodes[i].inputs {
                if let PlanInput::Link { node: src, .. } = input {
                    if execute[*src] {
                        pending[i] += 1;
                        users[*src].push(i);
                    }
                }
            }
        }
        let mut ready: VecDeque<usize> =
            (0..n).filter(|&i| execute[i] && pending[i] == 0).collect();
        let mut executed: Vec<String> = Vec::new();
        let mut failure: Option<(usize, NodeError)> = None;
        let mut interrupted_at: Option<usize> = None;
        let mut in_flight = 0usize;

        std::thread::scope(|scope| {
            let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
            let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
            let mut workers = 0usize;
            let max_workers = self.config.workers.max(1);
            loop {
                let stop =
                    failure.is_some() || interrupted_at.is_some() || run.cancel.is_cancelled();
                if !stop {
                    // One runnable node and nothing else running: run it here (no thread hop).
                    // Its result takes the same path as a worker's, below.
                    if in_flight == 0 && ready.len() == 1 {
                        let i = ready.pop_front().expect("one ready node");
                        let inputs = gather_inputs(&plan.nodes[i], &results);
                        in_flight += 1;
                        let _ = done_tx.send(self.invoke(plan, run, i, inputs));
                    }
                    while let Some(i) = ready.pop_front() {
                        if workers < max_workers && workers < in_flight + 1 {
                            let (rx, tx) = (job_rx.clone(), done_tx.clone());
                            let spawned = std::thread::Builder::new()
                                .name(format!("odelt-worker-{workers}"))
                                .stack_size(WORKER_STACK_BYTES)
                                .spawn_scoped(scope, move || {
                                    for job in rx.iter() {
                                        let done = self.invoke(plan, run, job.node, job.inputs);
                                        if tx.send(done).is_err() {
                                            break;
                                        }
                                    }
                                });
                            // Without a new thread the existing workers drain the queue.
                            if spawned.is_ok() {
                                workers += 1;
                            }
                        }
                        let inputs = gather_inputs(&plan.nodes[i], &results);
                        in_flight += 1;
                        if workers == 0 {
                            // No thread could be started: run it here.
                            let _ = done_tx.send(self.invoke(plan, run, i, inputs));
                        } else {
                            let _ = job_tx.send(Job { node: i, inputs });
                        }
                    }
                }
                if in_flight == 0 {
                    break;
                }
                let done = match done_rx.recv() {
                    Ok(d) => d,
                    Err(_) => break,
                };
                in_flight -= 1;
                let i = done.node;
                let stopped = self.complete(
                    plan,
                    run,
                    &keys,
                    run_id,
                    done,
                    &mut results,
                    &mut executed,
                    &mut failure,
                    &mut interrupted_at,
                );
                if !stopped {
                    release(i, &users, &mut pending, &mut ready);
                }
            }
            drop(job_tx);
        });

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
        let unfinished = (0..n).any(|i| execute[i] && results[i].is_none());
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
        let mut nodes = HashMap::with_capacity(n);
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

    /// Handles a finished call; returns true when the run must stop.
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &self,
        plan: &Plan,
        run: &RunCtx<'_>,
        keys: &[u128],
        run_id: u64,
        done: Done,
        results: &mut [Option<Arc<CacheEntry>>],
        executed: &mut Vec<String>,
        failure: &mut Option<(usize, NodeError)>,
        interrupted_at: &mut Option<usize>,
    ) -> bool {
        let i = done.node;
        let node = &plan.nodes[i];
        let checked = done.result.and_then(|out| check_output(node, out));
        match checked {
            Ok(entry) => {
                let entry = Arc::new(entry);
                if !node.info.odelt.always_run {
                    lock(&self.cache).insert(keys[i], entry.clone(), run_id);
                }
                let emit = |kind: EventKind| {
                    emit_safely(run.sink, Event::new(run.prompt_id.clone(), kind))
                };
                emit(EventKind::NodeDone {
                    node_id: node.id.clone(),
                    class_type: node.class_type.clone(),
                    elapsed_us: done.elapsed.as_micros() as u64,
                });
                if let Some(ui) = &entry.ui {
                    emit(EventKind::Executed {
                        node_id: node.id.clone(),
                        class_type: node.class_type.clone(),
                        output: ui.clone(),
                        cached: false,
                    });
                }
                results[i] = Some(entry);
                executed.push(node.id.clone());
                false
            }
            Err(e) if e.is_interrupted() => {
                interrupted_at.get_or_insert(i);
                true
            }
            Err(e) => {
                if failure.is_none() && interrupted_at.is_none() {
                    *failure = Some((i, e));
                    run.aborted.store(true, Ordering::SeqCst);
                }
                true
            }
        }
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
            let hook_data = HookData {
                run,
                node_id: &node.id,
            };
            // SAFETY: hook_data outlives the call; the hooks only read it and never unwind.
            let hooks = unsafe {
                HostHooks::new(
                    &hook_data as *const HookData<'_> as *const (),
                    hook_progress,
                    hook_cancelled,
                    hook_text,
                )
            };
            let ctx = ExecContext {
                node_id: RStr::from_str(&node.id),
                class_type: RStr::from_str(&node.class_type),
                prompt_id: RStr::from_str(&run.prompt_id),
                device: RStr::from_str(&self.config.device),
                prompt_json: RStr::from_str(&run.prompt_json),
                extra_pnginfo_json: RStr::from_str(&run.extra_pnginfo),
                output_dir: RStr::from_str(&self.dirs[0]),
                temp_dir: RStr::from_str(&self.dirs[1]),
                models_dir: RStr::from_str(&self.dirs[2]),
                hooks,
            };
            self.plugins.plugins()[node.plugin].execute(&node.class_type, &inputs, &ctx)
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

fn release(i: usize, users: &[Vec<usize>], pending: &mut [usize], ready: &mut VecDeque<usize>) {
    for &u in &users[i] {
        pending[u] -= 1;
        if pending[u] == 0 {
            ready.push_back(u);
        }
    }
}

/// Builds the input list of a node from literals and upstream results (values are shared,
/// tensor bytes are never copied).
fn gather_inputs(node: &PlanNode, results: &[Option<Arc<CacheEntry>>]) -> Vec<NamedValue> {
    node.inputs
        .iter()
        .filter_map(|(name, input)| {
            let value = match input {
                PlanInput::Literal(v, _) => v.clone(),
                PlanInput::Link {
                    node: src,
                    output,
                    to_float,
                } => {
                    let v = results[*src].as_ref()?.values.get(*output)?.clone();
                    match v {
                        Value::Int(i) if *to_float => Value::Float(i as f64),
                        other => other,
                    }
                }
            };
            Some(NamedValue {
                name: RString::from(name.as_str()),
                value,
            })
        })
        .collect()
}

/// Checks a node's returned values against its descriptor.
fn check_output(node: &PlanNode, out: NodeOutput) -> Result<CacheEntry, NodeError> {
    let declared = &node.info.output;
    if out.values.len() != declared.len() {
        return Err(NodeError::failed(format!(
            "plugin returned {} values but node {} declares {} outputs",
            out.values.len(),
            node.class_type,
            declared.len()
        )));
    }
    for (k, (v, ty)) in out.values.iter().zip(declared).enumerate() {
        let ok = match ty.as_str() {
            types::INT => matches!(v, Value::Int(_)),
            types::FLOAT => matches!(v, Value::Float(_)),
            types::STRING => matches!(v, Value::Str(_)),
            types::BOOLEAN => matches!(v, Value::Bool(_)),
            types::IMAGE | types::LATENT | "MASK" => matches!(v, Value::Tensor(_)),
            _ => true,
        };
        if !ok {
            return Err(NodeError::failed(format!(
                "output {k} of {} is declared {ty} but the plugin returned {}",
                node.class_type,
                v.kind_name()
            )));
        }
        if let Value::Tensor(t) = v {
            t.check()?;
        }
    }
    let ui = match out.ui.into_option() {
        None => None,
        Some(s) => Some(
            serde_json::from_str::<Json>(s.as_str())
                .map_err(|e| NodeError::failed(format!("UI payload is not JSON: {e}")))?,
        ),
    };
    let values: RVec<Value> = out.values;
    Ok(CacheEntry { values, ui })
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
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    }
}
