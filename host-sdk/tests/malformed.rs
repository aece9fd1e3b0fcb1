//! Malformed input never crashes the host.

mod common;

use common::*;
use odelt_host::{CancelToken, Prompt, PromptError, RunError, RunOptions, Workflow};
use serde_json::{json, Value};

fn validation_types(p: Value) -> Vec<String> {
    let exec = executor();
    match exec.run(
        &prompt(p),
        &RunOptions::default(),
        &Recorder::default(),
        &CancelToken::new(),
    ) {
        Err(RunError::Validation(v)) => {
            let mut t = vec![v.error_type().to_string()];
            for id in v.node_errors.keys() {
                t.extend(v.node_error_types(id));
            }
            t
        }
        other => panic!("expected a validation failure, got {other:?}"),
    }
}

#[test]
fn broken_json_is_an_error() {
    for text in [
        "",
        "{",
        "{\"1\": ",
        "[1, 2",
        "nul",
        "{\"1\": {\"class_type\": \"Add\",}}",
        "\u{0}",
    ] {
        assert!(
            matches!(Prompt::from_json_str(text), Err(PromptError::Json(_))),
            "{text:?}"
        );
        assert!(Workflow::from_json_str(text).is_err());
    }
}

#[test]
fn deep_nesting_hits_the_recursion_limit_not_the_stack() {
    let arrays = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        Prompt::from_json_str(&arrays),
        Err(PromptError::Json(_))
    ));
    let objects = "{\"a\":".repeat(100_000);
    assert!(matches!(
        Prompt::from_json_str(&objects),
        Err(PromptError::Json(_))
    ));
    let in_input = format!(
        "{{\"1\": {{\"class_type\": \"IntConstant\", \"inputs\": {{\"value\": {}1{}}}}}}}",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    assert!(matches!(
        Prompt::from_json_str(&in_input),
        Err(PromptError::Json(_))
    ));
    // Moderate nesting that parses is a wrong literal type, not a crash.
    let nested: Value = serde_json::from_str(&format!("{}1{}", "{\"__value__\":", "}")).unwrap();
    let t = validation_types(
        json!({"1": {"class_type": "Add", "inputs": {"a": [[[[[[1]]]]]], "b": nested}}, "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}}),
    );
    assert!(t.contains(&"bad_linked_input".to_string()), "{t:?}");
}

#[test]
fn huge_numbers() {
    // Out of f64 range: a JSON error.
    assert!(Prompt::from_json_str(
        r#"{"1": {"class_type": "IntConstant", "inputs": {"value": 1e400}}}"#
    )
    .is_err());
    // Beyond u64 / i64: range errors, not panics.
    let show = json!({"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}});
    for v in [
        json!(1e300),
        json!(-1e300),
        json!(18446744073709551615u64),
        json!(-9223372036854775808i64 as f64 * 4.0),
    ] {
        let t = validation_types(
            json!({"1": {"class_type": "IntConstant", "inputs": {"value": v}}, "2": show}),
        );
        assert!(
            t.iter().any(|x| x == "value_bigger_than_max"
                || x == "value_smaller_than_min"
                || x == "invalid_input_type"),
            "{v}: {t:?}"
        );
    }
    let big = "9".repeat(400);
    let text = format!(
        r#"{{"1": {{"class_type": "IntConstant", "inputs": {{"value": {big}}}}}, "2": {{"class_type": "ShowNumber", "inputs": {{"value": ["1", 0]}}}}}}"#
    );
    match Prompt::from_json_str(&text) {
        Err(_) => {}
        Ok(p) => {
            let exec = executor();
            assert!(matches!(
                exec.run(
                    &p,
                    &RunOptions::default(),
                    &Recorder::default(),
                    &CancelToken::new()
                ),
                Err(RunError::Validation(_))
            ));
        }
    }
    // Huge link indices.
    let t = validation_types(
        json!({"1": {"class_type": "IntConstant", "inputs": {"value": 1}}, "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 18446744073709551615u64]}}}),
    );
    assert!(t.contains(&"bad_linked_input".to_string()), "{t:?}");
}

#[test]
fn wrong_structure_types() {
    for p in [json!([]), json!(5), json!("x"), json!(null)] {
        assert!(matches!(
            Prompt::from_json(p),
            Err(PromptError::NotAnObject(_))
        ));
    }
    assert!(Prompt::from_json(json!({"1": []})).is_err());
    assert!(Prompt::from_json(json!({"1": {"class_type": 5}})).is_err());
    assert!(Prompt::from_json(json!({"1": {"class_type": "Add", "inputs": "a=1"}})).is_err());
    // Wrong literal types in every widget.
    let t = validation_types(json!({
        "1": {"class_type": "Bounded", "inputs": {"count": true, "ratio": "half", "mode": 3, "flag": null, "label": 7}},
        "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}
    }));
    assert_eq!(
        t.iter().filter(|x| *x == "invalid_input_type").count(),
        4,
        "{t:?}"
    );
    assert!(t.contains(&"value_not_in_list".to_string()));
}

#[test]
fn links_to_missing_nodes_and_self_links() {
    let t =
        validation_types(json!({"2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}}));
    assert!(t.contains(&"bad_linked_input".to_string()), "{t:?}");
    let t =
        validation_types(json!({"2": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}}}));
    assert!(
        t.contains(&"dependency_cycle".to_string()) || t.contains(&"bad_linked_input".to_string()),
        "{t:?}"
    );
    let t = validation_types(
        json!({"1": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}}, "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}}),
    );
    assert!(t.contains(&"dependency_cycle".to_string()), "{t:?}");
}

#[test]
fn very_long_chains_do_not_overflow_the_stack() {
    let n = 20_000;
    let mut m = serde_json::Map::new();
    m.insert(
        "0".into(),
        json!({"class_type": "IntConstant", "inputs": {"value": 1}}),
    );
    for i in 1..n {
        m.insert(
            i.to_string(),
            json!({"class_type": "Add", "inputs": {"a": [(i - 1).to_string(), 0], "b": 1}}),
        );
    }
    m.insert(
        "out".into(),
        json!({"class_type": "ShowNumber", "inputs": {"value": [(n - 1).to_string(), 0]}}),
    );
    let exec = executor_with(2, 0);
    let out = exec
        .run(
            &Prompt::from_json(serde_json::Value::Object(m.clone())).unwrap(),
            &RunOptions::default(),
            &odelt_host::NullSink,
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(out.output("out").unwrap().ui_text(), [n.to_string()]);
    // A long cycle is reported, not recursed into.
    m.insert(
        "0".into(),
        json!({"class_type": "Add", "inputs": {"a": [(n - 1).to_string(), 0], "b": 1}}),
    );
    match exec.run(
        &Prompt::from_json(serde_json::Value::Object(m)).unwrap(),
        &RunOptions::default(),
        &odelt_host::NullSink,
        &CancelToken::new(),
    ) {
        Err(RunError::Validation(v)) => assert_eq!(v.node_errors.len(), n),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_inputs_and_empty_strings_are_harmless() {
    let exec = executor();
    let p = prompt(json!({
        "": {"class_type": "IntConstant", "inputs": {"value": 2, "unknown": [1, 2, 3], "": null}},
        "x": {"class_type": "ShowNumber", "inputs": {"value": ["", 0]}}
    }));
    let out = exec
        .run(
            &p,
            &RunOptions::default(),
            &Recorder::default(),
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(out.output("x").unwrap().ui_text(), ["2"]);
}
