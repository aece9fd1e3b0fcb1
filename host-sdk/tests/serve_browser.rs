//! The built-in editor in headless Chromium: `/?selftest=1` makes the page build a graph
//! from its palette through its own click/drag handlers, queue it, wait for progress, a
//! preview and the output image, then restore the graph from the PNG's workflow chunk. The
//! test drives Chromium over the DevTools protocol and reads the verdict from the DOM, then
//! checks Save API JSON (a real download), Load… (the file input) and dropping the PNG.
//! Skipped (with a message) when no Chromium is installed (`apt-get install chromium`).

mod serve_util;

use std::time::Duration;

use serde_json::{json, Value as Json};
use serve_util::browser::Browser;
use serve_util::*;

#[test]
fn editor_builds_a_graph_queues_it_and_shows_the_image_in_headless_chromium() {
    let srv = server("browser");
    let url = format!("http://{}/?selftest=1", srv.addr);
    let Some(mut browser) = Browser::open(&url, srv.addr) else {
        eprintln!(
            "SKIPPED serve_browser: no Chromium found (apt-get install -y chromium, or set ODELT_CHROMIUM)"
        );
        return;
    };
    let verdict = browser
        .wait_for(
            "(() => { const e = document.getElementById('selftest-result'); const s = e ? e.getAttribute('data-status') : ''; return s === 'pass' || s === 'fail' ? s + ' ' + e.textContent : ''; })()",
            Duration::from_secs(60),
        )
        .as_str()
        .unwrap_or("")
        .to_string();
    let shot_path = release_dir().join("serve-editor-selftest.png");
    browser.screenshot(&shot_path);

    // Save API JSON downloads the graph; Load… (the file input) reads it back.
    let downloads = temp_dir("downloads");
    browser.call(
        "Page.setDownloadBehavior",
        json!({"behavior": "allow", "downloadPath": downloads.display().to_string()}),
    );
    let before = browser.eval("JSON.stringify(odeltEditor.buildPrompt())");
    browser.eval("document.getElementById('save-btn').click(); 1");
    let saved = downloads.join("workflow_api.json");
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while !saved.is_file() || std::fs::metadata(&saved).map_or(0, |m| m.len()) == 0 {
        assert!(
            std::time::Instant::now() < end,
            "Save API JSON wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let saved_json: Json = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    let before_json: Json = serde_json::from_str(before.as_str().unwrap()).unwrap();
    assert_eq!(saved_json, before_json);
    assert_eq!(saved_json["2"]["inputs"]["images"], json!(["1", 0]));
    browser.eval("document.getElementById('clear-btn').click(); odeltEditor.state.nodes.size");
    assert_eq!(browser.eval("odeltEditor.state.nodes.size"), 0);
    let input = browser.call(
        "Runtime.evaluate",
        json!({"expression": "document.getElementById('load-input')"}),
    );
    let object_id = input["result"]["objectId"]
        .as_str()
        .expect("input element")
        .to_string();
    browser.call(
        "DOM.setFileInputFiles",
        json!({"files": [saved.display().to_string()], "objectId": object_id}),
    );
    browser.wait_for(
        "odeltEditor.state.nodes.size === 4",
        Duration::from_secs(10),
    );
    assert_eq!(
        browser.eval("JSON.stringify(odeltEditor.buildPrompt())"),
        before
    );

    // Dropping an odelt PNG on the page restores its workflow.
    browser.eval("document.getElementById('clear-btn').click(); 1");
    let dropped = browser.eval(
        "(async () => { const img = document.querySelector('.node-images img') || null; \
           const h = await (await fetch('/api/history')).json(); \
           const e = Object.values(h)[0]; const im = e.outputs['2'].images[0]; \
           const blob = await (await fetch('/api/view?filename=' + encodeURIComponent(im.filename) + '&type=output')).blob(); \
           const dt = new DataTransfer(); dt.items.add(new File([blob], 'dropped.png', {type: 'image/png'})); \
           document.body.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); \
           void img; return true; })()",
    );
    assert_eq!(dropped, true);
    browser.wait_for(
        "odeltEditor.state.nodes.size === 4 && odeltEditor.state.links.size === 2",
        Duration::from_secs(10),
    );
    assert_eq!(
        browser.eval("JSON.stringify(odeltEditor.buildPrompt())"),
        before
    );
    drop(browser);
    eprintln!(
        "editor self-test: {verdict} (screenshot: {})",
        shot_path.display()
    );
    assert!(verdict.starts_with("pass PASS"), "{verdict}");

    // The server side agrees: the graph ran, then ran again from cache after the restore;
    // the PNG holds the editor's workflow.
    let history = get(srv.addr, "/history").json();
    let entries: Vec<&Json> = history.as_object().unwrap().values().collect();
    assert_eq!(entries.len(), 2, "{history}");
    let e = entries[0];
    assert_eq!(e["status"]["status_str"], "success");
    assert_eq!(
        entries[1]["status"]["messages"][1][1]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(entries[1]["outputs"], e["outputs"]);
    let outputs = e["outputs"].as_object().unwrap();
    let image = outputs
        .values()
        .find_map(|o| o["images"].get(0).cloned())
        .expect("an image output");
    let file = image["filename"].as_str().unwrap();
    assert!(file.starts_with("selftest_"), "{file}");
    let png = std::fs::read(srv.output_dir().join(file)).unwrap();
    let chunks = png_text_chunks(&png);
    let wf: Json =
        serde_json::from_str(&chunks.iter().find(|(k, _)| k == "workflow").unwrap().1).unwrap();
    assert_eq!(wf["version"], 0.4);
    assert_eq!(wf["nodes"].as_array().unwrap().len(), 4);
    assert_eq!(wf["links"].as_array().unwrap().len(), 2);
    let prompt: Json =
        serde_json::from_str(&chunks.iter().find(|(k, _)| k == "prompt").unwrap().1).unwrap();
    let classes: std::collections::BTreeSet<&str> = prompt
        .as_object()
        .unwrap()
        .values()
        .map(|n| n["class_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        classes.into_iter().collect::<Vec<_>>(),
        ["GradientImage", "ShowNumber", "SlowCount", "TestSaveImage"]
    );
}

/// A server over the product plugin (target/release, next to `odelt`) and the shipped models
/// (`models/`), optionally serving a stock frontend; None (with a message) when the plugin has
/// not been built.
fn product_server(tag: &str, frontend_root: Option<std::path::PathBuf>) -> Option<TestServer> {
    use odelt_host::serve::{start, ServeConfig};
    use odelt_host::{ExecutorConfig, PluginSet};
    let lib = release_dir().join(format!(
        "{}odelt_plugin{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    if !lib.is_file() {
        eprintln!(
            "SKIPPED {tag}: {} is missing (cargo build --release)",
            lib.display()
        );
        return None;
    }
    let mut set = PluginSet::new();
    set.load_file(&lib)
        .unwrap_or_else(|e| panic!("load {}: {e}", lib.display()));
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = temp_dir(tag);
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        executor: ExecutorConfig {
            workers: 2,
            device: "cpu".into(),
            output_dir: dir.join("output"),
            temp_dir: dir.join("temp"),
            models_dir: repo.join("models"),
            input_dir: dir.join("input"),
            cache_runs: 1,
            ..ExecutorConfig::default()
        },
        frontend_root,
        ..ServeConfig::default()
    };
    let handle = start(std::sync::Arc::new(set), cfg).expect("server starts");
    let addr = handle.addr();
    Some(TestServer { handle, addr, dir })
}

/// `v` with every number as a float (JavaScript writes 0.0 as 0).
fn norm(v: &Json) -> Json {
    match v {
        Json::Number(n) => json!(n.as_f64()),
        Json::Array(a) => Json::Array(a.iter().map(norm).collect()),
        Json::Object(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), norm(v))).collect()),
        other => other.clone(),
    }
}

/// The committed example, as the editor's buildPrompt() writes it (inputs only, by node; numbers
/// as floats).
fn example_inputs(name: &str) -> Json {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/workflows")
        .join(format!("{name}.json"));
    let v: Json = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let m: serde_json::Map<String, Json> = v
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, n)| {
            (
                id.clone(),
                json!({"class_type": n["class_type"], "inputs": n["inputs"]}),
            )
        })
        .collect();
    norm(&Json::Object(m))
}

const EDITOR_PROMPT: &str = "JSON.stringify(Object.fromEntries(Object.entries(odeltEditor.buildPrompt()).map(([id, n]) => [id, {class_type: n.class_type, inputs: n.inputs}])))";

/// A new user's first minute: a fresh browser profile opens `/` on the default graph (the
/// committed generate.json, laid out), Queue shows its ten images within seconds; the edited
/// graph comes back after a reload (localStorage); the Examples menu loads the others.
#[test]
fn a_fresh_profile_opens_the_default_graph_and_queue_shows_its_images() {
    let Some(srv) = product_server("browser-default", None) else {
        return;
    };
    let url = format!("http://{}/", srv.addr);
    let Some(mut browser) = Browser::open(&url, srv.addr) else {
        eprintln!("SKIPPED serve_browser default graph: no Chromium found");
        return;
    };
    browser.wait_for(
        "document.body.getAttribute('data-graph') === 'default' && odeltEditor.state.ws && odeltEditor.state.ws.readyState === 1",
        Duration::from_secs(30),
    );
    assert_eq!(browser.eval("odeltEditor.state.nodes.size"), 6);
    assert_eq!(browser.eval("odeltEditor.state.links.size"), 6);
    // Every widget value and link of the committed example made it through the layout.
    let shown = norm(&serde_json::from_str(browser.eval(EDITOR_PROMPT).as_str().unwrap()).unwrap());
    assert_eq!(shown, example_inputs("generate"));
    // Nodes do not overlap.
    let overlaps = browser.eval(
        "(() => { const r = [...document.querySelectorAll('.node')].map(e => e.getBoundingClientRect()); let n = 0; \
           for (let i = 0; i < r.length; i++) for (let j = i + 1; j < r.length; j++) \
             if (r[i].left < r[j].right && r[j].left < r[i].right && r[i].top < r[j].bottom && r[j].top < r[i].bottom) n++; \
           return n; })()",
    );
    assert_eq!(overlaps, 0, "overlapping nodes in the default layout");

    let t0 = std::time::Instant::now();
    browser.eval("document.getElementById('queue-btn').click(); 1");
    let images = "[...document.querySelectorAll('.node[data-id=\"6\"] .node-images img')]";
    browser.wait_for(
        &format!(
            "{images}.length === 10 && {images}.every(i => i.complete && i.naturalWidth === 28)"
        ),
        Duration::from_secs(60),
    );
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("default graph: 10 images on screen {secs:.2} s after Queue");
    assert!(secs < 30.0, "{secs} s");
    let shot = release_dir().join("serve-editor-default.png");
    browser.screenshot(&shot);
    eprintln!("screenshot: {}", shot.display());

    // The last graph is remembered: change the seed, reload, the same graph is back.
    browser.eval(
        "(() => { const w = document.querySelector('.node[data-id=\"4\"] [data-input=\"seed\"]'); w.value = '7'; \
           w.dispatchEvent(new Event('change', {bubbles: true})); odeltEditor.storeGraph(); return 1; })()",
    );
    browser.call("Page.reload", json!({}));
    browser.wait_for(
        "!!document.body && document.body.getAttribute('data-graph') === 'stored'",
        Duration::from_secs(30),
    );
    let mut want = example_inputs("generate");
    want["4"]["inputs"]["seed"] = json!(7.0);
    let shown = norm(&serde_json::from_str(browser.eval(EDITOR_PROMPT).as_str().unwrap()).unwrap());
    assert_eq!(shown, want);

    // The Examples menu lists the runnable examples and loads one.
    let menu = browser.eval(
        "[...document.querySelectorAll('#examples-menu option')].map(o => o.value).filter(Boolean)",
    );
    assert_eq!(
        menu,
        json!(["generate", "same_seed_every_length", "img2img_denoise"]),
        "the ImageNet example needs checkpoints that are not shipped"
    );
    browser.eval(
        "(() => { const m = document.getElementById('examples-menu'); m.value = 'img2img_denoise'; \
           m.dispatchEvent(new Event('change')); return 1; })()",
    );
    browser.wait_for(
        "document.body.getAttribute('data-graph') === 'template:img2img_denoise' && odeltEditor.state.nodes.size === 8",
        Duration::from_secs(30),
    );
    let shown = norm(&serde_json::from_str(browser.eval(EDITOR_PROMPT).as_str().unwrap()).unwrap());
    assert_eq!(shown, example_inputs("img2img_denoise"));
}

/// The stock ComfyUI frontend (`ODELT_COMFY_FRONTEND` = the unpacked `static/` of PyPI
/// `comfyui-frontend-package`, see SERVE.md) lists the examples in its template dialog, with
/// their titles and thumbnails; clicking one loads it and queueing it makes its images.
#[test]
fn stock_frontend_template_dialog_lists_the_examples_and_one_runs() {
    let Some(root) = std::env::var_os("ODELT_COMFY_FRONTEND") else {
        eprintln!("SKIPPED stock frontend templates: set ODELT_COMFY_FRONTEND to comfyui_frontend_package/static");
        return;
    };
    let Some(srv) = product_server("browser-templates", Some(std::path::PathBuf::from(root)))
    else {
        return;
    };
    post_json(
        srv.addr,
        "/api/settings",
        &json!({"Comfy.TutorialCompleted": true}),
    );
    let url = format!("http://{}/", srv.addr);
    let Some(mut browser) = Browser::open(&url, srv.addr) else {
        eprintln!("SKIPPED stock frontend templates: no Chromium found");
        return;
    };
    browser.wait_for(
        "typeof window.app === 'object' && !!window.app.graph && !!window.app.extensionManager",
        Duration::from_secs(90),
    );
    browser.eval("app.extensionManager.command.execute('Comfy.BrowseTemplates'); 1");
    let card = |name: &str| {
        format!("document.querySelector('[data-testid=\"template-workflow-{name}\"]')")
    };
    browser.wait_for(&format!("!!{}", card("generate")), Duration::from_secs(30));
    for (name, title) in [
        ("generate", "Generate Fashion-MNIST images"),
        ("same_seed_every_length", "One seed at every length"),
        ("img2img_denoise", "img2img: sneakers to ankle boots"),
    ] {
        let text = browser.eval(&format!("{}.textContent", card(name)));
        assert!(
            text.as_str().unwrap_or("").contains(title),
            "{name}: {text}"
        );
    }
    // The thumbnails are loaded images.
    browser.wait_for(
        &format!("(() => {{ const i = {}.querySelector('img'); return !!i && i.complete && i.naturalWidth === 256; }})()", card("generate")),
        Duration::from_secs(30),
    );
    browser.screenshot(&release_dir().join("serve-stock-templates.png"));
    browser.eval(&format!("{}.click(); 1", card("generate")));
    browser.wait_for(
        "app.graph._nodes.length === 6 && app.graph.links && Object.keys(app.graph.links).length >= 5",
        Duration::from_secs(30),
    );
    browser.eval("(async () => { await app.queuePrompt(0, 1); return 1; })()");
    let entry = wait_any_history(srv.addr, Duration::from_secs(60));
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    let images = entry["outputs"]["6"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 10);
    // What the frontend queued is the committed example (its seed kept fixed).
    let prompt = &entry["prompt"][2];
    let want = example_inputs("generate");
    for id in ["1", "2", "3", "4", "5", "6"] {
        assert_eq!(norm(&prompt[id]["inputs"]), want[id]["inputs"], "node {id}");
    }
}

fn wait_any_history(addr: std::net::SocketAddr, timeout: Duration) -> Json {
    let end = std::time::Instant::now() + timeout;
    loop {
        let h = get(addr, "/history").json();
        if let Some(e) = h.as_object().and_then(|m| m.values().next().cloned()) {
            return e;
        }
        assert!(std::time::Instant::now() < end, "nothing ran");
        std::thread::sleep(Duration::from_millis(100));
    }
}
