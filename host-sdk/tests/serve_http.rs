//! `odelt serve` over real HTTP and WebSocket connections: the prompt lifecycle, events,
//! history, /view, validation errors, interrupt, client-supplied ids, the queue.

mod serve_util;

use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use serve_util::*;

const T: Duration = Duration::from_secs(30);

fn types(msgs: &[Ws]) -> Vec<String> {
    msgs.iter().map(|m| m.ty().to_string()).collect()
}

fn pos(msgs: &[Ws], pred: impl Fn(&Ws) -> bool) -> usize {
    msgs.iter()
        .position(pred)
        .unwrap_or_else(|| panic!("message not found in {:?}", types(msgs)))
}

#[test]
fn full_prompt_lifecycle_events_history_and_view() {
    let srv = server("lifecycle");
    let mut ws = WsClient::connect(srv.addr, "client-a");
    let hello = ws.next(T).expect("status on connect");
    assert_eq!(hello.ty(), "status");
    assert_eq!(hello.data()["sid"], "client-a");
    assert_eq!(hello.data()["status"]["exec_info"]["queue_remaining"], 0);

    let id = uuid();
    let workflow = json!({"marker": "wf-123", "nodes": [], "links": []});
    let r = queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("life", 16, 3, 5), "client_id": "client-a", "prompt_id": id,
               "extra_data": {"extra_pnginfo": {"workflow": workflow}}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["prompt_id"], id.as_str());
    assert!(body["number"].is_number());
    assert_eq!(body["node_errors"], json!({}));

    let msgs = ws.until_done(&id, T);
    let t = types(&msgs);
    let start = pos(&msgs, |m| m.ty() == "execution_start");
    let cached = pos(&msgs, |m| m.ty() == "execution_cached");
    let success = pos(&msgs, |m| m.ty() == "execution_success");
    let end = msgs.len() - 1;
    assert!(start < cached && cached < success && success < end, "{t:?}");
    assert_eq!(msgs[start].data()["prompt_id"], id.as_str());
    // Every node ran, each announced by `executing` between start and success.
    let executing: Vec<String> = msgs
        .iter()
        .filter(|m| m.ty() == "executing" && !m.data()["node"].is_null())
        .map(|m| m.data()["node"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = executing.clone();
    sorted.sort();
    assert_eq!(sorted, ["1", "2", "3", "4"], "{t:?}");
    // Progress 1..3 of node 3, each followed by a PNG preview frame.
    let progress: Vec<u64> = msgs
        .iter()
        .filter(|m| m.ty() == "progress")
        .map(|m| {
            assert_eq!(m.data()["node"], "3");
            assert_eq!(m.data()["max"], 3);
            m.data()["value"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(progress, [1, 2, 3]);
    let previews: Vec<&Vec<u8>> = msgs
        .iter()
        .filter_map(|m| match m {
            Ws::Binary(b) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(previews.len(), 3);
    for p in previews {
        assert_eq!(&p[0..4], &[0, 0, 0, 1], "PREVIEW_IMAGE event type");
        assert_eq!(&p[4..8], &[0, 0, 0, 2], "PNG image type");
        assert_eq!(&p[8..16], b"\x89PNG\r\n\x1a\n");
    }
    // Newer servers' progress_state: node 3 ends finished at 3/3.
    let last_state = msgs
        .iter()
        .rev()
        .find(|m| m.ty() == "progress_state" && m.data()["nodes"]["3"]["state"] == "finished")
        .expect("progress_state for node 3");
    assert_eq!(last_state.data()["nodes"]["3"]["value"], 3);
    assert_eq!(last_state.data()["prompt_id"], id.as_str());
    let executed = &msgs[pos(&msgs, |m| m.ty() == "executed" && m.data()["node"] == "2")];
    let image = executed.data()["output"]["images"][0].clone();
    assert_eq!(image["type"], "output");
    let filename = image["filename"].as_str().unwrap().to_string();
    assert!(filename.starts_with("life_"), "{filename}");
    assert!(msgs.iter().any(|m| m.ty() == "executed"
        && m.data()["node"] == "4"
        && m.data()["output"]["text"][0] == "3"));

    // History is stored before the end is announced.
    let h = get(srv.addr, &format!("/history/{id}")).json();
    let entry = &h[&id];
    assert_eq!(entry["status"]["status_str"], "success");
    assert_eq!(entry["status"]["completed"], true);
    assert_eq!(entry["prompt"][1], id.as_str());
    assert_eq!(
        entry["prompt"][3]["extra_pnginfo"]["workflow"]["marker"],
        "wf-123"
    );
    assert_eq!(
        entry["outputs"]["2"]["images"][0]["filename"],
        filename.as_str()
    );
    let kinds: Vec<&str> = entry["status"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[0].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["execution_start", "execution_cached", "execution_success"]
    );
    assert_eq!(get(srv.addr, &format!("/api/history/{id}")).json(), h);

    // The PNG is served, with the prompt and the workflow embedded.
    let v = get(
        srv.addr,
        &format!("/view?filename={filename}&type=output&subfolder="),
    );
    assert_eq!(v.status, 200);
    assert_eq!(v.header("content-type"), Some("image/png"));
    let chunks = png_text_chunks(&v.body);
    let wf = chunks
        .iter()
        .find(|(k, _)| k == "workflow")
        .expect("workflow chunk");
    assert_eq!(
        serde_json::from_str::<Json>(&wf.1).unwrap()["marker"],
        "wf-123"
    );
    let pr = chunks
        .iter()
        .find(|(k, _)| k == "prompt")
        .expect("prompt chunk");
    assert_eq!(
        serde_json::from_str::<Json>(&pr.1).unwrap()["2"]["class_type"],
        "TestSaveImage"
    );
    assert_eq!(
        get(srv.addr, &format!("/api/view?filename={filename}")).body,
        v.body
    );

    // The same prompt again: everything is served from cache, the outputs are still reported.
    let id2 = uuid();
    let r = queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("life", 16, 3, 5), "client_id": "client-a", "prompt_id": id2}),
    );
    assert_eq!(r.status, 200);
    let msgs = ws.until_done(&id2, T);
    let cached = &msgs[pos(&msgs, |m| m.ty() == "execution_cached")];
    let mut nodes: Vec<String> = cached.data()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["1", "2", "3", "4"]);
    assert!(!msgs.iter().any(|m| m.ty() == "progress"));
    let e2 = wait_history(srv.addr, &id2, T);
    assert_eq!(
        e2["outputs"]["2"]["images"][0]["filename"],
        filename.as_str()
    );

    // A status with an empty queue follows the end.
    let after = ws.until(T, |m| m.ty() == "status");
    assert_eq!(
        after.last().unwrap().data()["status"]["exec_info"]["queue_remaining"],
        0
    );
    let all = get(srv.addr, "/history").json();
    assert_eq!(all.as_object().unwrap().len(), 2);
    let last = get(srv.addr, "/history?max_items=1").json();
    assert!(last.get(&id2).is_some() && last.as_object().unwrap().len() == 1);
}

#[test]
fn events_without_client_id_are_broadcast_and_other_clients_see_none() {
    let srv = server("broadcast");
    let mut a = WsClient::connect(srv.addr, "a");
    let mut b = WsClient::connect(srv.addr, "b");
    a.next(T).unwrap();
    b.next(T).unwrap();
    let id = uuid();
    let r = queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("bc", 4, 1, 0), "client_id": "a", "prompt_id": id}),
    );
    assert_eq!(r.status, 200);
    a.until_done(&id, T);
    // b only sees status broadcasts for a's prompt.
    while let Some(m) = b.next(Duration::from_millis(300)) {
        assert_eq!(m.ty(), "status", "client b got {m:?}");
    }
    let id = uuid();
    let r = queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("bc", 5, 1, 0), "prompt_id": id}),
    );
    assert_eq!(r.status, 200);
    b.until_done(&id, T);
    a.until_done(&id, T);
}

#[test]
fn validation_errors_are_400_with_node_errors_and_the_server_keeps_serving() {
    let srv = server("validation");
    let out_of_range = json!({"prompt": {
        "1": {"class_type": "Bounded", "inputs": {"count": 50, "ratio": 0.5, "mode": "add", "flag": false}},
        "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}}});
    let r = queue_prompt(srv.addr, out_of_range);
    assert_eq!(r.status, 400);
    let b = r.json();
    assert_eq!(b["error"]["type"], "prompt_outputs_failed_validation");
    assert_eq!(
        b["node_errors"]["1"]["errors"][0]["type"],
        "value_bigger_than_max"
    );
    assert_eq!(b["node_errors"]["1"]["class_type"], "Bounded");
    assert_eq!(b["node_errors"]["1"]["dependent_outputs"], json!(["2"]));

    let bad_combo = json!({"prompt": {
        "1": {"class_type": "Bounded", "inputs": {"count": 1, "ratio": 0.5, "mode": "nope", "flag": false}},
        "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}}});
    let b = queue_prompt(srv.addr, bad_combo).json();
    assert_eq!(
        b["node_errors"]["1"]["errors"][0]["type"],
        "value_not_in_list"
    );

    let custom = json!({"prompt": {
        "1": {"class_type": "EvenOnly", "inputs": {"value": 3}},
        "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}}});
    let b = queue_prompt(srv.addr, custom).json();
    assert_eq!(
        b["node_errors"]["1"]["errors"][0]["type"],
        "custom_validation_failed"
    );

    let unknown = json!({"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}});
    let r = queue_prompt(srv.addr, unknown);
    assert_eq!(r.status, 400);
    let b = r.json();
    assert_eq!(b["error"]["type"], "missing_node_type");
    assert_eq!(b["error"]["extra_info"]["class_type"], "NoSuchNode");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("NoSuchNode"));

    let no_outputs =
        json!({"prompt": {"1": {"class_type": "IntConstant", "inputs": {"value": 1}}}});
    assert_eq!(
        queue_prompt(srv.addr, no_outputs).json()["error"]["type"],
        "prompt_no_outputs"
    );
    assert_eq!(
        queue_prompt(srv.addr, json!({"x": 1})).json()["error"]["type"],
        "no_prompt"
    );
    let r = queue_prompt(srv.addr, json!({"prompt": [1, 2]}));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_prompt");
    let r = queue_prompt(srv.addr, json!({"prompt": {"1": {"inputs": {}}}}));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["details"]
        .as_str()
        .unwrap()
        .contains("class_type"));

    for broken in ["{", "[1,", "\"str\"", "{\"prompt\": }", "\u{0}"] {
        let r = request(srv.addr, "POST", "/prompt", &[], broken.as_bytes());
        assert_eq!(r.status, 400, "{broken:?}");
        assert_eq!(r.json()["error"]["type"], "invalid_json", "{broken:?}");
    }
    let r = request(srv.addr, "POST", "/api/queue", &[], b"{nope");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("JSON"));
    let r = post_json(srv.addr, "/queue", &json!({"delete": "x"}));
    assert_eq!(r.status, 400);
    let r = post_json(srv.addr, "/history", &json!({"clear": "yes"}));
    assert_eq!(r.status, 400);
    let r = get(srv.addr, "/history?max_items=lots");
    assert_eq!(r.status, 400);

    // Nothing was queued, and the server still runs prompts.
    assert_eq!(
        get(srv.addr, "/queue").json(),
        json!({"queue_running": [], "queue_pending": []})
    );
    let id = uuid();
    assert_eq!(
        queue_prompt(
            srv.addr,
            json!({"prompt": image_prompt("v", 4, 1, 0), "prompt_id": id})
        )
        .status,
        200
    );
    assert_eq!(
        wait_history(srv.addr, &id, T)["status"]["status_str"],
        "success"
    );
}

#[test]
fn client_supplied_prompt_ids_priorities_and_queue_edits() {
    let srv = server("ids");
    let mut ws = WsClient::connect(srv.addr, "ids");
    ws.next(T).unwrap();
    // Keep the worker busy so later prompts wait.
    let blocker = uuid();
    let r = queue_prompt(
        srv.addr,
        json!({"prompt": slow_prompt(1), "prompt_id": blocker, "client_id": "ids"}),
    );
    assert_eq!(r.status, 200);
    ws.until(T, |m| m.ty() == "progress");

    let (a, b, c) = (uuid(), uuid(), uuid());
    let ra = queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("a", 4, 1, 0), "prompt_id": a}),
    );
    assert_eq!(ra.json()["prompt_id"], a.as_str());
    let rb = queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("b", 4, 1, 0), "prompt_id": b, "front": true}),
    );
    assert!(rb.json()["number"].as_f64().unwrap() < 0.0);
    let rc = queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("c", 4, 1, 0), "prompt_id": c, "number": -100}),
    );
    assert_eq!(rc.json()["number"], -100);

    // Duplicates and malformed ids.
    let dup = queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("a", 4, 1, 0), "prompt_id": a}),
    );
    assert_eq!(dup.status, 409);
    assert!(dup.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("already exists"));
    let dup_running = queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("a", 4, 1, 0), "prompt_id": blocker}),
    );
    assert_eq!(dup_running.status, 409);
    for bad in [json!(a.to_uppercase()), json!("not-a-uuid"), json!(12)] {
        let r = queue_prompt(
            srv.addr,
            json!({"prompt": image_prompt("a", 4, 1, 0), "prompt_id": bad}),
        );
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"]["type"], "invalid_prompt_id");
    }

    let q = get(srv.addr, "/api/queue").json();
    assert_eq!(q["queue_running"][0][1], blocker.as_str());
    let pending: Vec<&str> = q["queue_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[1].as_str().unwrap())
        .collect();
    assert_eq!(pending, [c.as_str(), b.as_str(), a.as_str()]);
    assert_eq!(q["queue_pending"][0][4], json!(["2", "4"]));
    assert_eq!(
        get(srv.addr, "/prompt").json()["exec_info"]["queue_remaining"],
        4
    );

    assert_eq!(
        post_json(srv.addr, "/queue", &json!({"delete": [a]})).status,
        200
    );
    assert_eq!(
        get(srv.addr, "/queue").json()["queue_pending"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // A deleted id may be used again.
    assert_eq!(
        queue_prompt(
            srv.addr,
            json!({"prompt": image_prompt("a", 4, 1, 0), "prompt_id": a})
        )
        .status,
        200
    );
    assert_eq!(
        post_json(srv.addr, "/queue", &json!({"clear": true})).status,
        200
    );
    assert_eq!(get(srv.addr, "/queue").json()["queue_pending"], json!([]));
    assert_eq!(post_json(srv.addr, "/interrupt", &json!({})).status, 200);
    ws.until_done(&blocker, T);
    // After the blocker, a prompt with a supplied id runs under that id.
    let d = uuid();
    queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("d", 4, 1, 0), "prompt_id": d, "client_id": "ids"}),
    );
    let msgs = ws.until_done(&d, T);
    assert!(msgs
        .iter()
        .any(|m| m.ty() == "execution_start" && m.data()["prompt_id"] == d.as_str()));
    assert!(get(srv.addr, &format!("/history/{a}"))
        .json()
        .get(&a)
        .is_none());
    assert_eq!(get(srv.addr, "/history/unknown-id").json(), json!({}));
}

#[test]
fn interrupt_stops_the_running_prompt_only_when_it_is_named() {
    let srv = server("interrupt");
    let mut ws = WsClient::connect(srv.addr, "int");
    ws.next(T).unwrap();
    let id = uuid();
    let r = queue_prompt(
        srv.addr,
        json!({"prompt": slow_prompt(2), "prompt_id": id, "client_id": "int"}),
    );
    assert_eq!(r.status, 200);
    ws.until(T, |m| m.ty() == "progress");

    // A socket that connects meanwhile is told which node runs; other clients are not.
    let mut late = WsClient::connect(srv.addr, "int");
    assert_eq!(late.next(T).unwrap().ty(), "status");
    let running = late.next(T).unwrap();
    assert_eq!(running.ty(), "executing");
    assert_eq!(running.data()["node"], "1");
    assert_eq!(running.data()["prompt_id"], id.as_str());
    let mut other = WsClient::connect(srv.addr, "someone-else");
    assert_eq!(other.next(T).unwrap().ty(), "status");
    assert!(other
        .next(Duration::from_millis(200))
        .is_none_or(|m| m.ty() == "status"));

    // Naming another prompt does nothing: progress goes on.
    assert_eq!(
        post_json(srv.addr, "/interrupt", &json!({"prompt_id": uuid()})).status,
        200
    );
    let more = ws.until(T, |m| {
        m.ty() == "progress" && m.data()["value"].as_u64().unwrap() > 20
    });
    assert!(!more.iter().any(|m| m.ty() == "execution_interrupted"));

    let asked = Instant::now();
    assert_eq!(
        post_json(srv.addr, "/api/interrupt", &json!({"prompt_id": id})).status,
        200
    );
    let msgs = ws.until_done(&id, T);
    let stopped_in = asked.elapsed();
    assert!(stopped_in < Duration::from_secs(5), "took {stopped_in:?}");
    let int = &msgs[pos(&msgs, |m| m.ty() == "execution_interrupted")];
    assert_eq!(int.data()["prompt_id"], id.as_str());
    assert_eq!(int.data()["node_id"], "1");
    assert_eq!(int.data()["node_type"], "SlowCount");
    assert!(!msgs.iter().any(|m| m.ty() == "execution_success"));

    let e = wait_history(srv.addr, &id, T);
    assert_eq!(e["status"]["status_str"], "error");
    assert_eq!(e["status"]["completed"], false);
    assert!(e["status"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m[0] == "execution_interrupted"));

    // A body-less interrupt with nothing running is harmless; the next prompt runs.
    assert_eq!(
        request(srv.addr, "POST", "/interrupt", &[], b"").status,
        200
    );
    let next = uuid();
    queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("after", 4, 2, 1), "prompt_id": next, "client_id": "int"}),
    );
    let msgs = ws.until_done(&next, T);
    assert!(msgs.iter().any(|m| m.ty() == "execution_success"));
}

#[test]
fn node_failures_are_reported_as_execution_error() {
    let srv = server("nodeerror");
    let mut ws = WsClient::connect(srv.addr, "err");
    ws.next(T).unwrap();
    let id = uuid();
    let p = json!({"1": {"class_type": "Fail", "inputs": {"message": "bad thing"}},
                   "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}});
    queue_prompt(
        srv.addr,
        json!({"prompt": p, "prompt_id": id, "client_id": "err"}),
    );
    let msgs = ws.until_done(&id, T);
    let e = &msgs[pos(&msgs, |m| m.ty() == "execution_error")];
    assert_eq!(e.data()["node_id"], "1");
    assert_eq!(e.data()["node_type"], "Fail");
    assert!(e.data()["exception_message"]
        .as_str()
        .unwrap()
        .contains("bad thing"));
    let h = wait_history(srv.addr, &id, T);
    assert_eq!(h["status"]["status_str"], "error");
}

#[test]
fn a_full_queue_answers_503_and_recovers() {
    let srv = server_with("full", |c| c.max_queue = 2);
    let mut ws = WsClient::connect(srv.addr, "full");
    ws.next(T).unwrap();
    let blocker = uuid();
    queue_prompt(
        srv.addr,
        json!({"prompt": slow_prompt(3), "prompt_id": blocker, "client_id": "full"}),
    );
    ws.until(T, |m| m.ty() == "progress");
    for k in 0..2 {
        let r = queue_prompt(
            srv.addr,
            json!({"prompt": image_prompt(&format!("f{k}"), 4, 1, 0)}),
        );
        assert_eq!(r.status, 200);
    }
    let r = queue_prompt(srv.addr, json!({"prompt": image_prompt("f9", 4, 1, 0)}));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["type"], "queue_full");
    assert_eq!(get(srv.addr, "/queue").status, 200);
    post_json(srv.addr, "/queue", &json!({"clear": true}));
    post_json(srv.addr, "/interrupt", &json!({}));
    ws.until_done(&blocker, T);
    let r = queue_prompt(srv.addr, json!({"prompt": image_prompt("f9", 4, 1, 0)}));
    assert_eq!(r.status, 200);
}

#[test]
fn information_routes_answer_under_both_prefixes() {
    let srv = server("info");
    std::fs::create_dir_all(srv.models_dir().join("checkpoints/sub")).unwrap();
    std::fs::write(srv.models_dir().join("checkpoints/sub/m.safetensors"), b"x").unwrap();
    std::fs::write(srv.models_dir().join("checkpoints/a.ckpt"), b"x").unwrap();
    std::fs::create_dir_all(srv.models_dir().join("embeddings")).unwrap();
    std::fs::write(srv.models_dir().join("embeddings/emb.pt"), b"x").unwrap();
    for prefix in ["", "/api"] {
        let oi = get(srv.addr, &format!("{prefix}/object_info")).json();
        assert!(oi["SlowCount"]["input"]["required"]["steps"].is_array());
        assert_eq!(oi["TestSaveImage"]["output_node"], true);
        let one = get(srv.addr, &format!("{prefix}/object_info/GradientImage")).json();
        assert_eq!(one.as_object().unwrap().len(), 1);
        assert_eq!(one["GradientImage"]["output"][0], "IMAGE");
        assert_eq!(
            get(srv.addr, &format!("{prefix}/object_info/Nope")).json(),
            json!({})
        );
        let st = get(srv.addr, &format!("{prefix}/system_stats")).json();
        assert!(st["system"]["ram_total"].is_number());
        assert_eq!(st["devices"][0]["type"], "cpu");
        assert_eq!(
            get(srv.addr, &format!("{prefix}/models")).json(),
            json!(["checkpoints", "embeddings"])
        );
        assert_eq!(
            get(srv.addr, &format!("{prefix}/models/checkpoints")).json(),
            json!(["a.ckpt", "sub/m.safetensors"])
        );
        assert_eq!(get(srv.addr, &format!("{prefix}/models/nope")).status, 404);
        assert_eq!(
            get(srv.addr, &format!("{prefix}/embeddings")).json(),
            json!(["emb"])
        );
        assert_eq!(
            get(srv.addr, &format!("{prefix}/extensions")).json(),
            json!([])
        );
        assert_eq!(
            get(srv.addr, &format!("{prefix}/features")).json()["supports_preview_metadata"],
            true
        );
        assert_eq!(
            get(srv.addr, &format!("{prefix}/prompt")).json()["exec_info"]["queue_remaining"],
            0
        );
    }
    // Safetensors metadata.
    let header = br#"{"__metadata__":{"odelt.config":"{\"depth\":4}"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    st.extend_from_slice(&[0u8; 4]);
    std::fs::write(srv.models_dir().join("checkpoints/sub/m.safetensors"), &st).unwrap();
    let meta = get(
        srv.addr,
        "/api/view_metadata/checkpoints?filename=sub/m.safetensors",
    );
    assert_eq!(meta.status, 200, "{}", meta.text());
    assert_eq!(meta.json()["odelt.config"], "{\"depth\":4}");
    assert_eq!(
        get(srv.addr, "/view_metadata/checkpoints?filename=a.ckpt").status,
        400
    );
    assert_eq!(
        get(
            srv.addr,
            "/view_metadata/checkpoints?filename=../../x.safetensors"
        )
        .status,
        400
    );
    assert_eq!(
        get(
            srv.addr,
            "/view_metadata/checkpoints?filename=none.safetensors"
        )
        .status,
        404
    );
    std::fs::write(
        srv.models_dir().join("checkpoints/bad.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\xff",
    )
    .unwrap();
    assert_eq!(
        get(
            srv.addr,
            "/view_metadata/checkpoints?filename=bad.safetensors"
        )
        .status,
        400
    );
    let r = get(srv.addr, "/no/such/route");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found");
    let page = get(srv.addr, "/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(get(srv.addr, "/odelt/editor.js").status, 200);
    // POST /free is accepted and drops the output cache before the next prompt.
    let id = uuid();
    queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("free", 4, 1, 0), "prompt_id": id}),
    );
    wait_history(srv.addr, &id, T);
    assert!(srv.handle.executor().cache_len() > 0);
    assert_eq!(
        post_json(
            srv.addr,
            "/free",
            &json!({"unload_models": true, "free_memory": true})
        )
        .status,
        200
    );
    let end = Instant::now() + T;
    while srv.handle.executor().cache_len() > 0 {
        assert!(Instant::now() < end, "cache never freed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn origin_check_refuses_foreign_pages_on_loopback() {
    let srv = server("origin");
    let own = format!("http://{}", srv.addr);
    let r = request(srv.addr, "GET", "/queue", &[("Origin", &own)], b"");
    assert_eq!(r.status, 200);
    for bad in ["http://evil.example", "http://127.0.0.1:1", "null"] {
        let r = request(srv.addr, "POST", "/prompt", &[("Origin", bad)], b"{}");
        assert_eq!(r.status, 403, "{bad}");
        assert_eq!(r.json()["error"]["type"], "forbidden_origin");
    }
    let r = request(
        srv.addr,
        "GET",
        "/queue",
        &[("Sec-Fetch-Site", "cross-site")],
        b"",
    );
    assert_eq!(r.status, 403);
    assert_eq!(get(srv.addr, "/queue").status, 200);
}

#[test]
fn the_odelt_binary_serves_until_killed() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = temp_dir("cli");
    let mut child = Command::new(env!("CARGO_BIN_EXE_odelt"))
        .args(["serve", "--listen", "127.0.0.1:0", "--plugins"])
        .arg(test_plugin())
        .args([
            "--output-dir",
            "out",
            "--input-dir",
            "in",
            "--temp-dir",
            "tmp",
            "--models-dir",
            "models",
        ])
        .current_dir(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start odelt serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("startup line");
    let addr: std::net::SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let info = get(addr, "/api/object_info").json();
    let id = uuid();
    let r = queue_prompt(
        addr,
        json!({"prompt": image_prompt("cli", 4, 1, 0), "prompt_id": id}),
    );
    let done = r.status == 200 && wait_history(addr, &id, T)["status"]["status_str"] == "success";
    let _ = child.kill();
    let _ = child.wait();
    assert!(info["SlowCount"].is_object());
    assert!(done, "{}", r.text());
    assert!(
        dir.join("out").read_dir().unwrap().count() > 0,
        "no output written"
    );
    // An address in use is a clear error.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_odelt"))
        .args(["serve", "--listen", &taken_addr, "--plugins"])
        .arg(test_plugin())
        .current_dir(&dir)
        .output()
        .expect("run odelt serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {taken_addr}")),
        "{err}"
    );
}
