//! What passes between the host and a plugin's node: the input list built from a planned
//! node's literals and upstream results, and the returned values checked against the node's
//! descriptor.

use std::sync::Arc;

use abi_stable::std_types::{RString, RVec};
use odelt_contract::{types, NamedValue, NodeError, NodeOutput, Value};
use serde_json::Value as Json;

use crate::cache::CacheEntry;
use crate::validate::{PlanInput, PlanNode};

/// Builds the input list of a node from literals and upstream results (values are shared,
/// tensor bytes are never copied).
pub(crate) fn gather_inputs(
    node: &PlanNode,
    results: &[Option<Arc<CacheEntry>>],
) -> Vec<NamedValue> {
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
pub(crate) fn check_output(node: &PlanNode, out: NodeOutput) -> Result<CacheEntry, NodeError> {
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
    use abi_stable::std_types::ROption;
    use odelt_contract::NodeInfo;
    use serde_json::json;

    use super::*;

    fn node(info: NodeInfo, inputs: Vec<(&str, PlanInput)>) -> PlanNode {
        PlanNode {
            id: "7".into(),
            class_type: info.name.clone(),
            title: None,
            plugin: 0,
            info: Arc::new(info),
            inputs: inputs
                .into_iter()
                .map(|(n, i)| (n.to_string(), i))
                .collect(),
        }
    }

    fn entry(values: Vec<Value>) -> Option<Arc<CacheEntry>> {
        Some(Arc::new(CacheEntry {
            values: values.into_iter().collect(),
            ui: None,
        }))
    }

    fn link(node: usize, output: usize, to_float: bool) -> PlanInput {
        PlanInput::Link {
            node,
            output,
            to_float,
        }
    }

    #[test]
    fn inputs_come_from_literals_and_upstream_outputs() {
        let n = node(
            NodeInfo::new("N"),
            vec![
                (
                    "text",
                    PlanInput::Literal(Value::Str("hi".into()), json!("hi")),
                ),
                ("a", link(0, 1, false)),
                ("b", link(0, 0, true)),
                ("c", link(1, 0, false)),
                ("d", link(0, 5, false)),
            ],
        );
        let results = vec![entry(vec![Value::Int(3), Value::Bool(true)]), None];
        let got = gather_inputs(&n, &results);
        let names: Vec<&str> = got.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            ["text", "a", "b"],
            "missing results and slots are left out"
        );
        assert!(matches!(&got[0].value, Value::Str(s) if s.as_str() == "hi"));
        assert!(matches!(got[1].value, Value::Bool(true)));
        assert!(
            matches!(got[2].value, Value::Float(f) if f == 3.0),
            "INT to FLOAT"
        );
    }

    #[test]
    fn an_int_stays_an_int_without_conversion() {
        let n = node(NodeInfo::new("N"), vec![("a", link(0, 0, false))]);
        let got = gather_inputs(&n, &[entry(vec![Value::Int(3)])]);
        assert!(matches!(got[0].value, Value::Int(3)));
    }

    #[test]
    fn outputs_are_checked_against_the_descriptor() {
        let info = NodeInfo::new("N").output("INT", "n").output("STRING", "s");
        let n = node(info, vec![]);
        let out = |values: Vec<Value>, ui: Option<&str>| NodeOutput {
            values: values.into_iter().collect(),
            ui: match ui {
                Some(u) => ROption::RSome(RString::from(u)),
                None => ROption::RNone,
            },
        };
        let ok = check_output(
            &n,
            out(
                vec![Value::Int(1), Value::Str("x".into())],
                Some(r#"{"text": ["x"]}"#),
            ),
        )
        .unwrap();
        assert_eq!(ok.values.len(), 2);
        assert_eq!(ok.ui, Some(json!({"text": ["x"]})));

        let e = check_output(&n, out(vec![Value::Int(1)], None)).unwrap_err();
        assert!(e.message.contains("returned 1 values"), "{}", e.message);
        let e = check_output(&n, out(vec![Value::Int(1), Value::Int(2)], None)).unwrap_err();
        assert!(
            e.message.contains("output 1 of N is declared STRING"),
            "{}",
            e.message
        );
        let e = check_output(
            &n,
            out(
                vec![Value::Int(1), Value::Str("x".into())],
                Some("{not json"),
            ),
        )
        .unwrap_err();
        assert!(
            e.message.contains("UI payload is not JSON"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unknown_output_types_take_any_value() {
        let n = node(NodeInfo::new("N").output("MODEL", "m"), vec![]);
        let out = NodeOutput::new().with(Value::Int(1));
        assert!(check_output(&n, out).unwrap().ui.is_none());
    }
}
