//! Running workflows: results, panics, caching, cancellation, progress, handles, devices,
//! host information, output files.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use odelt_contract::{ErrorKind, Value};
use odelt_host::{CancelToken, Event, EventKind, NullSink, RunError, RunOptions};
use serde_json::{json, Value as Json};

fn run_ok(exec: &odelt_host::Executor, p: Json) -> (odelt_host::RunOutcome, Recorder) {
    let rec = Recorder::default();
    let out = exec
        .run(
            &prompt(p),
            &RunOptions::default(),
            &rec,
            &CancelToken::new(),
        )
        .expect("run succeeds");
    (out, rec)
}

fn arithmetic(a: i64, b: i64, m: f64) -> Json {
    json!({
        "1": {"class_type": "IntConstant", "inputs": {"value": a}},
        "2": {"class_type": "IntConstant", "inputs": {"value": b}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "7": {"class_type": "IntToFloat", "inputs": {"value": ["3", 0]}},
        "4": {"class_type": "Multiply", "inputs": {"a": ["7", 0], "b": m}},
        "5": {"class_type": "ShowNumber", "inputs": {"value": ["4", 0]}},
        "6": {"class_type": "ShowNumber", "inputs": {"value": ["3", 0]}}
    })
}

#[test]
fn arithmetic_results_events_and_dependency_order() {
    let exec = executor();
    let (out, rec) = run_ok(&exec, arithmetic(2, 3, 1.5));
    assert_eq!(out.output("5").unwrap().ui_text(), ["7.5"]);
    assert_eq!(out.output("6").unwrap().ui_text(), ["5"]);
    assert!(matches!(out.values("3"), Some([Value::Int(5)])));
    let kinds = rec.kinds();
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(kinds.get(1), Some(&"cached"));
    assert_eq!(kinds.last(), Some(&"success"));
    assert_eq!(kinds.iter().filter(|k| **k == "executed").count(), 2);
    // Dependency order: 3 after 1 and 2, 4 after 3.
    let order = rec.executing();
    let pos = |id: &str| order.iter().position(|x| x == id).unwrap();
    assert!(
        pos("3") > pos("1")
            && pos("3") > pos("2")
            && pos("7") > pos("3")
            && pos("4") > pos("7")
            && pos("5") > pos("4")
    );
    // ComfyUI messages for the executed events.
    let executed = rec
        .events()
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::Executed { .. }))
        .unwrap();
    let msg = &executed.to_comfy_messages()[0];
    assert_eq!(msg["type"], "executed");
    assert!(msg["data"]["output"]["text"].is_array());
    assert_eq!(msg["data"]["prompt_id"], out.prompt_id.as_str());
}

#[test]
fn panicking_node_becomes_a_node_error_and_the_next_workflow_runs() {
    let exec = executor();
    let rec = Recorder::default();
    let p = prompt(json!({
        "1": {"class_type": "Panic", "inputs": {"message": "deliberate test panic"}},
        "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}
    }));
    match exec.run(&p, &RunOptions::default(), &rec, &CancelToken::new()) {
        Err(RunError::Node {
            node_id,
            class_type,
            kind,
            message,
            ..
        }) => {
            assert_eq!(node_id, "1");
            assert_eq!(class_type, "Panic");
            assert_eq!(kind, ErrorKind::Panicked);
            assert!(message.contains("deliberate test panic"), "{message}");
        }
        other => panic!("expected a node error, got {other:?}"),
    }
    let err = rec.events().into_iter().find_map(|e| match e.kind {
        EventKind::ExecutionError {
            node_id,
            exception_type,
            ..
        } => Some((node_id, exception_type)),
        _ => None,
    });
    assert_eq!(err, Some(("1".to_string(), "Panic".to_string())));
    assert!(!rec.kinds().contains(&"success"));
    // The host is fine: the next workflow runs.
    let (out, _) = run_ok(&exec, arithmetic(1, 1, 2.0));
    assert_eq!(out.output("5").unwrap().ui_text(), ["4"]);
}

#[test]
fn failing_node_stops_the_run_and_is_not_cached() {
    let exec = executor();
    let p = json!({"1": {"class_type": "Fail", "inputs": {"message": "nope"}}, "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}});
    for _ in 0..2 {
        let rec = Recorder::default();
        match exec.run(
            &prompt(p.clone()),
            &RunOptions::default(),
            &rec,
            &CancelToken::new(),
        ) {
            Err(RunError::Node {
                node_id,
                kind,
                message,
                ..
            }) => {
                assert_eq!(
                    (node_id.as_str(), kind, message.as_str()),
                    ("1", ErrorKind::Failed, "nope")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            rec.executing(),
            ["1"],
            "the failing node runs again (errors are not cached)"
        );
    }
}

#[test]
fn caching_reruns_only_nodes_downstream_of_a_change() {
    let exec = executor();
    let (first, rec1) = run_ok(&exec, arithmetic(2, 3, 1.5));
    assert_eq!(rec1.executing().len(), 7);
    assert!(first.cached.is_empty());
    // Same prompt: everything cached, the output nodes' UI is re-sent.
    let (same, rec2) = run_ok(&exec, arithmetic(2, 3, 1.5));
    assert!(rec2.executing().is_empty());
    assert_eq!(same.cached.len(), 7);
    assert_eq!(rec2.kinds().iter().filter(|k| **k == "executed").count(), 2);
    assert_eq!(same.output("5").unwrap().ui_text(), ["7.5"]);
    assert!(same.output("5").unwrap().cached);
    // Change the multiplier literal: only 4 and its output 5 re-run.
    let (changed, rec3) = run_ok(&exec, arithmetic(2, 3, 2.0));
    let mut ran = rec3.executing();
    ran.sort();
    assert_eq!(ran, ["4", "5"]);
    assert_eq!(changed.output("5").unwrap().ui_text(), ["10"]);
    // Change an upstream constant: everything downstream of 1 re-runs, 2 does not.
    let (_, rec4) = run_ok(&exec, arithmetic(4, 3, 2.0));
    let mut ran = rec4.executing();
    ran.sort();
    assert_eq!(ran, ["1", "3", "4", "5", "6", "7"]);
    // free_cache empties it: everything runs again.
    assert!(exec.cache_len() > 0);
    exec.free_cache();
    assert_eq!(exec.cache_len(), 0);
    let (_, rec5) = run_ok(&exec, arithmetic(4, 3, 2.0));
    assert_eq!(rec5.executing().len(), 7);
}

#[test]
fn cached_upstream_is_not_needed_and_always_run_nodes_rerun() {
    let exec = executor();
    let p = json!({
        "1": {"class_type": "SlowCount", "inputs": {"steps": 2, "step_ms": 1}},
        "2": {"class_type": "ContextInfo", "inputs": {"after": ["1", 0]}},
        "3": {"class_type": "ShowText", "inputs": {"text": ["2", 0]}}
    });
    let (_, r1) = run_ok(&exec, p.clone());
    assert_eq!(r1.executing(), ["1", "2", "3"]);
    let (_, r2) = run_ok(&exec, p);
    assert_eq!(
        r2.executing(),
        ["2", "3"],
        "always_run node and its downstream re-run, cached SlowCount does not"
    );
}

#[test]
fn cancellation_stops_a_running_node_within_one_step() {
    let exec = executor();
    let step_ms = 50u64;
    let p = prompt(json!({
        "1": {"class_type": "SlowCount", "inputs": {"steps": 200, "step_ms": step_ms}},
        "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}
    }));
    let cancel = CancelToken::new();
    let rec = Arc::new(Recorder::default());
    let cancelled_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let sink = {
        let (rec, cancel, at) = (rec.clone(), cancel.clone(), cancelled_at.clone());
        move |e: &Event| {
            rec.0.lock().unwrap().push(e.clone());
            if let EventKind::Progress { value: 3, .. } = e.kind {
                *at.lock().unwrap() = Some(Instant::now());
                cancel.cancel();
            }
        }
    };
    let started = Instant::now();
    let result = exec.run(&p, &RunOptions::default(), &sink, &cancel);
    let stopped = Instant::now();
    match result {
        Err(RunError::Interrupted { node_id, .. }) => assert_eq!(node_id.as_deref(), Some("1")),
        other => panic!("expected interruption, got {other:?}"),
    }
    let at = cancelled_at
        .lock()
        .unwrap()
        .expect("cancelled during progress");
    let latency = stopped - at;
    assert!(
        latency < Duration::from_millis(step_ms * 2),
        "stopped {latency:?} after cancel (one step = {step_ms} ms)"
    );
    assert!(stopped - started < Duration::from_secs(2));
    let progress = rec
        .events()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Progress { .. }))
        .count();
    assert!(
        progress <= 4,
        "{progress} progress events after cancelling at step 3"
    );
    assert_eq!(rec.kinds().last(), Some(&"interrupted"));
    // The executor is usable afterwards with a fresh token.
    let (out, _) = run_ok(&exec, arithmetic(1, 2, 1.0));
    assert_eq!(out.output("6").unwrap().ui_text(), ["3"]);
}

#[test]
fn cancelled_before_start_runs_nothing() {
    let exec = executor();
    let cancel = CancelToken::new();
    cancel.cancel();
    let rec = Recorder::default();
    let r = exec.run(
        &prompt(arithmetic(1, 2, 3.0)),
        &RunOptions::default(),
        &rec,
        &cancel,
    );
    assert!(
        matches!(r, Err(RunError::Interrupted { node_id: None, .. })),
        "{r:?}"
    );
    assert!(rec.executing().is_empty());
}

#[test]
fn progress_events_carry_previews() {
    let exec = executor();
    let (_, rec) = run_ok(
        &exec,
        json!({"1": {"class_type": "SlowCount", "inputs": {"steps": 3, "step_ms": 0, "preview": true}},
               "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}}),
    );
    let progress: Vec<(u64, u64, bool)> = rec
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Progress {
                value,
                max,
                preview,
                node_id,
            } => {
                assert_eq!(node_id, "1");
                let p = preview.map(|p| p.encoded().is_ok() && p.width == 2);
                Some((value, max, p == Some(true)))
            }
            _ => None,
        })
        .collect();
    assert_eq!(progress, [(1, 3, true), (2, 3, true), (3, 3, true)]);
}

#[test]
fn handles_are_routed_cached_and_released_when_the_cache_is_freed() {
    let live = |exec: &odelt_host::Executor| -> i64 {
        let (out, _) = run_ok(
            exec,
            json!({"1": {"class_type": "LiveCounters", "inputs": {}}, "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}}),
        );
        out.output("2").unwrap().ui_text()[0].parse().unwrap()
    };
    let p = json!({
        "1": {"class_type": "MakeCounter", "inputs": {"start": 40}},
        "2": {"class_type": "CounterValue", "inputs": {"counter": ["1", 0], "add": 2}},
        "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}}
    });
    // Keep 10 runs: only free_cache releases the handle.
    let exec = executor_with(2, 10);
    let before = live(&exec);
    let (out, _) = run_ok(&exec, p.clone());
    assert_eq!(out.output("3").unwrap().ui_text(), ["42"]);
    match out.values("1") {
        Some([Value::Handle(h)]) => assert_eq!(h.type_name(), "COUNTER"),
        other => panic!("{other:?}"),
    }
    drop(out);
    let (again, rec) = run_ok(&exec, p.clone());
    assert!(
        rec.executing().is_empty(),
        "the handle was served from cache"
    );
    drop(again);
    assert_eq!(
        live(&exec),
        before + 1,
        "the cached handle keeps its plugin object alive"
    );
    assert_eq!(live(&exec), before + 1);
    exec.free_cache();
    assert_eq!(
        live(&exec),
        before,
        "freeing the cache dropped the object in the plugin"
    );

    // With the default policy (keep the last run), an unrelated run evicts it too.
    let exec = executor_with(2, 1);
    run_ok(&exec, p);
    assert_eq!(live(&exec), before + 1, "still cached during the next run");
    assert_eq!(
        live(&exec),
        before,
        "evicted after a run that did not use it"
    );
}

#[test]
fn device_bound_nodes_are_serialized_and_independent_branches_run_in_parallel() {
    let exec = executor_with(4, 0);
    let branches = |class: &str| {
        json!({
            "1": {"class_type": class, "inputs": {"ms": 150, "tag": 1}},
            "2": {"class_type": class, "inputs": {"ms": 150, "tag": 2}},
            "3": {"class_type": class, "inputs": {"ms": 150, "tag": 3}},
            "4": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}},
            "5": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}},
            "6": {"class_type": "ShowNumber", "inputs": {"value": ["3", 0]}}
        })
    };
    let peak = |out: &odelt_host::RunOutcome| {
        ["4", "5", "6"]
            .iter()
            .map(|id| out.output(id).unwrap().ui_text()[0].parse::<i64>().unwrap())
            .max()
            .unwrap()
    };
    let t = Instant::now();
    let (dev, _) = run_ok(&exec, branches("DeviceWork"));
    let dev_time = t.elapsed();
    assert_eq!(peak(&dev), 1, "device-bound nodes overlapped");
    assert!(dev_time >= Duration::from_millis(440), "{dev_time:?}");
    let t = Instant::now();
    let (cpu, _) = run_ok(&exec, branches("CpuWork"));
    let cpu_time = t.elapsed();
    assert!(peak(&cpu) >= 2, "independent CPU branches did not overlap");
    assert!(
        cpu_time < dev_time,
        "parallel {cpu_time:?} vs serialized {dev_time:?}"
    );
}

#[test]
fn context_carries_device_directories_prompt_and_workflow() {
    let exec = executor();
    let rec = Recorder::default();
    let p = json!({"7": {"class_type": "ContextInfo", "inputs": {}}, "8": {"class_type": "ShowText", "inputs": {"text": ["7", 0]}}});
    let opts = RunOptions {
        prompt_id: Some("my-prompt".into()),
        extra_pnginfo: Some(json!({"workflow": {"nodes": [1, 2]}})),
        ..Default::default()
    };
    let out = exec
        .run(&prompt(p), &opts, &rec, &CancelToken::new())
        .unwrap();
    let info: Json = serde_json::from_str(&out.output("8").unwrap().ui_text()[0]).unwrap();
    assert_eq!(info["node_id"], "7");
    assert_eq!(info["class_type"], "ContextInfo");
    assert_eq!(info["prompt_id"], "my-prompt");
    assert_eq!(info["device"], "cpu");
    assert_eq!(info["has_prompt"], true);
    assert_eq!(info["workflow"], json!("{\"nodes\":[1,2]}"));
    assert_eq!(
        info["output_dir"],
        exec.config().output_dir.to_string_lossy().as_ref()
    );
    assert_eq!(
        info["models_dir"],
        exec.config().models_dir.to_string_lossy().as_ref()
    );
    assert!(rec.events().iter().all(|e| &*e.prompt_id == "my-prompt"));
}

#[test]
fn save_image_writes_png_with_prompt_and_workflow_chunks() {
    let exec = executor();
    let p = json!({
        "1": {"class_type": "GradientImage", "inputs": {"width": 6, "height": 4, "batch": 2}},
        "2": {"class_type": "InvertImage", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "TestSaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t\u{e9}st"}, "_meta": {"title": "Save \u{2713}"}}
    });
    let opts = RunOptions {
        extra_pnginfo: Some(json!({"workflow": {"last_node_id": 3}})),
        ..Default::default()
    };
    let rec = Recorder::default();
    let out = exec
        .run(&prompt(p), &opts, &rec, &CancelToken::new())
        .unwrap();
    let ui = out.output("3").unwrap().ui().unwrap().clone();
    let images = ui["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0]["type"], "output");
    let file = exec
        .config()
        .output_dir
        .join(images[0]["filename"].as_str().unwrap());
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&file).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    assert_eq!((frame.width, frame.height), (6, 4));
    let texts: Vec<(String, String)> = reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    let prompt_text = &texts
        .iter()
        .find(|(k, _)| k == "prompt")
        .expect("prompt chunk")
        .1;
    let embedded: Json = serde_json::from_str(prompt_text).unwrap();
    assert_eq!(embedded["3"]["class_type"], "TestSaveImage");
    assert_eq!(embedded["3"]["_meta"]["title"], "Save \u{2713}");
    let wf = &texts
        .iter()
        .find(|(k, _)| k == "workflow")
        .expect("workflow chunk")
        .1;
    assert_eq!(
        serde_json::from_str::<Json>(wf).unwrap(),
        json!({"last_node_id": 3})
    );
    // The executed event carries the UI payload.
    assert!(rec.events().iter().any(|e| matches!(&e.kind, EventKind::Executed { node_id, output, .. } if node_id == "3" && output == &ui)));
}

#[test]
fn tensors_cross_the_host_without_copies() {
    let exec = executor();
    let (out, _) = run_ok(
        &exec,
        json!({
            "1": {"class_type": "GradientImage", "inputs": {"width": 64, "height": 64}},
            "2": {"class_type": "TensorAddress", "inputs": {"image": ["1", 0]}},
            "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}},
            "4": {"class_type": "ShowNumber", "inputs": {"value": ["1", 1]}}
        }),
    );
    let made = &out.output("4").unwrap().ui_text()[0];
    let seen = &out.output("3").unwrap().ui_text()[0];
    assert_eq!(
        made, seen,
        "the consumer saw the producer's buffer: the host did not copy the bytes"
    );
}

#[test]
fn executor_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<odelt_host::Executor>();
    let exec = Arc::new(executor());
    let ok = Arc::new(AtomicBool::new(true));
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let (exec, ok) = (exec.clone(), ok.clone());
            std::thread::spawn(move || {
                for i in 0..5 {
                    let r = exec.run(
                        &prompt(arithmetic(k, i, 1.0)),
                        &RunOptions::default(),
                        &NullSink,
                        &CancelToken::new(),
                    );
                    let expect = (k + i).to_string();
                    if r.map(|o| o.output("6").unwrap().ui_text()[0] != expect)
                        .unwrap_or(true)
                    {
                        ok.store(false, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert!(ok.load(Ordering::SeqCst));
}
