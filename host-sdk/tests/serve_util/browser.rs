//! Headless Chromium driven over the DevTools protocol (for the editor tests). Skips, with a
//! message, when no Chromium is installed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use super::{get, temp_dir, Ws, WsClient};

/// `ODELT_CHROMIUM`, else chromium / chromium-browser / google-chrome on PATH.
pub fn find_chromium() -> Option<PathBuf> {
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

/// A headless browser showing one page; killed on drop.
pub struct Browser {
    child: Child,
    pub page: WsClient,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Opens `url` (served at `server`) in headless Chromium; None when none is installed.
    pub fn open(url: &str, server: SocketAddr) -> Option<Browser> {
        let chrome = find_chromium()?;
        let profile = temp_dir("chromium-profile");
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
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chrome.display()));
        let stderr = child.stderr.take().expect("chromium stderr");
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
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                panic!("Chromium never announced DevTools; stderr: {seen:#?}");
            };
            if let Some(rest) = line
                .split("ws://")
                .nth(1)
                .filter(|_| line.contains("DevTools listening"))
            {
                break rest
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .parse()
                    .expect("DevTools address");
            }
            seen.push(line);
        };
        let ws_url = loop {
            let targets = get(devtools, "/json/list").json();
            let page = targets.as_array().and_then(|a| {
                a.iter()
                    .find(|t| {
                        t["type"] == "page"
                            && t["url"]
                                .as_str()
                                .is_some_and(|u| u.contains(&server.to_string()))
                    })
                    .cloned()
            });
            if let Some(p) = page {
                break p["webSocketDebuggerUrl"]
                    .as_str()
                    .expect("debugger url")
                    .to_string();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("no page target: {targets}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let page = WsClient::connect_url(devtools, &ws_url);
        Some(Browser {
            child,
            page,
            next_id: 0,
        })
    }

    /// One DevTools call; returns its `result`.
    pub fn call(&mut self, method: &str, params: Json) -> Json {
        self.next_id += 1;
        let want = self.next_id;
        self.page
            .send_text(&json!({"id": want, "method": method, "params": params}).to_string());
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.page.next(left) {
                Some(Ws::Json(m)) if m["id"] == want => {
                    assert!(m.get("error").is_none(), "{method} failed: {m}");
                    return m["result"].clone();
                }
                Some(_) => {}
                None => panic!("no answer to {method}"),
            }
        }
    }

    /// Evaluates a JS expression (promises awaited) and returns its JSON value.
    pub fn eval(&mut self, expr: &str) -> Json {
        self.try_eval(expr)
            .unwrap_or_else(|e| panic!("JS failed: {e}"))
    }

    /// [`Browser::eval`], with a thrown exception as the error.
    fn try_eval(&mut self, expr: &str) -> Result<Json, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        match r.get("exceptionDetails") {
            Some(e) => Err(e.to_string()),
            None => Ok(r["result"]["value"].clone()),
        }
    }

    /// Polls `expr` until it is truthy; returns it. An expression that throws (the page still loading:
    /// `document.body` null) counts as not yet; the last exception is reported on timeout.
    pub fn wait_for(&mut self, expr: &str, timeout: Duration) -> Json {
        let end = Instant::now() + timeout;
        loop {
            let (v, err) = match self.try_eval(expr) {
                Ok(v) => (v, None),
                Err(e) => (Json::Null, Some(e)),
            };
            let truthy =
                !matches!(&v, Json::Null | Json::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {expr}{}",
                err.map_or(String::new(), |e| format!(" (last JS exception: {e})"))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Saves a PNG screenshot of the page.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let _ = std::fs::write(path, base64_decode(shot["data"].as_str().unwrap_or("")));
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
