//! Validation of a prompt against the loaded node descriptors, before anything runs.
//!
//! Errors use ComfyUI's shapes (`POST /prompt` 400 body): a top-level `error` object and
//! `node_errors: {id: {errors: [{type, message, details, extra_info}], dependent_outputs,
//! class_type}}`. Everything here is iterative, so long chains cannot overflow the stack.

use std::sync::Arc;

use odelt_contract::{types, InputSpec, InputType, NodeInfo, Value};
use serde_json::{json, Map, Value as Json};

use crate::loader::PluginSet;
use crate::prompt::{InputValue, Prompt};

mod graph;
mod literal;

use graph::{kahn, peel_sinks, upstream};
pub use literal::check_literal;

/// A prompt refused by validation: ComfyUI's `{"error": ..., "node_errors": ...}`.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidationFailure {
    /// The top-level error `{type, message, details, extra_info}`.
    pub error: Json,
    /// Per-node errors, keyed by node id.
    pub node_errors: Map<String, Json>,
}

impl ValidationFailure {
    fn top(ty: &str, message: impl Into<String>, details: impl Into<String>, extra: Json) -> Self {
        ValidationFailure {
            error: json!({"type": ty, "message": message.into(), "details": details.into(), "extra_info": extra}),
            node_errors: Map::new(),
        }
    }

    /// The top-level error type (`missing_node_type`, `prompt_no_outputs`,
    /// `prompt_outputs_failed_validation`, `invalid_prompt`).
    pub fn error_type(&self) -> &str {
        self.error["type"].as_str().unwrap_or("")
    }

    /// A one-line summary: the top-level message and the first node error.
    pub fn summary(&self) -> String {
        let mut s = self.error["message"]
            .as_str()
            .unwrap_or("invalid prompt")
            .to_string();
        let details = self.error["details"].as_str().unwrap_or("");
        if !details.is_empty() {
            s.push_str(": ");
            s.push_str(details);
        }
        s
    }

    /// The error types reported for node `id`.
    pub fn node_error_types(&self, id: &str) -> Vec<String> {
        self.node_errors
            .get(id)
            .and_then(|n| n["errors"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["type"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ComfyUI 400 body `{"error": ..., "node_errors": ...}`.
    pub fn to_json(&self) -> Json {
        json!({"error": self.error, "node_errors": self.node_errors})
    }
}

/// How an input of a planned node gets its value.
#[derive(Clone, Debug)]
pub enum PlanInput {
    /// A checked, converted literal, and its canonical JSON (for cache keys and `validate`).
    Literal(Value, Json),
    /// An output of another planned node.
    Link {
        /// Index of the source in [`Plan::nodes`].
        node: usize,
        /// Output slot.
        output: usize,
        /// Convert an INT value to FLOAT (the input is declared FLOAT).
        to_float: bool,
    },
}

/// A validated node, ready to run.
#[derive(Clone, Debug)]
pub struct PlanNode {
    /// Node id in the prompt.
    pub id: String,
    /// Class type.
    pub class_type: String,
    /// `_meta.title`.
    pub title: Option<String>,
    /// Index of the plugin in the [`PluginSet`].
    pub plugin: usize,
    /// The descriptor.
    pub info: Arc<NodeInfo>,
    /// Given inputs, in descriptor order.
    pub inputs: Vec<(String, PlanInput)>,
}

/// A validated prompt: the nodes the chosen outputs need, dependencies first.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Needed nodes in a topological order (every link points to an earlier node).
    pub nodes: Vec<PlanNode>,
    /// Indices (into `nodes`) of the output nodes to produce.
    pub outputs: Vec<usize>,
    /// Errors of outputs that were dropped (only with `partial`; otherwise any error fails).
    pub node_errors: Map<String, Json>,
}

/// Options of [`validate`].
#[derive(Clone, Debug, Default)]
pub struct ValidateOptions {
    /// Only these output nodes (ComfyUI's `partial_execution_targets`).
    pub targets: Option<Vec<String>>,
    /// ComfyUI behaviour: drop outputs that fail validation and run the others. When false,
    /// any node error refuses the whole prompt.
    pub partial: bool,
}

fn err(ty: &str, message: impl Into<String>, details: impl Into<String>, extra: Json) -> Json {
    json!({"type": ty, "message": message.into(), "details": details.into(), "extra_info": extra})
}

fn spec_json(spec: &InputSpec) -> Json {
    serde_json::to_value(spec).unwrap_or(Json::Null)
}

/// Whether an output of type `out` may feed an input of type `input`: equal, overlapping
/// comma-separated unions, or `*` on either side. Combo inputs accept COMBO and STRING.
pub fn types_match(out: &str, input: &str) -> bool {
    let split = |s: &str| -> Vec<String> { s.split(',').map(|t| t.trim().to_string()).collect() };
    let (o, i) = (split(out), split(input));
    if o.iter().any(|t| t == types::ANY) || i.iter().any(|t| t == types::ANY) {
        return true;
    }
    o.iter().any(|t| i.contains(t))
}

fn link_type_ok(out: &str, spec: &InputSpec) -> bool {
    match &spec.ty {
        InputType::Combo(_) => types_match(out, "COMBO,STRING"),
        InputType::Named(n) => types_match(out, n),
    }
}

enum Local {
    Literal(Value, Json),
    Link {
        src: usize,
        output: usize,
        to_float: bool,
    },
}

struct Checked {
    errors: Vec<Json>,
    inputs: Vec<(String, Local)>,
}

/// Validates `prompt` against `plugins`; on success returns the execution plan.
pub fn validate(
    prompt: &Prompt,
    plugins: &PluginSet,
    opts: &ValidateOptions,
) -> Result<Plan, ValidationFailure> {
    let nodes = prompt.nodes();
    // 1. Every class must exist.
    let mut entries = Vec::with_capacity(nodes.len());
    for n in nodes {
        match plugins.node(&n.class_type) {
            Some(e) => entries.push(e.clone()),
            None => {
                return Err(ValidationFailure::top(
                    "missing_node_type",
                    format!(
                        "Node '{}' not found. The custom node may not be installed.",
                        n.class_type
                    ),
                    format!("Node ID '#{}'", n.id),
                    json!({"node_id": n.id, "class_type": n.class_type, "node_title": n.title.clone().unwrap_or_else(|| n.class_type.clone())}),
                ))
            }
        }
    }
    // 2. Outputs.
    let outputs: Vec<usize> = (0..nodes.len())
        .filter(|&i| entries[i].info.output_node)
        .filter(|&i| {
            opts.targets
                .as_ref()
                .is_none_or(|t| t.contains(&nodes[i].id))
        })
        .collect();
    if outputs.is_empty() {
        return Err(ValidationFailure::top(
            "prompt_no_outputs",
            "Prompt has no outputs",
            "",
            json!({}),
        ));
    }
    // 3. Link edges (declared inputs whose source exists) and reachability from outputs.
    let deps: Vec<Vec<usize>> = (0..nodes.len())
        .map(|i| {
            declared(&entries[i].info)
                .filter_map(|(name, _, _)| match nodes[i].input(name) {
                    Some(InputValue::Link { node, .. }) => prompt.position(node),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let mut reachable = vec![false; nodes.len()];
    let mut stack: Vec<usize> = outputs.clone();
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut reachable[i], true) {
            stack.extend(deps[i].iter().copied().filter(|&d| !reachable[d]));
        }
    }
    // 4. Kahn's order of the reachable nodes: what it leaves out is on a cycle or downstream of one.
    let order = kahn(&deps, &reachable);
    let mut in_order = vec![false; nodes.len()];
    order.iter().for_each(|&i| in_order[i] = true);
    // 5. Local checks of reachable nodes. Plugins' validate hooks only see acyclic nodes: a node on or after a
    // cycle fails anyway, and describing its links would expand the cycle up to the depth and budget limits.
    let mut checked: Vec<Option<Checked>> = (0..nodes.len())
        .map(|i| {
            reachable[i].then(|| {
                let e = &entries[i];
                check_node(prompt, plugins, i, &e.info, e.plugin, in_order[i])
            })
        })
        .collect();
    // 6. Cycles: peel sinks off what Kahn left; what remains is on or between cycles.
    let mut cyclic: Vec<bool> = (0..nodes.len())
        .map(|i| reachable[i] && !in_order[i])
        .collect();
    peel_sinks(&deps, &mut cyclic);
    for i in 0..nodes.len() {
        if cyclic[i] {
            if let Some(c) = checked[i].as_mut() {
                c.errors.push(err(
                    "dependency_cycle",
                    "Dependency cycle detected",
                    format!("node {} depends on itself through its inputs", nodes[i].id),
                    json!({}),
                ));
            }
        }
    }
    // 7. A node is ok when it and everything upstream is.
    let mut ok = vec![false; nodes.len()];
    for &i in &order {
        ok[i] = checked[i].as_ref().is_some_and(|c| c.errors.is_empty())
            && deps[i].iter().all(|&d| ok[d]);
    }
    // 8. node_errors with dependent outputs.
    let mut node_errors = Map::new();
    let mut dependents: Vec<Vec<String>> = vec![Vec::new(); nodes.len()];
    for &o in &outputs {
        for i in upstream(&deps, o) {
            if checked[i].as_ref().is_some_and(|c| !c.errors.is_empty()) {
                dependents[i].push(nodes[o].id.clone());
            }
        }
    }
    for i in 0..nodes.len() {
        if let Some(c) = &checked[i] {
            if !c.errors.is_empty() {
                node_errors.insert(
                    nodes[i].id.clone(),
                    json!({"errors": c.errors, "dependent_outputs": dependents[i], "class_type": nodes[i].class_type}),
                );
            }
        }
    }
    let good: Vec<usize> = outputs.iter().copied().filter(|&o| ok[o]).collect();
    if good.is_empty() || (!opts.partial && !node_errors.is_empty()) {
        let details = node_errors
            .iter()
            .take(1)
            .filter_map(|(id, e)| {
                let first = e["errors"].get(0)?;
                Some(format!(
                    "node {id} ({}): {}: {} {}",
                    e["class_type"].as_str().unwrap_or(""),
                    first["type"].as_str().unwrap_or(""),
                    first["message"].as_str().unwrap_or(""),
                    first["details"].as_str().unwrap_or("")
                ))
            })
            .next()
            .unwrap_or_default();
        return Err(ValidationFailure {
            error: err(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                details.trim_end(),
                json!({}),
            ),
            node_errors,
        });
    }
    // 9. The plan: nodes the good outputs need, in topological order.
    let mut needed = vec![false; nodes.len()];
    for &o in &good {
        for i in upstream(&deps, o) {
            needed[i] = true;
        }
    }
    let mut plan_index = vec![usize::MAX; nodes.len()];
    let mut plan_nodes = Vec::new();
    for &i in order.iter().filter(|&&i| needed[i]) {
        plan_index[i] = plan_nodes.len();
        let c = checked[i].take().expect("reachable nodes are checked");
        let inputs = c
            .inputs
            .into_iter()
            .map(|(name, l)| {
                let pi = match l {
                    Local::Literal(v, j) => PlanInput::Literal(v, j),
                    Local::Link {
                        src,
                        output,
                        to_float,
                    } => PlanInput::Link {
                        node: plan_index[src],
                        output,
                        to_float,
                    },
                };
                (name, pi)
            })
            .collect();
        plan_nodes.push(PlanNode {
            id: nodes[i].id.clone(),
            class_type: nodes[i].class_type.clone(),
            title: nodes[i].title.clone(),
            plugin: entries[i].plugin,
            info: entries[i].info.clone(),
            inputs,
        });
    }
    let plan_outputs = good.iter().map(|&o| plan_index[o]).collect();
    Ok(Plan {
        nodes: plan_nodes,
        outputs: plan_outputs,
        node_errors,
    })
}

/// Declared inputs: (name, spec, required), required first.
fn declared(info: &NodeInfo) -> impl Iterator<Item = (&str, &InputSpec, bool)> {
    info.input
        .required
        .iter()
        .map(|(n, s)| (n, s, true))
        .chain(info.input.optional.iter().map(|(n, s)| (n, s, false)))
}

fn check_node(
    prompt: &Prompt,
    plugins: &PluginSet,
    i: usize,
    info: &NodeInfo,
    plugin: usize,
    acyclic: bool,
) -> Checked {
    let node = &prompt.nodes()[i];
    let mut errors = Vec::new();
    let mut inputs = Vec::new();
    let mut literals = Map::new();
    for (name, spec, required) in declared(info) {
        let extra = |more: Json| {
            let mut e = json!({"input_name": name, "input_config": spec_json(spec)});
            if let (Some(o), Json::Object(m)) = (e.as_object_mut(), more) {
                o.extend(m);
            }
            e
        };
        match node.input(name) {
            None => {
                if required {
                    errors.push(err(
                        "required_input_missing",
                        "Required input is missing",
                        name,
                        extra(json!({})),
                    ));
                }
            }
            Some(InputValue::BadLink(v)) => errors.push(err(
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                format!("{name}, {v}"),
                extra(json!({"received_value": v})),
            )),
            Some(InputValue::Link {
                node: src_id,
                output,
            }) => {
                let Some(src) = prompt.position(src_id) else {
                    errors.push(err(
                        "bad_linked_input",
                        format!("Linked node '{src_id}' does not exist"),
                        format!("{name}, [\"{src_id}\", {output}]"),
                        extra(json!({"linked_node": [src_id, output]})),
                    ));
                    continue;
                };
                let src_class = &prompt.nodes()[src].class_type;
                let Some(src_info) = plugins.node(src_class).map(|e| &e.info) else {
                    continue; // unknown classes were refused earlier
                };
                let Some(out_ty) = src_info.output.get(*output) else {
                    errors.push(err(
                        "bad_linked_input",
                        format!("Linked node '{src_id}' ({src_class}) has no output {output}; it has {}", src_info.output.len()),
                        format!("{name}, [\"{src_id}\", {output}]"),
                        extra(json!({"linked_node": [src_id, output]})),
                    ));
                    continue;
                };
                if !link_type_ok(out_ty, spec) {
                    errors.push(err(
                        "return_type_mismatch",
                        "Return type mismatch between linked nodes",
                        format!(
                            "{name}, received_type({out_ty}) mismatch input_type({})",
                            spec.ty.name()
                        ),
                        extra(json!({"received_type": out_ty, "linked_node": [src_id, output]})),
                    ));
                    continue;
                }
                let to_float = matches!(&spec.ty, InputType::Named(n) if n == types::FLOAT);
                inputs.push((
                    name.to_string(),
                    Local::Link {
                        src,
                        output: *output,
                        to_float,
                    },
                ));
            }
            Some(InputValue::Literal(v)) => match check_literal(name, spec, v) {
                Ok((value, canon)) => {
                    literals.insert(name.to_string(), canon.clone());
                    inputs.push((name.to_string(), Local::Literal(value, canon)));
                }
                Err(e) => errors.push(e),
            },
        }
    }
    if info.odelt.validates_inputs && acyclic {
        // Linked inputs are described with their upstream nodes (see `link_context`).
        let mut budget = LINK_CONTEXT_BUDGET;
        for (name, _, _) in declared(info) {
            if let Some(InputValue::Link {
                node: src_id,
                output,
            }) = node.input(name)
            {
                let v = match prompt.position(src_id) {
                    Some(src) => link_context(
                        prompt,
                        plugins,
                        src,
                        *output,
                        LINK_CONTEXT_DEPTH,
                        &mut budget,
                    ),
                    None => json!({ "$link": [src_id, output] }),
                };
                literals.insert(name.to_string(), v);
            }
        }
        let host = plugins.host_context();
        match plugins.plugins()[plugin].validate(&node.class_type, &literals, &host) {
            Ok(issues) => {
                for issue in issues {
                    let input = issue.input_name.as_str();
                    let details = if input.is_empty() {
                        issue.message.to_string()
                    } else {
                        format!("{input} - {}", issue.message)
                    };
                    errors.push(err(
                        "custom_validation_failed",
                        "Custom validation failed for node",
                        details,
                        json!({"input_name": input, "received_value": literals.get(input).cloned().unwrap_or(Json::Null)}),
                    ));
                }
            }
            Err(e) => errors.push(err(
                "exception_during_validation",
                "Exception when validating node",
                e.message.to_string(),
                json!({"exception_type": e.kind.exception_type()}),
            )),
        }
    }
    Checked { errors, inputs }
}

/// How many levels of upstream nodes a validate hook sees through a linked input.
pub const LINK_CONTEXT_DEPTH: usize = 16;
/// At most this many link objects are built for one validate call (DAGs can fan in).
pub const LINK_CONTEXT_BUDGET: usize = 4096;

/// Describes output `output` of node `src` for a validate hook:
/// `{"$link": [id, output], "class_type", "output_type", "inputs": {...}}` where `inputs`
/// holds the upstream node's literal inputs (converted like the node's own) and, for its
/// linked inputs, the same kind of object, `depth` levels deep. When the depth or the budget
/// runs out, `inputs` is replaced by `"truncated": true`.
fn link_context(
    prompt: &Prompt,
    plugins: &PluginSet,
    src: usize,
    output: usize,
    depth: usize,
    budget: &mut usize,
) -> Json {
    let node = &prompt.nodes()[src];
    let mut o = Map::new();
    o.insert("$link".into(), json!([node.id, output]));
    o.insert("class_type".into(), json!(node.class_type));
    let info = plugins.node(&node.class_type).map(|e| e.info.clone());
    if let Some(t) = info.as_ref().and_then(|i| i.output.get(output)) {
        o.insert("output_type".into(), json!(t));
    }
    if depth == 0 || *budget == 0 {
        o.insert("truncated".into(), Json::Bool(true));
        return Json::Object(o);
    }
    *budget -= 1;
    let mut inputs = Map::new();
    if let Some(info) = &info {
        for (name, spec, _) in declared(info) {
            let v = match node.input(name) {
                None => continue,
                Some(InputValue::Literal(v)) => check_literal(name, spec, v)
                    .map(|(_, c)| c)
                    .unwrap_or_else(|_| v.clone()),
                Some(InputValue::BadLink(v)) => v.clone(),
                Some(InputValue::Link { node: id, output }) => match prompt.position(id) {
                    Some(p) => link_context(prompt, plugins, p, *output, depth - 1, budget),
                    None => json!({ "$link": [id, output] }),
                },
            };
            inputs.insert(name.to_string(), v);
        }
    }
    o.insert("inputs".into(), Json::Object(inputs));
    Json::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_matching_rules() {
        assert!(types_match("INT", "INT"));
        assert!(!types_match("INT", "FLOAT"));
        assert!(types_match("INT", "INT,FLOAT"));
        assert!(types_match("FLOAT, INT", "FLOAT"));
        assert!(types_match("*", "MODEL"));
        assert!(types_match("MODEL", "*"));
        assert!(!types_match("MODEL", "VAE"));
    }

    #[test]
    fn literal_conversion_and_ranges() {
        let int = InputSpec::int().min(0).max(10);
        assert!(matches!(
            check_literal("x", &int, &json!(3)),
            Ok((Value::Int(3), _))
        ));
        assert!(matches!(
            check_literal("x", &int, &json!(3.0)),
            Ok((Value::Int(3), _))
        ));
        assert_eq!(
            check_literal("x", &int, &json!(11)).unwrap_err()["type"],
            "value_bigger_than_max"
        );
        assert_eq!(
            check_literal("x", &int, &json!(-1)).unwrap_err()["type"],
            "value_smaller_than_min"
        );
        assert_eq!(
            check_literal("x", &int, &json!(2.5)).unwrap_err()["type"],
            "invalid_input_type"
        );
        assert_eq!(
            check_literal("x", &int, &json!("3")).unwrap_err()["type"],
            "invalid_input_type"
        );
        let seed = InputSpec::int().min(0).max(u64::MAX);
        match check_literal("s", &seed, &json!(u64::MAX)) {
            Ok((Value::Int(i), canon)) => {
                assert_eq!(i as u64, u64::MAX);
                assert_eq!(canon, json!(u64::MAX));
            }
            other => panic!("{other:?}"),
        }
        let plain = InputSpec::int();
        assert_eq!(
            check_literal("p", &plain, &json!(u64::MAX)).unwrap_err()["type"],
            "value_bigger_than_max"
        );
        assert_eq!(
            check_literal("p", &plain, &json!(1e300)).unwrap_err()["type"],
            "invalid_input_type"
        );
        let float = InputSpec::float().min(0.0).max(1.0);
        assert!(
            matches!(check_literal("f", &float, &json!(1)), Ok((Value::Float(f), _)) if f == 1.0)
        );
        assert_eq!(
            check_literal("f", &float, &json!(1.5)).unwrap_err()["type"],
            "value_bigger_than_max"
        );
        let combo = InputSpec::combo(["a", "b"]);
        assert!(check_literal("c", &combo, &json!("a")).is_ok());
        assert_eq!(
            check_literal("c", &combo, &json!("z")).unwrap_err()["type"],
            "value_not_in_list"
        );
        assert_eq!(
            check_literal("m", &InputSpec::new("MODEL"), &json!(1)).unwrap_err()["type"],
            "invalid_input_type"
        );
        assert!(matches!(
            check_literal("a", &InputSpec::new("*"), &json!([1])),
            Ok((Value::Json(_), _))
        ));
        assert!(matches!(
            check_literal("u", &InputSpec::new("INT,FLOAT"), &json!(2.5)),
            Ok((Value::Float(_), _))
        ));
        assert_eq!(
            check_literal("b", &InputSpec::boolean(), &json!(1)).unwrap_err()["type"],
            "invalid_input_type"
        );
    }
}
