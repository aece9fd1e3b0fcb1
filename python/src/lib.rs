//! `odelt._odelt`: the native part of the `odelt` Python package, a host built on `odelt-host`. It loads odelt
//! plugins through the stable ABI exactly as the `odelt` command does, runs ComfyUI API-format workflows (once, or
//! as a batch over seeds or values) and single nodes, with the GIL released while nodes run. The Python side
//! (`python/pysrc/odelt`) adds the exception classes, type hints and the bundled plugin's location.

// odelt-host's run errors carry ComfyUI's whole validation report by value (see odelt-host's lib.rs).
#![allow(clippy::result_large_err)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use odelt_host::node_call::{call_node, CallSite};
use odelt_host::{
    Batch, BatchResult, CancelToken, Executor, ExecutorConfig, HostDirs, PluginSearch, RunOptions,
    RunOutcome, Workflow, WorkflowError,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use serde_json::Value as Json;

mod call;
mod convert;
mod drive;
mod errors;

use convert::{json_to_py, py_to_json, value_to_py, PyHandle};
use drive::drive;

static BUNDLED_PLUGIN_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the wheel's own plugins are (set by `odelt/__init__.py`).
#[pyfunction]
fn _set_bundled_plugin_dir(path: PathBuf) {
    *lock(&BUNDLED_PLUGIN_DIR) = Some(path);
}

/// A flag that stops a run, a batch or a call within one evaluation of the running node. Share one between
/// threads: `cancel()` from any thread stops every run that uses it.
#[pyclass(module = "odelt", name = "CancelToken", frozen)]
#[derive(Default)]
struct PyCancelToken {
    token: CancelToken,
}

#[pymethods]
impl PyCancelToken {
    #[new]
    fn new() -> Self {
        Self::default()
    }
    /// Asks every run using this token to stop.
    fn cancel(&self) {
        self.token.cancel();
    }
    /// Whether `cancel()` was called (and not reset).
    #[getter]
    fn cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
    /// Clears the flag, to reuse the token.
    fn reset(&self) {
        self.token.reset();
    }
}

/// The values of one node call: `values` (a tuple, one item per declared output) and `ui` (the output node's UI
/// payload, e.g. `{"images": [...]}`, or None).
#[pyclass(module = "odelt", name = "NodeOutput", frozen)]
struct PyNodeOutput {
    #[pyo3(get)]
    values: Py<PyTuple>,
    #[pyo3(get)]
    ui: Py<PyAny>,
}

#[pymethods]
impl PyNodeOutput {
    fn __len__(&self, py: Python<'_>) -> usize {
        self.values.bind(py).len()
    }
    fn __getitem__<'py>(&self, py: Python<'py>, i: isize) -> PyResult<Bound<'py, PyAny>> {
        self.values.bind(py).as_any().get_item(i)
    }
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "NodeOutput(values={}, ui={})",
            self.values.bind(py).repr()?,
            self.ui.bind(py).repr()?
        ))
    }
}

/// A completed run.
#[pyclass(module = "odelt", name = "RunResult", frozen)]
struct RunResult {
    /// The prompt id of the run.
    #[pyo3(get)]
    prompt_id: String,
    /// `{node_id: ui}` for every output node (ComfyUI's history `outputs`).
    #[pyo3(get)]
    outputs: Py<PyAny>,
    /// Absolute paths of the files the output nodes saved, in order.
    #[pyo3(get)]
    files: Py<PyAny>,
    /// `{node_id: numpy array [B, H, W, C]}` for every node of the plan with an IMAGE output (its first).
    #[pyo3(get)]
    images: Py<PyAny>,
    /// `{node_id: numpy array [B, C, H, W]}` for every node of the plan with a LATENT output (its first).
    #[pyo3(get)]
    latents: Py<PyAny>,
    /// Ids of the nodes that ran, in completion order.
    #[pyo3(get)]
    executed: Vec<String>,
    /// Ids of the nodes served from cache.
    #[pyo3(get)]
    cached: Vec<String>,
    /// Wall time in seconds.
    #[pyo3(get)]
    elapsed: f64,
    outcome: RunOutcome,
}

#[pymethods]
impl RunResult {
    /// The output values of node `node_id` (a list, one item per output), or None when it is not in the plan.
    fn values<'py>(&self, py: Python<'py>, node_id: &str) -> PyResult<Option<Bound<'py, PyList>>> {
        let Some(vals) = self.outcome.values(node_id) else {
            return Ok(None);
        };
        let l = PyList::empty(py);
        for v in vals {
            l.append(value_to_py(py, v)?)?;
        }
        Ok(Some(l))
    }
    fn __repr__(&self) -> String {
        format!(
            "RunResult(prompt_id={:?}, executed={:?}, cached={:?}, elapsed={:.3})",
            self.prompt_id, self.executed, self.cached, self.elapsed
        )
    }
}

/// One item of a batch: `label`, `index`, `prompt_id`, and either `result` (a RunResult) or `error` (the
/// exception it raised).
#[pyclass(module = "odelt", name = "BatchItem", frozen)]
struct PyBatchItem {
    #[pyo3(get)]
    index: usize,
    #[pyo3(get)]
    label: String,
    #[pyo3(get)]
    prompt_id: String,
    #[pyo3(get)]
    result: Option<Py<RunResult>>,
    #[pyo3(get)]
    error: Option<Py<PyAny>>,
}

#[pymethods]
impl PyBatchItem {
    /// Whether the item completed.
    #[getter]
    fn ok(&self) -> bool {
        self.result.is_some()
    }
    /// The result, or raises the item's error.
    fn unwrap(&self, py: Python<'_>) -> PyResult<Py<RunResult>> {
        match (&self.result, &self.error) {
            (Some(r), _) => Ok(r.clone_ref(py)),
            (None, Some(e)) => Err(PyErr::from_value(e.bind(py).clone())),
            (None, None) => Err(PyValueError::new_err("batch item without result")),
        }
    }
    fn __repr__(&self) -> String {
        format!(
            "BatchItem(index={}, label={:?}, ok={})",
            self.index,
            self.label,
            self.result.is_some()
        )
    }
}

fn abs(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A host: loaded plugins, their directories and device, and an executor with an output cache (so a batch reuses
/// its loaded models).
#[pyclass(module = "odelt", name = "Host", frozen)]
struct Host {
    exec: Arc<Executor>,
    dirs: HostDirs,
    active: Mutex<Vec<(u64, CancelToken)>>,
    next_run: AtomicU64,
    device_lock: Mutex<()>,
}

/// Unregisters a run's token when the run ends.
struct Active<'a> {
    host: &'a Host,
    id: u64,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        lock(&self.host.active).retain(|(i, _)| *i != self.id);
    }
}

fn path_list(v: &Bound<'_, PyAny>) -> PyResult<Vec<PathBuf>> {
    if v.is_instance_of::<PyString>() || v.hasattr("__fspath__")? {
        return Ok(vec![v.extract::<PathBuf>()?]);
    }
    let mut out = Vec::new();
    for item in v.try_iter()? {
        out.push(item?.extract::<PathBuf>()?);
    }
    Ok(out)
}

/// A workflow from a dict (API format or a POST /prompt body), a path, or JSON text.
fn load_workflow(py: Python<'_>, v: &Bound<'_, PyAny>) -> PyResult<Workflow> {
    let r = if v.is_instance_of::<PyDict>() {
        Workflow::from_json(py_to_json(v)?)
    } else if v.is_instance_of::<PyString>() || v.hasattr("__fspath__")? {
        let s: PathBuf = v.extract()?;
        let text = s.to_string_lossy();
        if text.trim_start().starts_with('{') {
            Workflow::from_json_str(&text)
        } else {
            Workflow::load(&s)
        }
    } else {
        return Err(PyTypeError::new_err(
            "workflow must be a dict, a path or JSON text",
        ));
    };
    r.map_err(|e| errors::workflow_error(py, &e))
}

/// Applies `set`: `{"NODE.INPUT": value}` or a list of `"NODE.INPUT=VALUE"` strings.
fn apply_set(py: Python<'_>, wf: &mut Workflow, set: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    let Some(set) = set else { return Ok(()) };
    let werr = |e: WorkflowError| errors::workflow_error(py, &e);
    if let Ok(d) = set.cast::<PyDict>() {
        for (k, v) in d.iter() {
            let target: String = k.extract()?;
            let (node, input) = target
                .split_once('.')
                .filter(|(n, i)| !n.is_empty() && !i.is_empty())
                .ok_or_else(|| werr(WorkflowError::BadOverride(target.clone())))?;
            wf.set(node, input, py_to_json(&v)?).map_err(werr)?;
        }
    } else {
        for item in set.try_iter()? {
            let spec: String = item?.extract()?;
            wf.apply_override(&spec).map_err(werr)?;
        }
    }
    Ok(())
}

/// Sorts node ids numerically where they are numbers.
fn id_key(id: &str) -> (usize, String) {
    (id.len(), id.to_string())
}

impl Host {
    fn token(&self, cancel: Option<&Bound<'_, PyCancelToken>>) -> CancelToken {
        cancel.map(|c| c.get().token.clone()).unwrap_or_default()
    }

    fn register(&self, token: &CancelToken) -> Active<'_> {
        let id = self.next_run.fetch_add(1, Ordering::SeqCst);
        lock(&self.active).push((id, token.clone()));
        Active { host: self, id }
    }

    fn file_path(&self, item: &Json) -> Option<String> {
        let name = item["filename"].as_str()?;
        let base = match item["type"].as_str().unwrap_or("output") {
            "temp" => &self.dirs.temp_dir,
            "input" => &self.dirs.input_dir,
            _ => &self.dirs.output_dir,
        };
        let sub = item["subfolder"].as_str().unwrap_or("");
        let mut p = abs(base);
        if !sub.is_empty() {
            p.push(sub);
        }
        p.push(name);
        Some(p.to_string_lossy().into_owned())
    }

    fn result(&self, py: Python<'_>, o: RunOutcome) -> PyResult<RunResult> {
        let ui = o.ui_outputs();
        let mut files = Vec::new();
        if let Some(m) = ui.as_object() {
            for node_ui in m.values() {
                for v in node_ui.as_object().into_iter().flat_map(|o| o.values()) {
                    for item in v.as_array().into_iter().flatten() {
                        if let Some(p) = self.file_path(item) {
                            files.push(p);
                        }
                    }
                }
            }
        }
        let images = PyDict::new(py);
        let latents = PyDict::new(py);
        let mut ids: Vec<&String> = o.nodes.keys().collect();
        ids.sort_by_key(|id| id_key(id));
        for id in ids {
            let n = &o.nodes[id];
            let Some(entry) = self.exec.plugins().node(&n.class_type) else {
                continue;
            };
            for (want, dict) in [("IMAGE", &images), ("LATENT", &latents)] {
                if let Some(k) = entry.info.output.iter().position(|t| t == want) {
                    if let Some(v) = n.values().get(k) {
                        dict.set_item(id, value_to_py(py, v)?)?;
                    }
                }
            }
        }
        Ok(RunResult {
            prompt_id: o.prompt_id.clone(),
            outputs: json_to_py(py, &ui)?.unbind(),
            files: PyList::new(py, files)?.into_any().unbind(),
            images: images.into_any().unbind(),
            latents: latents.into_any().unbind(),
            executed: o.executed.clone(),
            cached: o.cached.clone(),
            elapsed: o.elapsed.as_secs_f64(),
            outcome: o,
        })
    }
}

fn default_workers() -> usize {
    ExecutorConfig::default().workers
}

#[pymethods]
impl Host {
    /// Loads the plugins (`plugins`: files or directories; default: the plugin bundled with the wheel, then the
    /// entries of `ODELT_PLUGIN_PATH`) and describes them for this host's directories and device.
    #[new]
    #[pyo3(signature = (plugins=None, models_dir=None, output_dir=None, device="cpu".to_string(),
                        input_dir=None, temp_dir=None, workers=None, cache_runs=1))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        plugins: Option<&Bound<'_, PyAny>>,
        models_dir: Option<PathBuf>,
        output_dir: Option<PathBuf>,
        device: String,
        input_dir: Option<PathBuf>,
        temp_dir: Option<PathBuf>,
        workers: Option<usize>,
        cache_runs: u32,
    ) -> PyResult<Self> {
        let d = HostDirs::default();
        let dirs = HostDirs {
            device: device.clone(),
            models_dir: abs(&models_dir.unwrap_or(d.models_dir)),
            input_dir: abs(&input_dir.unwrap_or(d.input_dir)),
            output_dir: abs(&output_dir.unwrap_or(d.output_dir)),
            temp_dir: abs(&temp_dir.unwrap_or(d.temp_dir)),
            ..HostDirs::default()
        };
        let search = match plugins {
            Some(p) => PluginSearch {
                explicit: path_list(p)?,
                exe_dir: false,
                env_path: None,
            },
            None => {
                let mut paths: Vec<String> = lock(&BUNDLED_PLUGIN_DIR)
                    .iter()
                    .filter(|p| p.exists())
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect();
                if let Ok(env) = std::env::var("ODELT_PLUGIN_PATH") {
                    paths.push(env);
                }
                PluginSearch {
                    explicit: Vec::new(),
                    exe_dir: false,
                    env_path: Some(paths.join(":")),
                }
            }
        };
        let host_dirs = dirs.clone();
        let set = py
            .detach(move || search.load_for(host_dirs))
            .map_err(|e| errors::load_error(py, &e))?;
        if set.plugins().is_empty() {
            return Err(errors::raise(
                py,
                "PluginLoadError",
                "no odelt plugins found (pass plugins=[...] or set ODELT_PLUGIN_PATH)",
                &[("exception_type", Json::String("PluginLoadError".into()))],
            ));
        }
        let config = ExecutorConfig {
            workers: workers.unwrap_or_else(default_workers).max(1),
            device,
            output_dir: dirs.output_dir.clone(),
            temp_dir: dirs.temp_dir.clone(),
            models_dir: dirs.models_dir.clone(),
            input_dir: dirs.input_dir.clone(),
            cache_runs,
            ..ExecutorConfig::default()
        };
        Ok(Host {
            exec: Arc::new(Executor::new(Arc::new(set), config)),
            dirs,
            active: Mutex::new(Vec::new()),
            next_run: AtomicU64::new(0),
            device_lock: Mutex::new(()),
        })
    }

    /// The `/object_info` dict of every loaded node (what `odelt nodes` prints).
    fn nodes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &self.exec.object_info())
    }

    /// The loaded plugins: `[{"name", "version", "contract_version", "path", "nodes"}]`.
    #[getter]
    fn plugins<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let list: Vec<Json> = self
            .exec
            .plugins()
            .plugins()
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name(), "version": p.version(), "contract_version": p.contract_version(),
                    "path": p.path().to_string_lossy(),
                    "nodes": p.nodes().iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        json_to_py(py, &Json::Array(list))
    }

    /// Problems met while looking for plugins (skipped libraries, missing directories).
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.exec.plugins().warnings().to_vec()
    }

    /// The device of device-bound nodes.
    #[getter]
    fn device(&self) -> String {
        self.dirs.device.clone()
    }
    /// The models directory (absolute).
    #[getter]
    fn models_dir(&self) -> String {
        self.dirs.models_dir.to_string_lossy().into_owned()
    }
    /// The output directory (absolute).
    #[getter]
    fn output_dir(&self) -> String {
        self.dirs.output_dir.to_string_lossy().into_owned()
    }
    /// The input directory (absolute).
    #[getter]
    fn input_dir(&self) -> String {
        self.dirs.input_dir.to_string_lossy().into_owned()
    }
    /// The temp directory (absolute).
    #[getter]
    fn temp_dir(&self) -> String {
        self.dirs.temp_dir.to_string_lossy().into_owned()
    }

    /// Runs a workflow once; see `odelt.Host.run` in the type hints.
    #[pyo3(signature = (workflow, set=None, on_progress=None, cancel=None, extra_pnginfo=None, prompt_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        workflow: &Bound<'_, PyAny>,
        set: Option<&Bound<'_, PyAny>>,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
        extra_pnginfo: Option<&Bound<'_, PyAny>>,
        prompt_id: Option<String>,
    ) -> PyResult<RunResult> {
        let mut wf = load_workflow(py, workflow)?;
        apply_set(py, &mut wf, set)?;
        let opts = RunOptions {
            prompt_id,
            extra_pnginfo: extra_pnginfo.map(py_to_json).transpose()?,
            ..RunOptions::default()
        };
        let token = self.token(cancel);
        let _active = self.register(&token);
        let exec = self.exec.clone();
        let on_progress = on_progress.filter(|c| !c.is_none());
        let r = drive(py, &token, on_progress, |sink| {
            wf.run(&exec, &opts, sink, &token)
        })?;
        match r {
            Ok(o) => self.result(py, o),
            Err(e) => Err(errors::batch_error(py, &e)),
        }
    }

    /// Runs a workflow once per seed (or value); see `odelt.Host.batch` in the type hints.
    #[pyo3(signature = (workflow, target=None, seeds=None, values=None, set=None, on_progress=None, cancel=None,
                        stop_on_error=false, prompt_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn batch(
        &self,
        py: Python<'_>,
        workflow: &Bound<'_, PyAny>,
        target: Option<String>,
        seeds: Option<Vec<u64>>,
        values: Option<&Bound<'_, PyAny>>,
        set: Option<&Bound<'_, PyAny>>,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
        stop_on_error: bool,
        prompt_id: Option<String>,
    ) -> PyResult<Vec<PyBatchItem>> {
        let mut wf = load_workflow(py, workflow)?;
        apply_set(py, &mut wf, set)?;
        let werr = |e: WorkflowError| errors::workflow_error(py, &e);
        let target = match target {
            Some(t) => t,
            None if seeds.is_some() => {
                let with_seed: Vec<&String> = wf
                    .nodes()
                    .iter()
                    .filter(|(_, n)| n["inputs"].get("seed").is_some())
                    .map(|(id, _)| id)
                    .collect();
                match with_seed.as_slice() {
                    [one] => format!("{one}.seed"),
                    _ => {
                        return Err(PyValueError::new_err(format!(
                            "target=\"NODE.seed\" is needed: {} nodes have a seed input",
                            with_seed.len()
                        )))
                    }
                }
            }
            None => return Err(PyValueError::new_err("target=\"NODE.INPUT\" is needed")),
        };
        let mut batch = match (seeds, values) {
            (Some(s), None) => Batch::seeds(&target, s).map_err(werr)?,
            (None, Some(v)) => {
                let mut items = Vec::new();
                if let Ok(d) = v.cast::<PyDict>() {
                    for (k, val) in d.iter() {
                        items.push((k.str()?.to_str()?.to_string(), py_to_json(&val)?));
                    }
                } else {
                    for val in v.try_iter()? {
                        let j = py_to_json(&val?)?;
                        items.push((format!("{target}={j}"), j));
                    }
                }
                Batch::over(&target, items).map_err(werr)?
            }
            _ => {
                return Err(PyTypeError::new_err(
                    "give exactly one of seeds= or values=",
                ))
            }
        };
        batch.stop_on_error = stop_on_error;
        let opts = RunOptions {
            prompt_id,
            ..RunOptions::default()
        };
        let token = self.token(cancel);
        let _active = self.register(&token);
        let exec = self.exec.clone();
        let on_progress = on_progress.filter(|c| !c.is_none());
        let results: Vec<BatchResult> = drive(py, &token, on_progress, |sink| {
            batch.run(&exec, &wf, &opts, sink, &token)
        })?;
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            let (result, error) = match r.outcome {
                Ok(o) => (Some(Py::new(py, self.result(py, o)?)?), None),
                Err(e) => (
                    None,
                    Some(
                        errors::batch_error(py, &e)
                            .value(py)
                            .clone()
                            .into_any()
                            .unbind(),
                    ),
                ),
            };
            out.push(PyBatchItem {
                index: r.index,
                label: r.label,
                prompt_id: r.prompt_id,
                result,
                error,
            });
        }
        Ok(out)
    }

    /// Runs one node with Python values; see `odelt.Host.call` in the type hints.
    #[pyo3(signature = (class_type, inputs=None, *, node_id="0".to_string(), on_progress=None, cancel=None,
                        prompt=None, extra_pnginfo=None, prompt_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        py: Python<'_>,
        class_type: &str,
        inputs: Option<&Bound<'_, PyDict>>,
        node_id: String,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
        prompt: Option<&Bound<'_, PyAny>>,
        extra_pnginfo: Option<&Bound<'_, PyAny>>,
        prompt_id: Option<String>,
    ) -> PyResult<PyNodeOutput> {
        let plugins = self.exec.plugins().clone();
        let Some(entry) = plugins.node(class_type) else {
            return Err(errors::raise(
                py,
                "ValidationError",
                &format!("node type '{class_type}' is not provided by any loaded plugin"),
                &[
                    ("exception_type", Json::String("missing_node_type".into())),
                    ("node_id", Json::String(node_id.clone())),
                    ("class_type", Json::String(class_type.to_string())),
                ],
            ));
        };
        let info = entry.info.clone();
        let prepared = call::prepare(py, &info, &node_id, inputs)?;
        let json_text = |v: Option<&Bound<'_, PyAny>>| -> PyResult<String> {
            Ok(match v {
                Some(v) if !v.is_none() => py_to_json(v)?.to_string(),
                _ => String::new(),
            })
        };
        let prompt_json = json_text(prompt)?;
        let extra = json_text(extra_pnginfo)?;
        let prompt_id: Arc<str> = Arc::from(prompt_id.unwrap_or_else(odelt_host::new_prompt_id));
        let plugin = &plugins.plugins()[entry.plugin];
        let token = self.token(cancel);
        let _active = self.register(&token);
        let device_bound = info.odelt.device_bound;
        let on_progress = on_progress.filter(|c| !c.is_none());
        let r = self.dirs.with_context(|host| {
            let site = CallSite {
                node_id: &node_id,
                class_type,
                prompt_id: prompt_id.clone(),
                prompt_json: &prompt_json,
                extra_pnginfo: &extra,
                host: *host,
            };
            drive(py, &token, on_progress, |sink| {
                let _guard = device_bound.then(|| lock(&self.device_lock));
                call_node(plugin, &site, &prepared.values, sink, &token)
            })
        })?;
        let attrs = |kind: &str| {
            vec![
                ("exception_type", Json::String(kind.to_string())),
                ("node_id", Json::String(node_id.clone())),
                ("class_type", Json::String(class_type.to_string())),
                ("prompt_id", Json::String(prompt_id.to_string())),
            ]
        };
        let out = match r {
            Err(e) if e.is_interrupted() => {
                return Err(errors::raise(
                    py,
                    "Interrupted",
                    &format!("interrupted while running node {node_id}"),
                    &attrs("InterruptProcessingException"),
                ))
            }
            Err(e) => {
                return Err(errors::raise(
                    py,
                    "NodeError",
                    &format!("node {node_id} ({class_type}) failed: {}", e.message),
                    &attrs(e.kind.exception_type()),
                ))
            }
            Ok(o) => o,
        };
        let (values, ui) = call::check_output(&info, out)
            .map_err(|m| errors::raise(py, "NodeError", &m, &attrs("RuntimeError")))?;
        let items = values
            .iter()
            .map(|v| value_to_py(py, v))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyNodeOutput {
            values: PyTuple::new(py, items)?.unbind(),
            ui: match ui {
                Some(u) => json_to_py(py, &u)?.unbind(),
                None => py.None(),
            },
        })
    }

    /// Stops every run, batch and call of this host now in progress, within one evaluation.
    fn interrupt(&self) {
        for (_, t) in lock(&self.active).iter() {
            t.cancel();
        }
    }

    /// ComfyUI's "free memory": drops the output cache (`free_memory`) and asks the plugins to drop the models
    /// they keep (`unload_models`). Returns the plugins' errors, if any.
    #[pyo3(signature = (unload_models=true, free_memory=true))]
    fn free(&self, unload_models: bool, free_memory: bool) -> Vec<String> {
        self.exec.free(unload_models, free_memory)
    }

    /// Number of cached node outputs.
    #[getter]
    fn cache_len(&self) -> usize {
        self.exec.cache_len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<odelt.Host device={:?} plugins={} nodes={}>",
            self.dirs.device,
            self.exec.plugins().plugins().len(),
            self.exec.plugins().node_names().len()
        )
    }
}

/// The native module.
#[pymodule]
fn _odelt(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Host>()?;
    m.add_class::<PyCancelToken>()?;
    m.add_class::<PyHandle>()?;
    m.add_class::<RunResult>()?;
    m.add_class::<PyBatchItem>()?;
    m.add_class::<PyNodeOutput>()?;
    m.add_function(wrap_pyfunction!(_set_bundled_plugin_dir, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "CONTRACT_VERSION",
        odelt_host::odelt_contract::CONTRACT_VERSION,
    )?;
    Ok(())
}
