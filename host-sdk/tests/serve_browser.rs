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
