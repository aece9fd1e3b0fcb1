//! The built-in editor in headless Chromium: `/?selftest=1` makes the page build a graph
//! from its palette through its own click/drag handlers, queue it, wait for progress, a
//! preview and the output image, then restore the graph from the PNG's workflow chunk. The
//! test drives Chromium over the DevTools protocol and reads the verdict from the DOM.
//! Skipped (with a message) when no Chromium is installed (`apt-get install chromium`).

mod serve_util;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use serve_util::*;

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ODELT_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Kills the browser when the test ends, however it ends.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One DevTools call; returns its `result`.
fn cdp(ws: &mut WsClient, id: &mut u64, method: &str, params: Json) -> Json {
    *id += 1;
    let want = *id;
    ws.send_text(&json!({"id": want, "method": method, "params": params}).to_string());
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match ws.next(left) {
            Some(Ws::Json(m)) if m["id"] == want => {
                assert!(m.get("error").is_none(), "{method} failed: {m}");
                return m["result"].clone();
            }
            Some(_) => {}
            None => panic!("no answer to {method}"),
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn editor_builds_a_graph_queues_it_and_shows_the_image_in_headless_chromium() {
    let Some(chrome) = find_chromium() else {
        eprintln!(
            "SKIPPED serve_browser: no Chromium found (apt-get install -y chromium, or set ODELT_CHROMIUM)"
        );
        return;
    };
    let srv = server("browser");
    let profile = temp_dir("chromium-profile");
    let url = format!("http://{}/?selftest=1", srv.addr);
    let mut child = Command::new(&chrome)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-extensions",
            "--window-size=1400,1000",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chrome.display()));
    let stderr = child.stderr.take().expect("chromium stderr");
    let browser = Browser(child);
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let devtools: SocketAddr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("Chromium never announced DevTools; stderr: {seen:#?}"));
        if let Some(rest) = line
            .split("ws://")
            .nth(1)
            .filter(|_| line.contains("DevTools listening"))
        {
            let hostport = rest.split('/').next().unwrap_or("");
            break hostport.parse().expect("DevTools address");
        }
        seen.push(line);
    };
    // The page target.
    let ws_url = loop {
        let targets = get(devtools, "/json/list").json();
        let page = targets.as_array().and_then(|a| {
            a.iter()
                .find(|t| {
                    t["type"] == "page"
                        && t["url"]
                            .as_str()
                            .is_some_and(|u| u.contains(&srv.addr.to_string()))
                })
                .cloned()
        });
        if let Some(p) = page {
            break p["webSocketDebuggerUrl"]
                .as_str()
                .expect("debugger url")
                .to_string();
        }
        assert!(Instant::now() < deadline, "no page target: {targets}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut ws = WsClient::connect_url(devtools, &ws_url);
    let mut id = 0u64;
    let verdict = loop {
        let r = cdp(
            &mut ws,
            &mut id,
            "Runtime.evaluate",
            json!({"expression": "(() => { const e = document.getElementById('selftest-result'); return e ? e.getAttribute('data-status') + ' ' + e.textContent : ''; })()",
                   "returnByValue": true}),
        );
        let text = r["result"]["value"].as_str().unwrap_or("").to_string();
        if text.starts_with("pass") || text.starts_with("fail") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the self-test did not finish: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let shot = cdp(
        &mut ws,
        &mut id,
        "Page.captureScreenshot",
        json!({"format": "png"}),
    );
    let png = base64_decode(shot["data"].as_str().unwrap_or(""));
    let shot_path = release_dir().join("serve-editor-selftest.png");
    let _ = std::fs::write(&shot_path, &png);
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
