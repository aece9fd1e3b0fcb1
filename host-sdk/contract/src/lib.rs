//! # odelt-contract — the stable-ABI contract between odelt hosts and node plugins
//!
//! A plugin is a `cdylib` that depends on this crate (and on `abi_stable`, for the export
//! attribute) and nothing of the host. It exports one [`PluginMod`] root module; the host
//! loads it with `abi_stable`, which refuses a plugin built against an incompatible
//! [`CONTRACT_VERSION`] or a different layout of any type below.
//!
//! What crosses the boundary:
//! - node descriptors as JSON in ComfyUI's `/object_info` shape ([`NodeInfo`], built with
//!   its builder methods and [`InputSpec`]);
//! - [`Value`]s: INT (`i64`), FLOAT (`f64`), STRING, BOOLEAN, tensors as bytes
//!   ([`TensorBuf`]: dtype, shape, data — shared behind an `RArc`, never copied by the host),
//!   opaque plugin-owned [`Handle`]s (MODEL, VAE, ...) and JSON text for anything else;
//! - a [`HostContext`] (device; models, input, output and temp directories) whenever the host
//!   asks for descriptors or validation, so combo lists, checks and runs see the same folders;
//! - an [`ExecContext`] per call: progress (with optional preview), cancellation, the
//!   assigned device, and host information (node id, prompt JSON, `extra_pnginfo`, output,
//!   temp, models and input directories);
//! - results: [`NodeOutput`] (values + optional UI JSON) or [`NodeError`];
//! - node-specific validation of inputs before anything runs ([`ValidationIssue`]; linked
//!   inputs are described with their upstream nodes, see [`LinkedInput`]).
//!
//! No candle (or other tensor library) type crosses; GPU memory stays inside the plugin.
//!
//! ## Writing a plugin
//!
//! ```
//! use odelt_contract::{ExecContext, HostContext, InputSpec, Inputs, Node, NodeError, NodeInfo,
//!                      NodeOutput, NodeRegistry, Validation, ValidationIssue, Handle};
//!
//! struct Counter { start: i64 }
//!
//! fn nodes() -> NodeRegistry {
//!     let mut r = NodeRegistry::new("my-plugin", env!("CARGO_PKG_VERSION"));
//!     r.node(
//!         NodeInfo::new("Add")
//!             .category("math")
//!             .description("a + b")
//!             .required("a", InputSpec::int().default(0).min(-1000).max(1000))
//!             .required("b", InputSpec::int().default(0))
//!             .output("INT", "sum"),
//!         |inputs: &Inputs, _ctx: &ExecContext| {
//!             Ok(NodeOutput::new().with(inputs.int("a")? + inputs.int("b")?))
//!         },
//!     );
//!     // A long node: report progress every step; `?` stops it when the host cancels.
//!     r.node(
//!         NodeInfo::new("Slow").required("steps", InputSpec::int().default(10).min(1)).output("INT", "n"),
//!         |inputs, ctx| {
//!             let n = inputs.int("steps")? as u64;
//!             for i in 0..n {
//!                 // ... one step of work ...
//!                 ctx.progress(i + 1, n)?;
//!             }
//!             Ok(NodeOutput::new().with(n as i64))
//!         },
//!     );
//!     // Heavy objects stay in the plugin behind a handle; only this library can downcast it.
//!     r.node(
//!         NodeInfo::new("MakeCounter").required("start", InputSpec::int()).output("COUNTER", "counter"),
//!         |inputs, _| Ok(NodeOutput::new().with(Handle::new("COUNTER", Counter { start: inputs.int("start")? }))),
//!     );
//!     r.node(
//!         NodeInfo::new("ReadCounter").required("counter", InputSpec::new("COUNTER")).output("INT", "value"),
//!         |inputs, _| Ok(NodeOutput::new().with(inputs.handle_as::<Counter>("counter")?.start)),
//!     );
//!     // Custom validation of literal inputs, run by the host before anything executes.
//!     r.node_with_validation(
//!         NodeInfo::new("Even").required("n", InputSpec::int()).output("INT", "n"),
//!         |inputs, _| Ok(NodeOutput::new().with(inputs.int("n")?)),
//!         |v| match v.literals().int("n") {
//!             Ok(n) if n % 2 != 0 => vec![ValidationIssue::new("n", format!("{n} is odd"))],
//!             _ => vec![],
//!         },
//!     );
//!     // A node as a type (ComfyUI's node class): its descriptor for the host's directories, one
//!     // parser of its inputs shared by validation and execution, its body.
//!     r.add::<Halve>();
//!     r
//! }
//!
//! struct Halve;
//! /// Halve's inputs, parsed once for validation and execution.
//! fn halve_inputs(i: &Inputs<'_>) -> Result<i64, NodeError> {
//!     i.int("n")
//! }
//! impl Node for Halve {
//!     const CLASS: &'static str = "Halve";
//!     const VALIDATES: bool = true;
//!     fn describe(_host: &HostContext<'_>) -> NodeInfo {
//!         NodeInfo::new(Self::CLASS).required("n", InputSpec::int()).output("INT", "half")
//!     }
//!     fn run(inputs: &Inputs<'_>, _ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
//!         Ok(NodeOutput::new().with(halve_inputs(inputs)? / 2))
//!     }
//!     fn validate(v: &Validation<'_>) -> Vec<ValidationIssue> {
//!         match halve_inputs(&v.literals()) {
//!             Ok(n) if n % 2 != 0 => vec![ValidationIssue::new("n", format!("{n} is odd"))],
//!             _ => vec![], // fine, or linked (unknown until the run)
//!         }
//!     }
//! }
//!
//! // In the cdylib: odelt_contract::export_plugin!(nodes);
//!
//! // Nodes are plain functions, testable without a host:
//! let r = nodes();
//! let out = r.execute("Add", &[odelt_contract::NamedValue::new("a", 2i64),
//!                              odelt_contract::NamedValue::new("b", 3i64)],
//!                     &ExecContext::detached()).unwrap();
//! assert!(matches!(out.values[0], odelt_contract::Value::Int(5)));
//! let odd = serde_json::json!({"n": 3});
//! let issues = r.validate("Halve", odd.as_object().unwrap(), &HostContext::detached()).unwrap();
//! assert_eq!(issues[0].message.as_str(), "3 is odd");
//! ```
//!
//! Rules a plugin follows:
//! - Output nodes ([`NodeInfo::output_node`]) return their UI payload with
//!   [`NodeOutput::with_ui_images`] / [`NodeOutput::with_ui`]; they find where to write in
//!   [`ExecContext::output_dir`] and what to embed in [`ExecContext::prompt`] /
//!   [`ExecContext::workflow_json`].
//! - Outputs are immutable once returned (the host caches and shares them): return a new
//!   handle for a modified model instead of mutating the one received.
//! - Nodes that use the GPU are marked [`NodeInfo::device_bound`] and use
//!   [`ExecContext::device`]; the host runs one such node per device at a time.
//! - Every entry point catches panics ([`catch_panic`]); the registry glue does it for you.
//! - Build the plugin with the same `panic` strategy as the host (unwind).
#![allow(non_local_definitions)]
#![warn(missing_docs)]

pub mod context;
pub mod descriptor;
pub mod error;
pub mod paths;
pub mod plugin;
pub mod root_module;
pub mod value;

pub use context::{ExecContext, HostContext, HostHooks, PreviewFormat, PreviewImage};
pub use descriptor::{
    types, InputMap, InputOptions, InputOrder, InputSpec, InputType, NodeInfo, NodeInputs,
    OdeltFlags, DEFAULT_PYTHON_MODULE,
};
pub use error::{ErrorKind, NodeError, ValidationIssue};
pub use plugin::{
    catch_panic, install_quiet_panic_hook, linked_input, literal_values, Inputs, LinkedInput, Node,
    NodeRegistry, Validation,
};
pub use root_module::{NodeOutput, PluginInfo, PluginMod, PluginMod_Ref, CONTRACT_VERSION};
pub use value::{DType, Handle, NamedValue, OpaqueBox, OpaqueObject, TensorBuf, Value};

/// Re-exported so hosts and plugins use the same `abi_stable` as the contract.
pub use abi_stable;
