//! Helpers for plugin authors: a node registry, typed input access, panic catching, and the
//! glue that turns a registry into the exported root module ([`crate::export_plugin!`]).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    std_types::{RArc, RResult, RSlice, RStr, RString, RVec},
};
use serde_json::{Map, Value as Json};

use crate::context::{ExecContext, HostContext};
use crate::descriptor::NodeInfo;
use crate::error::{NodeError, ValidationIssue};
use crate::root_module::{NodeOutput, PluginInfo, PluginMod, PluginMod_Ref, CONTRACT_VERSION};
use crate::value::{Handle, NamedValue, TensorBuf, Value};

thread_local! {
    static PANIC_LOCATION: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Installs (once) a panic hook in this library's copy of std that records where a panic
/// happened for [`catch_panic`] instead of printing it, so a panicking node does not write
/// to the host's stderr. Set `ODELT_PANIC_TRACE=1` to also print panics as usual.
/// [`crate::export_plugin!`] plugins get this automatically.
pub fn install_quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        let print = std::env::var_os("ODELT_PANIC_TRACE").is_some();
        std::panic::set_hook(Box::new(move |info| {
            let loc = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            PANIC_LOCATION.with(|p| *p.borrow_mut() = loc);
            if print {
                default(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into `Err(NodeError)` of kind `Panicked` with the panic message
/// (and its location when [`install_quiet_panic_hook`] is active).
pub fn catch_panic<T>(f: impl FnOnce() -> Result<T, NodeError>) -> Result<T, NodeError> {
    PANIC_LOCATION.with(|p| p.borrow_mut().take());
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "unknown panic payload".to_string()
            };
            let at = PANIC_LOCATION
                .with(|p| p.borrow_mut().take())
                .map(|l| format!(" (at {l})"))
                .unwrap_or_default();
            Err(NodeError::panicked(format!("node panicked: {msg}{at}")))
        }
    }
}

/// Typed, by-name access to a node's inputs with errors that name the input.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    values: &'a [NamedValue],
}

impl<'a> Inputs<'a> {
    /// Wraps the slice the host passed.
    pub fn new(values: &'a [NamedValue]) -> Self {
        Inputs { values }
    }

    /// All inputs, in the order the host passed them.
    pub fn all(&self) -> &'a [NamedValue] {
        self.values
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.values
            .iter()
            .find(|nv| nv.name.as_str() == name)
            .map(|nv| &nv.value)
    }

    fn req(&self, name: &str) -> Result<&'a Value, NodeError> {
        self.get(name)
            .ok_or_else(|| NodeError::invalid_input(name, "missing"))
    }

    fn wrong(name: &str, want: &str, got: &Value) -> NodeError {
        NodeError::invalid_input(name, format!("expected {want}, got {}", got.kind_name()))
    }

    /// An INT input.
    pub fn int(&self, name: &str) -> Result<i64, NodeError> {
        match self.req(name)? {
            Value::Int(i) => Ok(*i),
            other => Err(Self::wrong(name, "INT", other)),
        }
    }

    /// An INT input read as u64 (bit-cast): for seeds declared with `max` up to `u64::MAX`.
    pub fn u64(&self, name: &str) -> Result<u64, NodeError> {
        self.int(name).map(|i| i as u64)
    }

    /// A FLOAT input (an INT is converted).
    pub fn float(&self, name: &str) -> Result<f64, NodeError> {
        match self.req(name)? {
            Value::Float(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            other => Err(Self::wrong(name, "FLOAT", other)),
        }
    }

    /// A STRING (or combo) input.
    pub fn string(&self, name: &str) -> Result<&'a str, NodeError> {
        match self.req(name)? {
            Value::Str(s) => Ok(s.as_str()),
            other => Err(Self::wrong(name, "STRING", other)),
        }
    }

    /// A BOOLEAN input.
    pub fn bool(&self, name: &str) -> Result<bool, NodeError> {
        match self.req(name)? {
            Value::Bool(b) => Ok(*b),
            other => Err(Self::wrong(name, "BOOLEAN", other)),
        }
    }

    /// A tensor input, borrowed.
    pub fn tensor(&self, name: &str) -> Result<&'a TensorBuf, NodeError> {
        match self.req(name)? {
            Value::Tensor(t) => Ok(t),
            other => Err(Self::wrong(name, "a tensor", other)),
        }
    }

    /// A tensor input as a shared pointer, to pass it on unchanged without copying.
    pub fn tensor_arc(&self, name: &str) -> Result<RArc<TensorBuf>, NodeError> {
        match self.req(name)? {
            Value::Tensor(t) => Ok(t.clone()),
            other => Err(Self::wrong(name, "a tensor", other)),
        }
    }

    /// A handle input, as the handle itself (clone it to keep it).
    pub fn handle(&self, name: &str) -> Result<&'a Handle, NodeError> {
        match self.req(name)? {
            Value::Handle(h) => Ok(h),
            other => Err(Self::wrong(name, "a handle", other)),
        }
    }

    /// A handle input downcast to the plugin's own type `T`.
    pub fn handle_as<T: Send + Sync + 'static>(&self, name: &str) -> Result<&'a T, NodeError> {
        let h = self.handle(name)?;
        h.downcast_ref::<T>().ok_or_else(|| {
            NodeError::invalid_input(
                name,
                format!(
                    "handle of type {} holds {}, not {}",
                    h.type_name(),
                    h.describe(),
                    std::any::type_name::<T>()
                ),
            )
        })
    }

    /// A JSON input (`*` inputs and `{"__value__": ...}` literals), parsed.
    pub fn json(&self, name: &str) -> Result<Json, NodeError> {
        match self.req(name)? {
            Value::Json(s) => serde_json::from_str(s.as_str())
                .map_err(|e| NodeError::invalid_input(name, format!("bad JSON: {e}"))),
            other => Ok(other.to_json()),
        }
    }

    /// An optional INT input.
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, NodeError> {
        self.opt(name, Self::int)
    }
    /// An optional FLOAT input.
    pub fn opt_float(&self, name: &str) -> Result<Option<f64>, NodeError> {
        self.opt(name, Self::float)
    }
    /// An optional STRING input.
    pub fn opt_string(&self, name: &str) -> Result<Option<&'a str>, NodeError> {
        self.opt(name, Self::string)
    }
    /// An optional BOOLEAN input.
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, NodeError> {
        self.opt(name, Self::bool)
    }
    /// An optional tensor input.
    pub fn opt_tensor(&self, name: &str) -> Result<Option<&'a TensorBuf>, NodeError> {
        self.opt(name, Self::tensor)
    }

    fn opt<T>(
        &self,
        name: &str,
        f: impl Fn(&Self, &str) -> Result<T, NodeError>,
    ) -> Result<Option<T>, NodeError> {
        if self.get(name).is_some() {
            f(self, name).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A linked input as the host describes it to a validate hook (see
/// [`NodeRegistry::node_with_validation`]).
#[derive(Clone, Copy, Debug)]
pub struct LinkedInput<'a> {
    /// The upstream node's id.
    pub node_id: &'a str,
    /// The output slot of the upstream node.
    pub output: u64,
    /// The upstream node's class (empty if the linked node does not exist).
    pub class_type: &'a str,
    /// The type of that output, if known.
    pub output_type: Option<&'a str>,
    /// The upstream node's inputs (literals and nested links); `None` when truncated.
    pub inputs: Option<&'a Map<String, Json>>,
}

impl<'a> LinkedInput<'a> {
    /// Reads a link object (`{"$link": [id, out], ...}`).
    pub fn from_json(v: &'a Json) -> Option<Self> {
        let o = v.as_object()?;
        let link = o.get("$link")?.as_array()?;
        Some(LinkedInput {
            node_id: link.first()?.as_str()?,
            output: link.get(1)?.as_u64()?,
            class_type: o.get("class_type").and_then(Json::as_str).unwrap_or(""),
            output_type: o.get("output_type").and_then(Json::as_str),
            inputs: o.get("inputs").and_then(Json::as_object),
        })
    }

    /// A literal input of the upstream node.
    pub fn literal(&self, name: &str) -> Option<&'a Json> {
        self.inputs?
            .get(name)
            .filter(|v| LinkedInput::from_json(v).is_none())
    }

    /// The nearest node of class `class_type` upstream of (or at) this link, searching
    /// breadth-first through the nested links.
    pub fn find_upstream(&self, class_type: &str) -> Option<LinkedInput<'a>> {
        let mut queue = std::collections::VecDeque::from([*self]);
        while let Some(l) = queue.pop_front() {
            if l.class_type == class_type {
                return Some(l);
            }
            if let Some(inputs) = l.inputs {
                queue.extend(inputs.values().filter_map(LinkedInput::from_json));
            }
        }
        None
    }
}

/// Input `name` of a validate hook's map, if it is linked.
pub fn linked_input<'a>(inputs: &'a Map<String, Json>, name: &str) -> Option<LinkedInput<'a>> {
    inputs.get(name).and_then(LinkedInput::from_json)
}

/// The literal inputs of a validate hook's map (or of an upstream node's, [`LinkedInput::inputs`])
/// as the values a node call would receive, so one typed parser ([`Inputs`]) serves validation
/// and execution alike. Linked inputs are left out (their values are unknown before the run):
/// a parser that needs one fails with "missing", which validation reads as "cannot check yet".
///
/// JSON numbers without a fraction become INT (a `u64` above `i64::MAX` bit-cast, as
/// [`Inputs::u64`] reads it back), other numbers FLOAT, strings STRING, booleans BOOLEAN,
/// anything else JSON text.
pub fn literal_values(inputs: &Map<String, Json>) -> Vec<NamedValue> {
    inputs
        .iter()
        .filter(|(_, v)| LinkedInput::from_json(v).is_none() && !is_raw_link(v))
        .filter_map(|(k, v)| {
            let value = match v {
                Json::Bool(b) => Value::Bool(*b),
                Json::String(s) => Value::from(s.as_str()),
                Json::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => Value::Int(i),
                    (None, Some(u), _) => Value::Int(u as i64),
                    (None, None, Some(f)) => Value::Float(f),
                    _ => return None,
                },
                Json::Null => return None,
                other => Value::Json(other.to_string().into()),
            };
            Some(NamedValue::new(k, value))
        })
        .collect()
}

/// A link as the API format writes it (`["id", out]`), not described by the host.
fn is_raw_link(v: &Json) -> bool {
    matches!(v, Json::Array(a) if a.len() == 2 && a[0].is_string() && a[1].is_u64())
}

/// What a node's validation sees: its inputs as the host describes them (literals, and linked
/// inputs with their upstream nodes, see [`NodeRegistry::node_with_validation`]) and the
/// directories and device the run will use. Derefs to the input map.
pub struct Validation<'a> {
    /// The inputs: literals as JSON values, linked inputs as link objects ([`LinkedInput`]).
    pub inputs: &'a Map<String, Json>,
    /// Where the run will happen.
    pub host: &'a HostContext<'a>,
    literals: Vec<NamedValue>,
}

impl<'a> Validation<'a> {
    /// Wraps a map and a host context.
    pub fn new(inputs: &'a Map<String, Json>, host: &'a HostContext<'a>) -> Self {
        Validation {
            inputs,
            host,
            literals: literal_values(inputs),
        }
    }

    /// The literal inputs, read with the same typed accessors as at execution.
    pub fn literals(&self) -> Inputs<'_> {
        Inputs::new(&self.literals)
    }

    /// Input `name`, if it is linked and described.
    pub fn link(&self, name: &str) -> Option<LinkedInput<'a>> {
        linked_input(self.inputs, name)
    }
}

impl std::ops::Deref for Validation<'_> {
    type Target = Map<String, Json>;
    fn deref(&self) -> &Self::Target {
        self.inputs
    }
}

/// One node as a type, ComfyUI's node class in Rust: its descriptor ([`Node::describe`], the
/// `INPUT_TYPES`/`RETURN_TYPES` of ComfyUI), its body ([`Node::run`], the `FUNCTION`) and,
/// optionally, checks before anything runs ([`Node::validate`]). Register it with
/// [`NodeRegistry::add`].
///
/// The idiom: parse the node's inputs into a typed struct with one function taking
/// [`Inputs`], and call it from `run` (with the call's inputs) and from `validate` (with
/// [`Validation::literals`]), so the interface is written once.
pub trait Node: Send + Sync + 'static {
    /// The class name (`class_type` in workflows).
    const CLASS: &'static str;
    /// Whether [`Node::validate`] does anything (shown in the descriptor's flags).
    const VALIDATES: bool = false;
    /// The descriptor for a host with these directories (combo lists may read them). Its
    /// name must be [`Node::CLASS`].
    fn describe(host: &HostContext<'_>) -> NodeInfo;
    /// Runs the node.
    fn run(inputs: &Inputs<'_>, ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError>;
    /// Checks before anything runs (when [`Node::VALIDATES`]).
    fn validate(_v: &Validation<'_>) -> Vec<ValidationIssue> {
        Vec::new()
    }
}

/// The function that runs a node.
pub type RunFn =
    dyn Fn(&Inputs<'_>, &ExecContext<'_>) -> Result<NodeOutput, NodeError> + Send + Sync;
/// A node's own validation (see [`Validation`]).
pub type ValidateFn = dyn Fn(&Validation<'_>) -> Vec<ValidationIssue> + Send + Sync;
/// Builds a node's descriptor for a host.
pub type DescribeFn = dyn Fn(&HostContext<'_>) -> NodeInfo + Send + Sync;
/// Called for `POST /free`; the flag is `unload_models`.
pub type FreeFn = dyn Fn(bool) + Send + Sync;

struct Entry {
    name: String,
    describe: Box<DescribeFn>,
    run: Box<RunFn>,
    validate: Option<Box<ValidateFn>>,
}

/// The set of nodes a plugin provides. Build one in a function and hand that function to
/// [`crate::export_plugin!`]; it can also be used directly in unit tests
/// ([`NodeRegistry::execute`]).
pub struct NodeRegistry {
    name: String,
    version: String,
    entries: Vec<Entry>,
    index: HashMap<String, usize>,
    free: Option<Box<FreeFn>>,
}

impl NodeRegistry {
    /// An empty registry for plugin `name`, version `version`.
    pub fn new(name: &str, version: &str) -> Self {
        NodeRegistry {
            name: name.to_string(),
            version: version.to_string(),
            entries: Vec::new(),
            index: HashMap::new(),
            free: None,
        }
    }

    /// Adds a node type (see [`Node`]).
    ///
    /// # Panics
    /// As [`NodeRegistry::node`]; also if the descriptor's name is not `N::CLASS`.
    pub fn add<N: Node>(&mut self) -> &mut Self {
        let validate: Option<Box<ValidateFn>> = if N::VALIDATES {
            Some(Box::new(|v: &Validation<'_>| N::validate(v)))
        } else {
            None
        };
        self.push(
            N::CLASS,
            Box::new(|h: &HostContext<'_>| N::describe(h)),
            Box::new(|i: &Inputs<'_>, c: &ExecContext<'_>| N::run(i, c)),
            validate,
        )
    }

    /// Adds a node with a fixed descriptor.
    ///
    /// # Panics
    /// If a node with the same name was already added or the descriptor is inconsistent
    /// (the panic is reported as a load error by the host).
    pub fn node<F>(&mut self, info: NodeInfo, run: F) -> &mut Self
    where
        F: Fn(&Inputs<'_>, &ExecContext<'_>) -> Result<NodeOutput, NodeError>
            + Send
            + Sync
            + 'static,
    {
        let name = info.name.clone();
        self.push(&name, fixed(info), Box::new(run), None)
    }

    /// Adds a node with its own input validation, called by the host before anything runs;
    /// each returned issue becomes a `custom_validation_failed` error for that input.
    ///
    /// The [`Validation`] holds every given input of the node: literal inputs as their
    /// (checked, converted) JSON values, and linked inputs as objects describing the upstream
    /// node: `{"$link": [src_id, out_index], "class_type": "...", "output_type": "...",
    /// "inputs": {...}}`, where `inputs` is the upstream node's own map built the same way (up
    /// to 16 levels; deeper, or past 4096 link objects, `"truncated": true` replaces
    /// `inputs`). Read them with [`Validation::link`] and [`LinkedInput::find_upstream`];
    /// ignore them if the node only cares about its literals.
    pub fn node_with_validation<F, V>(&mut self, info: NodeInfo, run: F, validate: V) -> &mut Self
    where
        F: Fn(&Inputs<'_>, &ExecContext<'_>) -> Result<NodeOutput, NodeError>
            + Send
            + Sync
            + 'static,
        V: Fn(&Validation<'_>) -> Vec<ValidationIssue> + Send + Sync + 'static,
    {
        let name = info.name.clone();
        self.push(&name, fixed(info), Box::new(run), Some(Box::new(validate)))
    }

    fn push(
        &mut self,
        name: &str,
        describe: Box<DescribeFn>,
        run: Box<RunFn>,
        validate: Option<Box<ValidateFn>>,
    ) -> &mut Self {
        // Check the descriptor once, for a default host, so mistakes show at registration.
        let info = describe(&HostContext::detached());
        if let Err(e) = info.check() {
            panic!("plugin {}: {e}", self.name);
        }
        if info.name != name {
            panic!(
                "plugin {}: node '{name}' describes itself as '{}'",
                self.name, info.name
            );
        }
        if self.index.contains_key(name) {
            panic!("plugin {}: node '{name}' registered twice", self.name);
        }
        self.index.insert(name.to_string(), self.entries.len());
        self.entries.push(Entry {
            name: name.to_string(),
            describe,
            run,
            validate,
        });
        self
    }

    /// Sets what `POST /free` does (drop cached models, ...).
    pub fn on_free(&mut self, f: impl Fn(bool) + Send + Sync + 'static) -> &mut Self {
        self.free = Some(Box::new(f));
        self
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node class names, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// The descriptor of every node for `host`, in registration order.
    pub fn infos(&self, host: &HostContext<'_>) -> Vec<NodeInfo> {
        self.entries.iter().map(|e| self.info_of(e, host)).collect()
    }

    fn info_of(&self, e: &Entry, host: &HostContext<'_>) -> NodeInfo {
        let mut info = (e.describe)(host);
        info.odelt.validates_inputs = e.validate.is_some();
        info
    }

    /// The `/object_info` JSON object for this plugin, for `host`.
    pub fn object_info_for(&self, host: &HostContext<'_>) -> Json {
        let mut m = Map::new();
        for e in &self.entries {
            let info = self.info_of(e, host);
            m.insert(
                e.name.clone(),
                serde_json::to_value(&info).unwrap_or(Json::Null),
            );
        }
        Json::Object(m)
    }

    /// The `/object_info` JSON object for a default host ([`HostContext::detached`]).
    pub fn object_info(&self) -> Json {
        self.object_info_for(&HostContext::detached())
    }

    /// Runs node `class_type` (panics are caught).
    pub fn execute(
        &self,
        class_type: &str,
        inputs: &[NamedValue],
        ctx: &ExecContext<'_>,
    ) -> Result<NodeOutput, NodeError> {
        let e = self.entry(class_type)?;
        catch_panic(|| (e.run)(&Inputs::new(inputs), ctx))
    }

    /// Runs node `class_type`'s own validation for `host` (panics are caught).
    pub fn validate(
        &self,
        class_type: &str,
        inputs: &Map<String, Json>,
        host: &HostContext<'_>,
    ) -> Result<Vec<ValidationIssue>, NodeError> {
        let e = self.entry(class_type)?;
        match &e.validate {
            None => Ok(Vec::new()),
            Some(v) => catch_panic(|| Ok(v(&Validation::new(inputs, host)))),
        }
    }

    fn entry(&self, class_type: &str) -> Result<&Entry, NodeError> {
        self.index
            .get(class_type)
            .map(|&i| &self.entries[i])
            .ok_or_else(|| {
                NodeError::failed(format!("plugin {} has no node '{class_type}'", self.name))
            })
    }
}

fn fixed(info: NodeInfo) -> Box<DescribeFn> {
    Box::new(move |_: &HostContext<'_>| info.clone())
}

// ---- the root module built from a registry -------------------------------------------------

static BUILDER: OnceLock<fn() -> NodeRegistry> = OnceLock::new();
static REGISTRY: OnceLock<Result<NodeRegistry, NodeError>> = OnceLock::new();

fn registry() -> Result<&'static NodeRegistry, NodeError> {
    REGISTRY
        .get_or_init(|| {
            let build = BUILDER
                .get()
                .ok_or_else(|| NodeError::failed("plugin root module not initialised"))?;
            catch_panic(|| Ok(build()))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn to_rresult<T>(r: Result<T, NodeError>) -> RResult<T, NodeError> {
    match r {
        Ok(v) => RResult::ROk(v),
        Err(e) => RResult::RErr(e),
    }
}

extern "C" fn ffi_plugin_info() -> PluginInfo {
    let (name, version) = match catch_panic(registry) {
        Ok(r) => (r.name.clone(), r.version.clone()),
        Err(_) => ("<plugin failed to initialise>".to_string(), String::new()),
    };
    PluginInfo {
        name: RString::from(name),
        version: RString::from(version),
        contract_version: RString::from(CONTRACT_VERSION),
    }
}

extern "C" fn ffi_node_descriptors(host: &HostContext<'_>) -> RResult<RString, NodeError> {
    to_rresult(catch_panic(|| {
        let r = registry()?;
        serde_json::to_string(&r.object_info_for(host))
            .map(RString::from)
            .map_err(|e| NodeError::failed(format!("serializing descriptors: {e}")))
    }))
}

extern "C" fn ffi_validate(
    class_type: RStr<'_>,
    literal_inputs_json: RStr<'_>,
    host: &HostContext<'_>,
) -> RResult<RVec<ValidationIssue>, NodeError> {
    to_rresult(catch_panic(|| {
        let r = registry()?;
        let inputs: Map<String, Json> = serde_json::from_str(literal_inputs_json.as_str())
            .map_err(|e| NodeError::failed(format!("literal inputs are not a JSON object: {e}")))?;
        r.validate(class_type.as_str(), &inputs, host)
            .map(RVec::from)
    }))
}

extern "C" fn ffi_execute(
    class_type: RStr<'_>,
    inputs: RSlice<'_, NamedValue>,
    ctx: &ExecContext<'_>,
) -> RResult<NodeOutput, NodeError> {
    to_rresult(catch_panic(|| {
        registry()?.execute(class_type.as_str(), inputs.as_slice(), ctx)
    }))
}

extern "C" fn ffi_free_memory(unload_models: bool) -> RResult<(), NodeError> {
    to_rresult(catch_panic(|| {
        if let Some(f) = &registry()?.free {
            f(unload_models);
        }
        Ok(())
    }))
}

/// Builds the root module for a plugin whose nodes come from `build` (called once, lazily,
/// on first use; a panic in it is reported as an error by every entry point). Use
/// [`crate::export_plugin!`] rather than calling this directly.
///
/// One registry per library: the registry lives in a static of this crate's copy inside
/// the plugin library.
pub fn root_module(build: fn() -> NodeRegistry) -> PluginMod_Ref {
    install_quiet_panic_hook();
    let _ = BUILDER.set(build);
    PluginMod {
        plugin_info: ffi_plugin_info,
        node_descriptors: ffi_node_descriptors,
        validate: ffi_validate,
        execute: ffi_execute,
        free_memory: ffi_free_memory,
    }
    .leak_into_prefix()
}

/// Exports a plugin root module built from a `fn() -> NodeRegistry`.
///
/// The plugin crate must be a `cdylib` and depend on `abi_stable` directly (the export
/// attribute refers to `::abi_stable`).
///
/// ```ignore
/// fn nodes() -> odelt_contract::NodeRegistry { /* ... */ }
/// odelt_contract::export_plugin!(nodes);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($build:path) => {
        #[::abi_stable::export_root_module]
        pub fn odelt_plugin_root_module() -> $crate::PluginMod_Ref {
            $crate::plugin::root_module($build)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::InputSpec;

    fn reg() -> NodeRegistry {
        let mut r = NodeRegistry::new("t", "0");
        r.node(
            NodeInfo::new("Add")
                .required("a", InputSpec::int())
                .required("b", InputSpec::int())
                .output("INT", "sum"),
            |i, _| Ok(NodeOutput::new().with(i.int("a")? + i.int("b")?)),
        );
        r.node_with_validation(
            NodeInfo::new("Boom").output("INT", "x"),
            |_, _| panic!("kaboom"),
            |m| {
                if m.contains_key("bad") {
                    vec![ValidationIssue::new("bad", "no")]
                } else {
                    vec![]
                }
            },
        );
        r
    }

    #[test]
    fn executes_and_catches_panics() {
        let r = reg();
        let ctx = ExecContext::detached();
        let out = r
            .execute(
                "Add",
                &[NamedValue::new("a", 2i64), NamedValue::new("b", 3i64)],
                &ctx,
            )
            .unwrap();
        assert!(matches!(out.values[0], Value::Int(5)));
        let err = r
            .execute("Add", &[NamedValue::new("a", 2i64)], &ctx)
            .unwrap_err();
        assert!(err.message.contains("'b'"), "{err}");
        let err = r.execute("Boom", &[], &ctx).unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Panicked);
        assert!(err.message.contains("kaboom"));
        assert!(r.execute("Nope", &[], &ctx).is_err());
    }

    #[test]
    fn validation_and_flags() {
        let r = reg();
        let mut m = Map::new();
        let host = HostContext::detached();
        assert!(r.validate("Boom", &m, &host).unwrap().is_empty());
        m.insert("bad".into(), Json::Bool(true));
        assert_eq!(r.validate("Boom", &m, &host).unwrap().len(), 1);
        let info = r.object_info();
        assert_eq!(info["Boom"]["odelt"]["validates_inputs"], Json::Bool(true));
        assert!(info["Add"].get("odelt").is_none());
    }

    #[test]
    fn linked_inputs_are_read_and_searched() {
        let m: Map<String, Json> = serde_json::from_value(serde_json::json!({
            "n": 3,
            "model": {"$link": ["5", 0], "class_type": "Patch", "output_type": "MODEL", "inputs": {
                "strength": 0.5,
                "model": {"$link": ["4", 0], "class_type": "Loader", "inputs": {"file": "a.safetensors"}}}}
        }))
        .unwrap();
        assert!(linked_input(&m, "n").is_none());
        let l = linked_input(&m, "model").unwrap();
        assert_eq!(
            (l.node_id, l.output, l.class_type, l.output_type),
            ("5", 0, "Patch", Some("MODEL"))
        );
        assert_eq!(l.literal("strength"), Some(&serde_json::json!(0.5)));
        assert!(l.literal("model").is_none());
        let loader = l.find_upstream("Loader").unwrap();
        assert_eq!(
            loader.literal("file").and_then(Json::as_str),
            Some("a.safetensors")
        );
        assert!(l.find_upstream("Nope").is_none());
    }

    #[test]
    fn typed_input_errors_name_the_input() {
        let vals = [NamedValue::new("s", "x"), NamedValue::new("i", 4i64)];
        let i = Inputs::new(&vals);
        assert_eq!(i.float("i").unwrap(), 4.0);
        let e = i.int("s").unwrap_err();
        assert!(
            e.message.contains("'s'") && e.message.contains("INT"),
            "{e}"
        );
        assert_eq!(i.opt_int("missing").unwrap(), None);
        assert!(i.handle_as::<u8>("i").is_err());
    }
}
