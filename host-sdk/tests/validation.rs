//! Validation before anything runs: every error kind, with ComfyUI's type and the node id.

mod common;

use common::*;
use odelt_host::{CancelToken, RunError, RunOptions, ValidationFailure};
use serde_json::{json, Value};

fn failure(p: Value) -> (ValidationFailure, Recorder) {
    let exec = executor();
    let rec = Recorder::default();
    match exec.run(
        &prompt(p),
        &RunOptions::default(),
        &rec,
        &CancelToken::new(),
    ) {
        Err(RunError::Validation(v)) => (v, rec),
        other => panic!("expected a validation failure, got {other:?}"),
    }
}

/// The prompt fails with `prompt_outputs_failed_validation` and node `id` has error `ty`.
fn node_error(p: Value, id: &str, ty: &str) -> Value {
    let (v, rec) = failure(p);
    assert_eq!(
        v.error_type(),
        "prompt_outputs_failed_validation",
        "{}",
        v.to_json()
    );
    assert!(
        v.node_error_types(id).contains(&ty.to_string()),
        "expected {ty} on node {id}: {}",
        v.to_json()
    );
    assert!(
        rec.events().is_empty(),
        "nothing may run or be announced when validation fails"
    );
    let entry = v.node_errors[id].clone();
    assert!(entry["class_type"].is_string());
    assert!(entry["dependent_outputs"].is_array());
    let err = entry["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == ty)
        .unwrap()
        .clone();
    for f in ["message", "details", "extra_info"] {
        assert!(err.get(f).is_some(), "error lacks {f}: {err}");
    }
    err
}

fn show(src: &str) -> Value {
    json!({"class_type": "ShowNumber", "inputs": {"value": [src, 0]}})
}

#[test]
fn unknown_class_type() {
    let (v, _) = failure(
        json!({"1": {"class_type": "NoSuchNode", "inputs": {}, "_meta": {"title": "Mine"}}, "2": show("1")}),
    );
    assert_eq!(v.error_type(), "missing_node_type");
    assert_eq!(v.error["extra_info"]["node_id"], "1");
    assert_eq!(v.error["extra_info"]["class_type"], "NoSuchNode");
    assert_eq!(v.error["extra_info"]["node_title"], "Mine");
}

#[test]
fn no_output_node() {
    let (v, _) = failure(json!({"1": {"class_type": "IntConstant", "inputs": {"value": 1}}}));
    assert_eq!(v.error_type(), "prompt_no_outputs");
}

#[test]
fn missing_required_input() {
    let e = node_error(
        json!({"1": {"class_type": "Add", "inputs": {"a": 1}}, "2": show("1")}),
        "1",
        "required_input_missing",
    );
    assert_eq!(e["extra_info"]["input_name"], "b");
}

#[test]
fn link_to_missing_node() {
    let e = node_error(
        json!({"1": {"class_type": "Add", "inputs": {"a": ["99", 0], "b": 1}}, "2": show("1")}),
        "1",
        "bad_linked_input",
    );
    assert_eq!(e["extra_info"]["input_name"], "a");
    assert!(e["message"].as_str().unwrap().contains("99"));
}

#[test]
fn link_to_missing_output() {
    node_error(
        json!({"1": {"class_type": "IntConstant", "inputs": {"value": 1}},
               "2": {"class_type": "Add", "inputs": {"a": ["1", 3], "b": 1}}, "3": show("2")}),
        "2",
        "bad_linked_input",
    );
}

#[test]
fn malformed_link() {
    node_error(
        json!({"1": {"class_type": "Add", "inputs": {"a": [1, 2, 3], "b": 1}}, "2": show("1")}),
        "1",
        "bad_linked_input",
    );
    node_error(
        json!({"1": {"class_type": "Add", "inputs": {"a": ["x", -1], "b": 1}}, "2": show("1")}),
        "1",
        "bad_linked_input",
    );
}

#[test]
fn linked_type_mismatch() {
    let e = node_error(
        json!({"1": {"class_type": "FloatConstant", "inputs": {"value": 1.5}},
               "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}}, "3": show("2")}),
        "2",
        "return_type_mismatch",
    );
    assert_eq!(e["extra_info"]["received_type"], "FLOAT");
}

#[test]
fn value_below_min_above_max_and_not_in_list() {
    let bounded = |count: Value, ratio: Value, mode: Value| json!({"1": {"class_type": "Bounded", "inputs": {"count": count, "ratio": ratio, "mode": mode, "flag": true}}, "2": show("1")});
    let e = node_error(
        bounded(json!(-1), json!(0.5), json!("add")),
        "1",
        "value_smaller_than_min",
    );
    assert_eq!(e["extra_info"]["input_name"], "count");
    let e = node_error(
        bounded(json!(11), json!(0.5), json!("add")),
        "1",
        "value_bigger_than_max",
    );
    assert_eq!(e["extra_info"]["received_value"], 11);
    node_error(
        bounded(json!(1), json!(1.01), json!("add")),
        "1",
        "value_bigger_than_max",
    );
    let e = node_error(
        bounded(json!(1), json!(0.5), json!("pow")),
        "1",
        "value_not_in_list",
    );
    assert!(e["details"].as_str().unwrap().contains("pow"));
}

#[test]
fn wrong_literal_type() {
    node_error(
        json!({"1": {"class_type": "Add", "inputs": {"a": "one", "b": 1}}, "2": show("1")}),
        "1",
        "invalid_input_type",
    );
    node_error(
        json!({"1": {"class_type": "Add", "inputs": {"a": 1.5, "b": 1}}, "2": show("1")}),
        "1",
        "invalid_input_type",
    );
    node_error(
        json!({"1": {"class_type": "Add", "inputs": {"a": {"x": 1}, "b": 1}}, "2": show("1")}),
        "1",
        "invalid_input_type",
    );
    node_error(
        json!({"1": {"class_type": "Bounded", "inputs": {"count": 1, "ratio": 0.5, "mode": "add", "flag": "yes"}}, "2": show("1")}),
        "1",
        "invalid_input_type",
    );
    // A non-widget input given a literal instead of a link.
    node_error(
        json!({"1": {"class_type": "CounterValue", "inputs": {"counter": 5}}, "2": show("1")}),
        "1",
        "invalid_input_type",
    );
}

#[test]
fn cycles_and_self_links() {
    let (v, _) = failure(json!({
        "1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
        "3": show("2")
    }));
    assert!(
        v.node_error_types("1").contains(&"dependency_cycle".into()),
        "{}",
        v.to_json()
    );
    assert!(v.node_error_types("2").contains(&"dependency_cycle".into()));
    assert!(
        v.node_error_types("3").is_empty(),
        "the output downstream of the cycle is not itself in it"
    );
    node_error(
        json!({"1": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}}, "2": show("1")}),
        "1",
        "dependency_cycle",
    );
    // Validate hooks never see a node on or after a cycle: describing its links would expand the cycle up to
    // the depth and budget limits (slow, and pointless: the node fails anyway).
    let (v, _) = failure(json!({
        "1": {"class_type": "EvenOnly", "inputs": {"value": ["2", 0]}},
        "2": {"class_type": "EvenOnly", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "ValidateEcho", "inputs": {"value": ["1", 0]}}
    }));
    let text = v.to_json().to_string();
    assert!(
        v.node_error_types("1").contains(&"dependency_cycle".into()),
        "{text}"
    );
    assert!(
        !text.contains("custom_validation_failed"),
        "a hook saw a cyclic graph: {text}"
    );
}

#[test]
fn plugin_validation_hook() {
    let e = node_error(
        json!({"1": {"class_type": "EvenOnly", "inputs": {"value": 3}}, "2": show("1")}),
        "1",
        "custom_validation_failed",
    );
    assert_eq!(e["extra_info"]["input_name"], "value");
    assert!(e["details"].as_str().unwrap().contains("3 is odd"));
    // Even values pass.
    let exec = executor();
    let p =
        prompt(json!({"1": {"class_type": "EvenOnly", "inputs": {"value": 4}}, "2": show("1")}));
    let out = exec
        .run(
            &p,
            &RunOptions::default(),
            &Recorder::default(),
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(out.output("2").unwrap().ui_text(), ["4"]);
}

#[test]
fn dependent_outputs_and_partial_execution() {
    let p = json!({
        "1": {"class_type": "Add", "inputs": {"a": 1}},
        "2": show("1"),
        "3": {"class_type": "IntConstant", "inputs": {"value": 7}},
        "4": show("3")
    });
    let (v, _) = failure(p.clone());
    assert_eq!(v.node_errors["1"]["dependent_outputs"], json!(["2"]));
    // ComfyUI behaviour on request: the valid output runs, the invalid one is reported.
    let exec = executor();
    let opts = RunOptions {
        partial: true,
        ..Default::default()
    };
    let out = exec
        .run(
            &prompt(p.clone()),
            &opts,
            &Recorder::default(),
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(out.output("4").unwrap().ui_text(), ["7"]);
    assert!(out.output("2").is_none());
    assert!(out.node_errors.contains_key("1"));
    // Restricting outputs to the valid one (partial_execution_targets) also works.
    let opts = RunOptions {
        targets: Some(vec!["4".into()]),
        ..Default::default()
    };
    assert!(exec
        .run(&prompt(p), &opts, &Recorder::default(), &CancelToken::new())
        .is_ok());
}

#[test]
fn unreached_nodes_are_not_validated_or_run() {
    let exec = executor();
    let rec = Recorder::default();
    let p = prompt(json!({
        "1": {"class_type": "Panic", "inputs": {}},
        "2": {"class_type": "IntConstant", "inputs": {"value": 1}},
        "3": show("2")
    }));
    exec.run(&p, &RunOptions::default(), &rec, &CancelToken::new())
        .unwrap();
    assert_eq!(rec.executing(), ["2", "3"]);
}

#[test]
fn seeds_up_to_u64_max_where_declared() {
    let exec = executor();
    let p = |seed: Value| {
        prompt(
            json!({"1": {"class_type": "Bounded", "inputs": {"count": 0, "ratio": 0.5, "mode": "add", "flag": false, "seed": seed}}, "2": show("1")}),
        )
    };
    let out = exec
        .run(
            &p(json!(u64::MAX)),
            &RunOptions::default(),
            &Recorder::default(),
            &CancelToken::new(),
        )
        .unwrap();
    // u64::MAX arrives bit-cast as -1; the node adds it to count 0.
    assert_eq!(out.output("2").unwrap().ui_text(), ["-1"]);
    match exec.run(
        &p(json!(-5)),
        &RunOptions::default(),
        &Recorder::default(),
        &CancelToken::new(),
    ) {
        Err(RunError::Validation(v)) => assert!(v
            .node_error_types("1")
            .contains(&"value_smaller_than_min".into())),
        other => panic!("{other:?}"),
    }
    // An INT without a declared max is i64.
    match exec.run(
        &prompt(json!({"1": {"class_type": "IntConstant", "inputs": {"value": u64::MAX}}, "2": show("1")})),
        &RunOptions::default(),
        &Recorder::default(),
        &CancelToken::new(),
    ) {
        Err(RunError::Validation(v)) => assert!(v.node_error_types("1").contains(&"value_bigger_than_max".into())),
        other => panic!("{other:?}"),
    }
}

#[test]
fn validate_hooks_see_linked_inputs_with_their_upstream_nodes() {
    // EvenOnly refuses an odd IntConstant feeding it through a link.
    let e = node_error(
        json!({"1": {"class_type": "IntConstant", "inputs": {"value": 5}},
               "2": {"class_type": "EvenOnly", "inputs": {"value": ["1", 0]}}, "3": show("2")}),
        "2",
        "custom_validation_failed",
    );
    assert!(
        e["details"]
            .as_str()
            .unwrap()
            .contains("5 is odd (from IntConstant)"),
        "{e}"
    );

    // The exact structure, through ValidateEcho (which echoes what its hook received).
    let (v, _) = failure(json!({
        "1": {"class_type": "IntConstant", "inputs": {"value": 3.0}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 4}},
        "3": {"class_type": "ValidateEcho", "inputs": {"value": ["2", 0], "number": 7}}
    }));
    let details = v.node_errors["3"]["errors"][0]["details"].as_str().unwrap();
    let seen: Value = serde_json::from_str(details).unwrap();
    assert_eq!(seen["number"], 7);
    assert_eq!(
        seen["value"],
        json!({"$link": ["2", 0], "class_type": "Add", "output_type": "INT", "inputs": {
            "a": {"$link": ["1", 0], "class_type": "IntConstant", "output_type": "INT", "inputs": {"value": 3}},
            "b": 4}})
    );
}

#[test]
fn validate_hook_link_context_is_depth_limited() {
    let mut m = serde_json::Map::new();
    m.insert(
        "0".into(),
        json!({"class_type": "IntConstant", "inputs": {"value": 1}}),
    );
    for i in 1..40 {
        m.insert(
            i.to_string(),
            json!({"class_type": "Add", "inputs": {"a": [(i - 1).to_string(), 0], "b": 1}}),
        );
    }
    m.insert(
        "echo".into(),
        json!({"class_type": "ValidateEcho", "inputs": {"value": ["39", 0]}}),
    );
    let (v, _) = failure(Value::Object(m));
    let seen: Value = serde_json::from_str(
        v.node_errors["echo"]["errors"][0]["details"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let mut cur = &seen["value"];
    let mut depth = 0;
    while cur.get("inputs").is_some() {
        cur = &cur["inputs"]["a"];
        depth += 1;
    }
    assert_eq!(depth, odelt_host::validate::LINK_CONTEXT_DEPTH);
    assert_eq!(cur["truncated"], true);
}
