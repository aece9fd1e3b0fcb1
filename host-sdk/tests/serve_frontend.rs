//! The endpoints the stock ComfyUI frontend needs (users, settings, user files, the Jobs API),
//! and, when `ODELT_COMFY_FRONTEND` names an unpacked `comfyui_frontend_package/static` and
//! Chromium is installed, the stock frontend booting against `odelt serve --frontend-root`.

mod serve_util;

use std::time::Duration;

use serde_json::json;
use serve_util::*;

const T: Duration = Duration::from_secs(30);

#[test]
fn boot_endpoints_answer_with_well_typed_bodies() {
    let srv = server("boot");
    assert_eq!(get(srv.addr, "/api/users").json()["storage"], "server");
    assert_eq!(get(srv.addr, "/api/settings").json(), json!({}));
    assert_eq!(
        post_json(
            srv.addr,
            "/api/settings",
            &json!({"Comfy.A": 1, "Comfy.B": "x"})
        )
        .status,
        200
    );
    assert_eq!(
        post_json(srv.addr, "/api/settings/Comfy.C", &json!([1, 2])).status,
        200
    );
    let s = get(srv.addr, "/api/settings").json();
    assert_eq!(s, json!({"Comfy.A": 1, "Comfy.B": "x", "Comfy.C": [1, 2]}));
    assert_eq!(get(srv.addr, "/api/settings/Comfy.B").json(), "x");
    assert_eq!(get(srv.addr, "/api/settings/nope").json(), json!(null));
    assert_eq!(
        request(srv.addr, "POST", "/api/settings", &[], b"{oops").status,
        400
    );
    for p in [
        "/api/i18n",
        "/api/global_subgraphs",
        "/api/workflow_templates",
        "/api/node_replacements",
        "/internal/folder_paths",
    ] {
        let r = get(srv.addr, p);
        assert_eq!(r.status, 200, "{p}");
        assert!(r.json().is_object(), "{p}");
    }
    // User files: stored, listed, read, deleted; no escapes.
    assert_eq!(
        get(srv.addr, "/api/userdata?dir=workflows").json(),
        json!([])
    );
    let r = request(
        srv.addr,
        "POST",
        "/api/userdata/workflows%2Fa.json",
        &[],
        b"{\"x\":1}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        get(srv.addr, "/api/userdata?dir=workflows").json(),
        json!(["a.json"])
    );
    assert_eq!(
        get(srv.addr, "/api/userdata/workflows%2Fa.json").body,
        b"{\"x\":1}"
    );
    let r = request(
        srv.addr,
        "POST",
        "/api/userdata/workflows%2Fa.json?overwrite=false",
        &[],
        b"{}",
    );
    assert_eq!(r.status, 409);
    assert_eq!(get(srv.addr, "/api/userdata/missing.json").status, 404);
    assert_eq!(get(srv.addr, "/api/userdata/..%2Fsecret").status, 400);
    assert_eq!(
        request(
            srv.addr,
            "DELETE",
            "/api/userdata/workflows%2Fa.json",
            &[],
            b""
        )
        .status,
        204
    );
    assert_eq!(
        get(srv.addr, "/api/userdata?dir=workflows").json(),
        json!([])
    );
}

#[test]
fn jobs_api_reflects_queue_and_history_and_cancels() {
    let srv = server("jobs");
    let mut ws = WsClient::connect(srv.addr, "jobs");
    ws.next(T).unwrap();
    let ok = uuid();
    queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("job", 4, 1, 0), "prompt_id": ok, "client_id": "jobs"}),
    );
    ws.until_done(&ok, T);
    let failed = uuid();
    let p = json!({"1": {"class_type": "Fail", "inputs": {"message": "nope"}},
                   "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}});
    queue_prompt(
        srv.addr,
        json!({"prompt": p, "prompt_id": failed, "client_id": "jobs"}),
    );
    ws.until_done(&failed, T);
    let running = uuid();
    queue_prompt(
        srv.addr,
        json!({"prompt": slow_prompt(7), "prompt_id": running, "client_id": "jobs"}),
    );
    ws.until(T, |m| m.ty() == "progress");
    let pending = uuid();
    queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("jobp", 4, 1, 0), "prompt_id": pending}),
    );

    let all = get(srv.addr, "/api/jobs?limit=200&offset=0").json();
    assert_eq!(all["pagination"]["total"], 4);
    let status_of = |id: &str| {
        all["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .map(|j| j["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status_of(&ok).as_deref(), Some("completed"));
    assert_eq!(status_of(&failed).as_deref(), Some("failed"));
    assert_eq!(status_of(&running).as_deref(), Some("in_progress"));
    assert_eq!(status_of(&pending).as_deref(), Some("pending"));
    let active = get(srv.addr, "/api/jobs?status=in_progress,pending").json();
    assert_eq!(active["jobs"].as_array().unwrap().len(), 2);
    let done = get(srv.addr, "/api/jobs?status=completed").json();
    let job = &done["jobs"][0];
    assert_eq!(job["outputs_count"], 1);
    assert_eq!(job["preview_output"]["nodeId"], "2");
    assert!(job["create_time"].is_number());
    let one = get(srv.addr, &format!("/api/jobs/{ok}")).json();
    assert_eq!(one["outputs"]["2"]["images"][0]["type"], "output");
    assert_eq!(get(srv.addr, "/api/jobs/unknown").status, 404);
    let fj = get(srv.addr, &format!("/api/jobs/{failed}")).json();
    assert!(fj["execution_error"]["exception_message"]
        .as_str()
        .unwrap()
        .contains("nope"));

    // Cancelling: the pending one is removed, the running one interrupted.
    assert_eq!(
        post_json(srv.addr, &format!("/api/jobs/{pending}/cancel"), &json!({})).json()["cancelled"],
        true
    );
    let r = post_json(
        srv.addr,
        "/api/jobs/cancel",
        &json!({"job_ids": [running, uuid()]}),
    );
    assert_eq!(r.json()["cancelled"], json!([running]));
    ws.until_done(&running, T);
    assert_eq!(
        post_json(srv.addr, "/api/jobs/cancel", &json!({"job_ids": "x"})).status,
        400
    );
    let after = get(srv.addr, "/api/jobs").json();
    assert_eq!(after["pagination"]["total"], 3);
    let cancelled = get(srv.addr, "/api/jobs?status=cancelled").json();
    assert_eq!(cancelled["jobs"][0]["id"], running.as_str());
}

/// The stock ComfyUI frontend (PyPI `comfyui-frontend-package`, unpacked; not committed) boots
/// against `--frontend-root`, loads an API prompt, queues it through our API and gets the image.
/// Runs only when `ODELT_COMFY_FRONTEND` names its `static/` folder and Chromium is installed.
#[test]
fn stock_comfyui_frontend_queues_a_prompt_when_available() {
    let Some(root) = std::env::var_os("ODELT_COMFY_FRONTEND") else {
        eprintln!("SKIPPED stock frontend test: set ODELT_COMFY_FRONTEND to comfyui_frontend_package/static");
        return;
    };
    let root = std::path::PathBuf::from(root);
    assert!(
        root.join("index.html").is_file(),
        "{} has no index.html",
        root.display()
    );
    let srv = server_with("stock-frontend", |c| c.frontend_root = Some(root.clone()));
    // No first-run template gallery over the canvas.
    post_json(
        srv.addr,
        "/api/settings",
        &json!({"Comfy.TutorialCompleted": true}),
    );
    let url = format!("http://{}/", srv.addr);
    let Some(mut browser) = serve_util::browser::Browser::open(&url, srv.addr) else {
        eprintln!("SKIPPED stock frontend test: no Chromium found");
        return;
    };
    browser.wait_for(
        "typeof window.app === 'object' && !!window.app.graph && typeof window.app.loadApiJson === 'function'",
        Duration::from_secs(90),
    );
    let prompt = image_prompt("stock", 24, 3, 20);
    let n = browser.eval(&format!(
        "(async () => {{ await app.loadApiJson({prompt}, 'odelt.json'); await app.queuePrompt(0, 1); return app.graph._nodes.length; }})()"
    ));
    assert_eq!(n, 4, "nodes in the frontend graph");
    // Our server ran what the frontend queued, with the frontend's workflow embedded.
    let end = std::time::Instant::now() + Duration::from_secs(60);
    let entry = loop {
        let h = get(srv.addr, "/history").json();
        if let Some(e) = h.as_object().and_then(|m| m.values().next().cloned()) {
            break e;
        }
        assert!(
            std::time::Instant::now() < end,
            "the frontend's prompt never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    assert!(entry["prompt"][3]["client_id"].is_string());
    let file = entry["outputs"]["2"]["images"][0]["filename"]
        .as_str()
        .unwrap()
        .to_string();
    let png = std::fs::read(srv.output_dir().join(&file)).unwrap();
    let wf = png_text_chunks(&png)
        .into_iter()
        .find(|(k, _)| k == "workflow")
        .expect("workflow chunk");
    let wf: serde_json::Value = serde_json::from_str(&wf.1).unwrap();
    assert_eq!(wf["nodes"].as_array().unwrap().len(), 4);
    // The frontend received the image over the WebSocket.
    let shown = browser.wait_for(
        "(() => { const o = app.nodeOutputs || {}; const k = Object.keys(o).find(k => o[k] && o[k].images && o[k].images.length); return k ? o[k].images[0].filename : ''; })()",
        Duration::from_secs(30),
    );
    assert_eq!(shown, file.as_str());
    browser.screenshot(&release_dir().join("serve-stock-frontend.png"));
}
