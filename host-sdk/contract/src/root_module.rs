//! The root module every plugin library exports, and what node calls return.
#![allow(non_camel_case_types)] // abi_stable names the prefix reference `PluginMod_Ref`

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

use crate::context::{ExecContext, HostContext};
use crate::error::{NodeError, ValidationIssue};
use crate::value::{NamedValue, Value};

/// The contract version this crate defines (its package version). abi_stable compares it at
/// load time: same major, and for 0.y the plugin's minor must be >= the host's.
pub const CONTRACT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Name and version of a plugin.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct PluginInfo {
    /// Plugin name, e.g. `"odelt-plugin"`.
    pub name: RString,
    /// Plugin version.
    pub version: RString,
    /// The contract version the plugin was built against ([`CONTRACT_VERSION`] of its copy).
    pub contract_version: RString,
}

/// What a node call returns: one value per declared output, and for output nodes an optional
/// UI payload (ComfyUI's `ui` dict as JSON, e.g. `{"images": [{"filename", "subfolder",
/// "type"}]}`) that the host forwards in its `executed` event.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default)]
pub struct NodeOutput {
    /// Output values, in declaration order.
    pub values: RVec<Value>,
    /// The UI payload as a JSON object, if any.
    pub ui: ROption<RString>,
}

impl NodeOutput {
    /// No values, no UI.
    pub fn new() -> Self {
        NodeOutput::default()
    }

    /// Appends an output value (builder style).
    pub fn with(mut self, v: impl Into<Value>) -> Self {
        self.values.push(v.into());
        self
    }

    /// Sets the UI payload from a JSON value (should be an object).
    pub fn with_ui(mut self, ui: serde_json::Value) -> Self {
        self.ui = ROption::RSome(RString::from(ui.to_string()));
        self
    }

    /// Sets a UI payload listing images: `{"images": [{"filename","subfolder","type"}]}`.
    /// `kind` is `"output"` or `"temp"`.
    pub fn with_ui_images<'a>(
        self,
        images: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Self {
        let list: Vec<serde_json::Value> = images
            .into_iter()
            .map(|(filename, subfolder, kind)| {
                serde_json::json!({"filename": filename, "subfolder": subfolder, "type": kind})
            })
            .collect();
        self.with_ui(serde_json::json!({ "images": list }))
    }

    /// Sets a UI payload with text lines: `{"text": [...]}`.
    pub fn with_ui_text<S: AsRef<str>>(self, lines: &[S]) -> Self {
        let list: Vec<&str> = lines.iter().map(|s| s.as_ref()).collect();
        self.with_ui(serde_json::json!({ "text": list }))
    }
}

/// The root module of a plugin library (a prefix type: entry points may be appended in later
/// contract versions after the last prefix field, and old plugins still load).
///
/// Every function must catch panics and return them as [`NodeError`]s
/// ([`crate::NodeRegistry`]-based plugins get this from [`crate::export_plugin!`]).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginMod_Ref)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    /// Name and version.
    pub plugin_info: extern "C" fn() -> PluginInfo,
    /// The JSON object `{class_type: NodeInfo}` — exactly what `/object_info` serves — for a
    /// host with these directories (combo inputs list the files found there). Called when the
    /// host loads the plugin and again whenever its directories change.
    pub node_descriptors: extern "C" fn(host: &HostContext<'_>) -> RResult<RString, NodeError>,
    /// Node-specific validation, run by the host before anything executes, with a JSON
    /// object of the node's inputs: literals as values, linked inputs as
    /// `{"$link": [id, out], "class_type", "output_type", "inputs": {...}}` objects describing
    /// the upstream nodes (see `NodeRegistry::node_with_validation`). Returns the problems
    /// found (empty = fine). `host` holds the directories and device the run will use.
    pub validate: extern "C" fn(
        class_type: RStr<'_>,
        literal_inputs_json: RStr<'_>,
        host: &HostContext<'_>,
    ) -> RResult<RVec<ValidationIssue>, NodeError>,
    /// Runs one node. `inputs` holds every given input (optional ones may be absent).
    pub execute: extern "C" fn(
        class_type: RStr<'_>,
        inputs: RSlice<'_, NamedValue>,
        ctx: &ExecContext<'_>,
    ) -> RResult<NodeOutput, NodeError>,
    /// Asks the plugin to free memory it keeps (model caches) — ComfyUI's `POST /free`.
    #[sabi(last_prefix_field)]
    pub free_memory: extern "C" fn(unload_models: bool) -> RResult<(), NodeError>,
}

impl RootModule for PluginMod_Ref {
    declare_root_module_statics! {PluginMod_Ref}
    const BASE_NAME: &'static str = "odelt_plugin";
    const NAME: &'static str = "odelt plugin contract";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
