//! The batch API: a workflow built in code, run for many seeds.

mod common;

use common::*;
use odelt_host::{
    Batch, BatchItem, BatchRunError, CancelToken, Event, EventKind, RunError, RunOptions, Workflow,
};
use serde_json::json;
use std::sync::Mutex;

fn workflow() -> (Workflow, String) {
    let mut wf = Workflow::new();
    let seed = wf.add("IntConstant", &[("value", json!(0))]);
    let slow = wf.add("SlowCount", &[("steps", json!(3)), ("step_ms", json!(1))]);
    let sum = wf.add(
        "Add",
        &[
            ("a", Workflow::link_value(&seed, 0)),
            ("b", Workflow::link_value(&slow, 0)),
        ],
    );
    wf.add("ShowNumber", &[("value", Workflow::link_value(&sum, 0))]);
    (wf, seed)
}

#[test]
fn runs_many_seeds_reusing_unchanged_nodes() {
    let exec = executor();
    let (wf, seed) = workflow();
    let batch = Batch::seeds(&format!("{seed}.value"), [5, 6, 7]).unwrap();
    let progress = Mutex::new(Vec::new());
    let sink = |e: &Event| {
        if let EventKind::Progress { value, .. } = e.kind {
            progress
                .lock()
                .unwrap()
                .push((e.prompt_id.to_string(), value));
        }
    };
    let opts = RunOptions {
        prompt_id: Some("b".into()),
        ..Default::default()
    };
    let results = batch.run(&exec, &wf, &opts, &sink, &CancelToken::new());
    assert_eq!(results.len(), 3);
    let shown: Vec<String> = results
        .iter()
        .map(|r| r.outcome.as_ref().unwrap().output("4").unwrap().ui_text()[0].clone())
        .collect();
    assert_eq!(shown, ["8", "9", "10"]);
    assert_eq!(results[1].label, "seed=6");
    assert_eq!(results[2].prompt_id, "b-2");
    // SlowCount ran once; later items got it from cache.
    assert!(results[1]
        .outcome
        .as_ref()
        .unwrap()
        .cached
        .contains(&"2".to_string()));
    let p = progress.lock().unwrap();
    assert_eq!(p.len(), 3);
    assert!(p.iter().all(|(id, _)| id == "b-0"));
}

#[test]
fn failures_are_per_item_and_can_stop_the_batch() {
    let exec = executor();
    let (wf, seed) = workflow();
    let mut batch = Batch::new();
    batch.push(BatchItem {
        label: "ok".into(),
        overrides: vec![(format!("{seed}.value"), json!(1))],
    });
    batch.push(BatchItem {
        label: "bad".into(),
        overrides: vec![(format!("{seed}.value"), json!("x"))],
    });
    batch.push(BatchItem {
        label: "missing".into(),
        overrides: vec![("99.value".into(), json!(1))],
    });
    batch.push(BatchItem {
        label: "ok2".into(),
        overrides: vec![(format!("{seed}.value"), json!(2))],
    });
    let r = batch.run(
        &exec,
        &wf,
        &RunOptions::default(),
        &odelt_host::NullSink,
        &CancelToken::new(),
    );
    assert_eq!(r.len(), 4);
    assert!(r[0].outcome.is_ok() && r[3].outcome.is_ok());
    assert!(matches!(
        r[1].outcome,
        Err(BatchRunError::Run(RunError::Validation(_)))
    ));
    assert!(matches!(r[2].outcome, Err(BatchRunError::Override(_))));
    batch.stop_on_error = true;
    let r = batch.run(
        &exec,
        &wf,
        &RunOptions::default(),
        &odelt_host::NullSink,
        &CancelToken::new(),
    );
    assert_eq!(r.len(), 2);
}

#[test]
fn loads_a_workflow_file_and_overrides() {
    let dir = temp_dir("wf");
    let path = dir.join("wf.json");
    std::fs::write(
        &path,
        json!({"prompt": {"1": {"class_type": "IntConstant", "inputs": {"value": 1}}, "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}},
               "extra_data": {"extra_pnginfo": {"workflow": {}}}})
        .to_string(),
    )
    .unwrap();
    let mut wf = Workflow::load(&path).unwrap();
    wf.apply_override("1.value=41").unwrap();
    let out = wf
        .run(
            &executor(),
            &RunOptions::default(),
            &odelt_host::NullSink,
            &CancelToken::new(),
        )
        .unwrap();
    assert_eq!(out.output("2").unwrap().ui_text(), ["41"]);
    assert!(Workflow::load(&dir.join("nope.json")).is_err());
}
