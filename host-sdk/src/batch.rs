//! Scripted runs: build or load a workflow, override inputs, run it for many seeds or labels.
//!
//! ```no_run
//! use odelt_host::{Batch, CancelToken, Executor, ExecutorConfig, PluginSearch, RunOptions, Workflow};
//! use std::sync::Arc;
//!
//! let plugins = Arc::new(PluginSearch::from_env(vec![]).load()?);
//! let exec = Executor::new(plugins, ExecutorConfig::default());
//! let mut wf = Workflow::new();
//! let a = wf.add("IntConstant", &[("value", 1.into())]);
//! let b = wf.add("Add", &[("b", 10.into())]);
//! wf.link(&b, "a", &a, 0)?;
//! wf.add("ShowNumber", &[("value", Workflow::link_value(&b, 0))]);
//! let batch = Batch::over(&format!("{a}.value"), (0..4).map(|s| (format!("seed{s}"), s.into())))?;
//! for r in batch.run(&exec, &wf, &RunOptions::default(), &|_: &odelt_host::Event| {}, &CancelToken::new()) {
//!     println!("{}: {:?}", r.label, r.outcome.map(|o| o.ui_outputs()));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use serde_json::{json, Map, Value as Json};

use crate::events::{CancelToken, EventSink};
use crate::executor::{Executor, RunError, RunOptions, RunOutcome};
use crate::prompt::{Prompt, PromptError};

/// Problems building or overriding a workflow.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The JSON is not a usable prompt.
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// An override names a node that is not in the workflow.
    #[error("no node '{0}' in the workflow")]
    NoSuchNode(String),
    /// An override is not `NODE.INPUT=VALUE`.
    #[error("bad override '{0}': expected NODE.INPUT=VALUE")]
    BadOverride(String),
}

/// An editable API-format workflow (the JSON node map), plus optional `extra_pnginfo`.
#[derive(Clone, Debug, Default)]
pub struct Workflow {
    nodes: Map<String, Json>,
    /// ComfyUI's `extra_data.extra_pnginfo` (e.g. `{"workflow": ui_json}`), if loaded.
    pub extra_pnginfo: Option<Json>,
}

impl Workflow {
    /// An empty workflow.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses either a bare API prompt or a `POST /prompt` body
    /// (`{"prompt": {...}, "extra_data": {"extra_pnginfo": {...}}}`).
    pub fn from_json_str(text: &str) -> Result<Self, WorkflowError> {
        let v: Json = serde_json::from_str(text).map_err(|e| PromptError::Json(e.to_string()))?;
        Self::from_json(v)
    }

    /// Like [`Workflow::from_json_str`], from a JSON value.
    pub fn from_json(v: Json) -> Result<Self, WorkflowError> {
        let Json::Object(mut top) = v else {
            return Err(PromptError::NotAnObject(crate::prompt::json_kind(&v)).into());
        };
        let is_wrapper =
            matches!(top.get("prompt"), Some(Json::Object(p)) if !p.contains_key("class_type"));
        let wf = if is_wrapper {
            let nodes = match top.remove("prompt") {
                Some(Json::Object(p)) => p,
                _ => Map::new(),
            };
            let extra = top
                .get("extra_data")
                .and_then(|e| e.get("extra_pnginfo"))
                .cloned();
            Workflow {
                nodes,
                extra_pnginfo: extra,
            }
        } else {
            Workflow {
                nodes: top,
                extra_pnginfo: None,
            }
        };
        // Fail early on structural problems.
        Prompt::from_map(wf.nodes.clone())?;
        Ok(wf)
    }

    /// Reads a workflow file.
    pub fn load(path: &Path) -> Result<Self, WorkflowError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkflowError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json_str(&text)
    }

    /// The JSON value of a link to `node`'s output `output` (`["id", output]`).
    pub fn link_value(node: &str, output: usize) -> Json {
        json!([node, output])
    }

    /// Adds a node with the next free numeric id and the given inputs (literals or
    /// [`Workflow::link_value`]s); returns its id.
    pub fn add(&mut self, class_type: &str, inputs: &[(&str, Json)]) -> String {
        let next = self
            .nodes
            .keys()
            .filter_map(|k| k.parse::<u64>().ok())
            .max()
            .map_or(1, |m| m + 1);
        let id = next.to_string();
        self.add_with_id(&id, class_type, inputs);
        id
    }

    /// Adds (or replaces) node `id`.
    pub fn add_with_id(&mut self, id: &str, class_type: &str, inputs: &[(&str, Json)]) {
        let inputs: Map<String, Json> = inputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        self.nodes.insert(
            id.to_string(),
            json!({"class_type": class_type, "inputs": inputs}),
        );
    }

    /// Sets input `input` of node `node` to a literal (wrapping JSON arrays as
    /// `{"__value__": [...]}` so they are not read as links).
    pub fn set(
        &mut self,
        node: &str,
        input: &str,
        value: Json,
    ) -> Result<&mut Self, WorkflowError> {
        let value = if value.is_array() {
            json!({ "__value__": value })
        } else {
            value
        };
        self.set_raw(node, input, value)
    }

    /// Links input `input` of `node` to output `output` of `from`.
    pub fn link(
        &mut self,
        node: &str,
        input: &str,
        from: &str,
        output: usize,
    ) -> Result<&mut Self, WorkflowError> {
        self.set_raw(node, input, Self::link_value(from, output))
    }

    fn set_raw(
        &mut self,
        node: &str,
        input: &str,
        value: Json,
    ) -> Result<&mut Self, WorkflowError> {
        let n = self
            .nodes
            .get_mut(node)
            .and_then(Json::as_object_mut)
            .ok_or_else(|| WorkflowError::NoSuchNode(node.to_string()))?;
        let inputs = n.entry("inputs").or_insert_with(|| json!({}));
        if !inputs.is_object() {
            *inputs = json!({});
        }
        if let Some(m) = inputs.as_object_mut() {
            m.insert(input.to_string(), value);
        }
        Ok(self)
    }

    /// Applies `NODE.INPUT=VALUE` (VALUE is JSON if it parses, else a string), as
    /// `odelt run --set` does.
    pub fn apply_override(&mut self, spec: &str) -> Result<&mut Self, WorkflowError> {
        let (target, value) = parse_override(spec)?;
        let (node, input) =
            split_target(&target).ok_or_else(|| WorkflowError::BadOverride(spec.to_string()))?;
        self.set(node, input, value)
    }

    /// The node map.
    pub fn nodes(&self) -> &Map<String, Json> {
        &self.nodes
    }

    /// The API-format JSON.
    pub fn to_json(&self) -> Json {
        Json::Object(self.nodes.clone())
    }

    /// Parses into a [`Prompt`].
    pub fn to_prompt(&self) -> Result<Prompt, PromptError> {
        Prompt::from_map(self.nodes.clone())
    }

    /// Runs the workflow once (options' `extra_pnginfo` defaults to the workflow's own).
    pub fn run(
        &self,
        exec: &Executor,
        opts: &RunOptions,
        sink: &dyn EventSink,
        cancel: &CancelToken,
    ) -> Result<RunOutcome, BatchRunError> {
        let prompt = self.to_prompt().map_err(BatchRunError::Prompt)?;
        let mut opts = opts.clone();
        if opts.extra_pnginfo.is_none() {
            opts.extra_pnginfo = self.extra_pnginfo.clone();
        }
        exec.run(&prompt, &opts, sink, cancel)
            .map_err(BatchRunError::Run)
    }
}

/// Splits `NODE.INPUT=VALUE` into (`NODE.INPUT`, JSON value).
pub fn parse_override(spec: &str) -> Result<(String, Json), WorkflowError> {
    let (target, raw) = spec
        .split_once('=')
        .ok_or_else(|| WorkflowError::BadOverride(spec.to_string()))?;
    let value = serde_json::from_str::<Json>(raw).unwrap_or_else(|_| Json::String(raw.to_string()));
    Ok((target.to_string(), value))
}

fn split_target(target: &str) -> Option<(&str, &str)> {
    let (node, input) = target.split_once('.')?;
    (!node.is_empty() && !input.is_empty()).then_some((node, input))
}

/// Why one run of a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchRunError {
    /// The workflow became structurally invalid.
    #[error(transparent)]
    Prompt(PromptError),
    /// An override did not apply.
    #[error(transparent)]
    Override(WorkflowError),
    /// Validation, node failure or interruption.
    #[error(transparent)]
    Run(RunError),
}

/// One run of a batch: a label and the inputs it overrides.
#[derive(Clone, Debug)]
pub struct BatchItem {
    /// A label (e.g. `"seed=3"`), also used in the prompt id.
    pub label: String,
    /// (`NODE.INPUT`, value) pairs applied on top of the base workflow.
    pub overrides: Vec<(String, Json)>,
}

impl BatchItem {
    /// An item from (`NODE.INPUT`, value) pairs, labelled by them (`4.seed=3 2.active_blocks=4`).
    pub fn from_overrides(overrides: Vec<(String, Json)>) -> Self {
        let label = overrides
            .iter()
            .map(|(t, v)| format!("{t}={}", compact_json(v)))
            .collect::<Vec<_>>()
            .join(" ");
        BatchItem { label, overrides }
    }

    /// A name derived from the item alone (never from its position or a counter), safe as a
    /// file or folder name: a readable part (the overrides sorted by target, characters other
    /// than `A-Za-z0-9._=,+-` replaced by `_`, at most 64 characters) and the 64-bit
    /// [`stable_hash`] of the canonical overrides, e.g. `2.active_blocks=4,4.seed=3-9f86d081884c7d65`.
    /// The same overrides give the same key on every machine and in every order; an item with
    /// no overrides is `base-<hash>`.
    pub fn key(&self) -> String {
        let canon = self.canonical_overrides();
        let readable: String = canon
            .iter()
            .map(|(t, v)| format!("{t}={}", compact_json(v)))
            .collect::<Vec<_>>()
            .join(",");
        let mut slug: String = readable
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._=,+-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        if slug.is_empty() {
            slug.push_str("base");
        }
        let text = serde_json::to_string(&canon).unwrap_or_default();
        format!("{slug}-{:016x}", stable_hash(text.as_bytes()))
    }

    /// The overrides sorted by target, each value with its object keys sorted (later
    /// duplicates of a target win, as when they are applied in order).
    fn canonical_overrides(&self) -> Vec<(String, Json)> {
        let mut m: std::collections::BTreeMap<String, Json> = std::collections::BTreeMap::new();
        for (t, v) in &self.overrides {
            m.insert(t.clone(), canonical_json(v));
        }
        m.into_iter().collect()
    }

    /// The base workflow with this item's overrides applied in order.
    pub fn apply(&self, base: &Workflow) -> Result<Workflow, WorkflowError> {
        let mut wf = base.clone();
        for (target, v) in &self.overrides {
            let (node, input) =
                split_target(target).ok_or_else(|| WorkflowError::BadOverride(target.clone()))?;
            wf.set(node, input, v.clone())?;
        }
        Ok(wf)
    }
}

/// 64-bit FNV-1a: a hash that is the same on every platform and release (unlike `std`'s
/// hashers), for names and seeds derived from items.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `value` with every object's keys sorted (so equal values print equally).
pub fn canonical_json(value: &Json) -> Json {
    match value {
        Json::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Json::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical_json(&m[k])))
                    .collect(),
            )
        }
        Json::Array(a) => Json::Array(a.iter().map(canonical_json).collect()),
        other => other.clone(),
    }
}

fn compact_json(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// The result of one batch item.
#[derive(Debug)]
pub struct BatchResult {
    /// Position in the batch.
    pub index: usize,
    /// The item's label.
    pub label: String,
    /// The prompt id used for its events.
    pub prompt_id: String,
    /// What happened.
    pub outcome: Result<RunOutcome, BatchRunError>,
}

/// A list of runs of one workflow with different inputs. Runs go one after the other on
/// the same executor, so unchanged upstream nodes (e.g. model loaders) come from cache.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// The runs.
    pub items: Vec<BatchItem>,
    /// Stop at the first failed item (default: go on; a cancellation always stops).
    pub stop_on_error: bool,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// One run per (label, value), each setting `target` (`"NODE.INPUT"`).
    pub fn over(
        target: &str,
        values: impl IntoIterator<Item = (String, Json)>,
    ) -> Result<Self, WorkflowError> {
        split_target(target).ok_or_else(|| WorkflowError::BadOverride(target.to_string()))?;
        Ok(Batch {
            items: values
                .into_iter()
                .map(|(label, v)| BatchItem {
                    label,
                    overrides: vec![(target.to_string(), v)],
                })
                .collect(),
            stop_on_error: false,
        })
    }

    /// One run per seed, each setting `target` (`"NODE.INPUT"`), labelled `seed=N`.
    pub fn seeds(
        target: &str,
        seeds: impl IntoIterator<Item = u64>,
    ) -> Result<Self, WorkflowError> {
        Self::over(
            target,
            seeds.into_iter().map(|s| (format!("seed={s}"), json!(s))),
        )
    }

    /// Adds a run.
    pub fn push(&mut self, item: BatchItem) -> &mut Self {
        self.items.push(item);
        self
    }

    /// Runs every item on `exec`, in order. Events of item `k` carry prompt id
    /// `"{base}-{k}"` where base is `opts.prompt_id` (or a random id).
    pub fn run(
        &self,
        exec: &Executor,
        base: &Workflow,
        opts: &RunOptions,
        sink: &dyn EventSink,
        cancel: &CancelToken,
    ) -> Vec<BatchResult> {
        let base_id = opts
            .prompt_id
            .clone()
            .unwrap_or_else(crate::executor::new_prompt_id);
        let mut out = Vec::with_capacity(self.items.len());
        for (index, item) in self.items.iter().enumerate() {
            if cancel.is_cancelled() {
                break;
            }
            let prompt_id = format!("{base_id}-{index}");
            let outcome = match item.apply(base) {
                Err(e) => Err(BatchRunError::Override(e)),
                Ok(wf) => {
                    let o = RunOptions {
                        prompt_id: Some(prompt_id.clone()),
                        ..opts.clone()
                    };
                    wf.run(exec, &o, sink, cancel)
                }
            };
            let failed = outcome.is_err();
            let interrupted = matches!(
                outcome,
                Err(BatchRunError::Run(RunError::Interrupted { .. }))
            );
            out.push(BatchResult {
                index,
                label: item.label.clone(),
                prompt_id,
                outcome,
            });
            if interrupted || (failed && self.stop_on_error) {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_links_and_overrides() {
        let mut wf = Workflow::new();
        let a = wf.add("IntConstant", &[("value", json!(1))]);
        let b = wf.add("Add", &[("b", json!(2))]);
        wf.link(&b, "a", &a, 0).unwrap();
        assert_eq!(wf.nodes()[&b]["inputs"]["a"], json!(["1", 0]));
        wf.apply_override("1.value=7").unwrap();
        assert_eq!(wf.nodes()["1"]["inputs"]["value"], json!(7));
        wf.apply_override("1.value=hello").unwrap();
        assert_eq!(wf.nodes()["1"]["inputs"]["value"], json!("hello"));
        wf.apply_override("1.value=[1,2]").unwrap();
        assert_eq!(
            wf.nodes()["1"]["inputs"]["value"],
            json!({"__value__": [1, 2]})
        );
        assert!(matches!(
            wf.apply_override("9.value=1"),
            Err(WorkflowError::NoSuchNode(_))
        ));
        assert!(matches!(
            wf.apply_override("novalue"),
            Err(WorkflowError::BadOverride(_))
        ));
        assert!(matches!(
            wf.apply_override("1=3"),
            Err(WorkflowError::BadOverride(_))
        ));
        assert!(wf.to_prompt().is_ok());
    }

    #[test]
    fn reads_post_prompt_bodies() {
        let wf = Workflow::from_json(json!({"prompt": {"1": {"class_type": "A", "inputs": {}}},
                                             "extra_data": {"extra_pnginfo": {"workflow": {"v": 1}}}}))
        .unwrap();
        assert_eq!(wf.nodes().len(), 1);
        assert_eq!(wf.extra_pnginfo, Some(json!({"workflow": {"v": 1}})));
        let bare = Workflow::from_json(json!({"1": {"class_type": "A"}})).unwrap();
        assert!(bare.extra_pnginfo.is_none());
        assert!(Workflow::from_json_str("[").is_err());
        let seeds = Batch::seeds("3.seed", [1, 2]).unwrap();
        assert_eq!(seeds.items[1].label, "seed=2");
        assert!(Batch::seeds("nodot", [1]).is_err());
    }

    #[test]
    fn item_keys_come_from_the_overrides_alone() {
        let a = BatchItem::from_overrides(vec![
            ("4.seed".into(), json!(3)),
            ("2.active_blocks".into(), json!(4)),
        ]);
        let b = BatchItem::from_overrides(vec![
            ("2.active_blocks".into(), json!(4)),
            ("4.seed".into(), json!(3)),
        ]);
        assert_eq!(a.label, "4.seed=3 2.active_blocks=4");
        assert_eq!(a.key(), b.key());
        assert!(a.key().starts_with("2.active_blocks=4,4.seed=3-"));
        let c = BatchItem::from_overrides(vec![("4.seed".into(), json!(4))]);
        assert_ne!(a.key(), c.key());
        let odd = BatchItem::from_overrides(vec![("6.text".into(), json!("a/b c"))]);
        assert!(odd.key().starts_with("6.text=a_b_c-"));
        assert!(BatchItem::from_overrides(vec![]).key().starts_with("base-"));
        // Pinned: keys name files on disk, so they must not change between releases.
        assert_eq!(stable_hash(b"odelt"), 0xe079_58e4_ca4f_2fe9);
        let o1 = json!({"b": 1, "a": [ {"d": 2, "c": 3} ]});
        assert_eq!(
            serde_json::to_string(&canonical_json(&o1)).unwrap(),
            r#"{"a":[{"c":3,"d":2}],"b":1}"#
        );
    }
}
