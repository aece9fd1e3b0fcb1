//! Helpers for the `odelt serve` tests: an in-process server over the test plugin, a raw
//! HTTP/1.1 client on `TcpStream`, a WebSocket client (tungstenite) and PNG chunk reading.
#![allow(dead_code)]

pub mod browser;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use odelt_host::serve::{start, ServeConfig, ServerHandle};
use odelt_host::{ExecutorConfig, PluginSet};
use serde_json::{json, Value as Json};

// Locating the built libraries and temporary folders: the same helpers as the other host tests.
#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)]
pub use common::{release_dir, temp_dir, test_plugin};

/// A server on a free loopback port with its own folders.
pub struct TestServer {
    pub handle: ServerHandle,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl TestServer {
    pub fn output_dir(&self) -> PathBuf {
        self.dir.join("output")
    }
    pub fn input_dir(&self) -> PathBuf {
        self.dir.join("input")
    }
    pub fn models_dir(&self) -> PathBuf {
        self.dir.join("models")
    }
}

pub fn server_with(tag: &str, tweak: impl FnOnce(&mut ServeConfig)) -> TestServer {
    let mut set = PluginSet::new();
    set.load_file(&test_plugin()).expect("load the test plugin");
    let dir = temp_dir(tag);
    let mut cfg = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        executor: ExecutorConfig {
            workers: 2,
            device: "cpu".into(),
            output_dir: dir.join("output"),
            temp_dir: dir.join("temp"),
            models_dir: dir.join("models"),
            input_dir: dir.join("input"),
            cache_runs: 1,
            ..ExecutorConfig::default()
        },
        ..ServeConfig::default()
    };
    tweak(&mut cfg);
    let handle = start(Arc::new(set), cfg).expect("server starts");
    let addr = handle.addr();
    TestServer { handle, addr, dir }
}

pub fn server(tag: &str) -> TestServer {
    server_with(tag, |_| {})
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(b, b"\r\n") {
        let size_text = std::str::from_utf8(&b[..eol]).unwrap_or("0");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[start + size + 2..];
    }
    out
}

/// Parses a raw HTTP/1.1 response (read to EOF).
pub fn parse_response(raw: &[u8]) -> Resp {
    let head_end = find(raw, b"\r\n\r\n").expect("response has a header block");
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = &raw[head_end + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Resp {
        status,
        headers,
        body,
    }
}

/// One request with `Connection: close`; extra headers may override nothing but add.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("send head");
    s.write_all(body).expect("send body");
    parse_response(&read_response(&mut s))
}

/// Reads one response: to its Content-Length, the end of its chunks, or EOF.
pub fn read_response(s: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some(h) = find(&raw, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..h]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = len {
                if raw.len() >= h + 4 + len {
                    return raw;
                }
            } else if head.contains("transfer-encoding: chunked") && raw.ends_with(b"0\r\n\r\n") {
                return raw;
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return raw,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read response: {e}"),
        }
    }
}

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], b"")
}

pub fn post_json(addr: SocketAddr, path: &str, body: &Json) -> Resp {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// POST /prompt; returns the response.
pub fn queue_prompt(addr: SocketAddr, body: Json) -> Resp {
    post_json(addr, "/prompt", &body)
}

/// A WebSocket message.
#[derive(Debug, Clone)]
pub enum Ws {
    Json(Json),
    Binary(Vec<u8>),
}

impl Ws {
    pub fn ty(&self) -> &str {
        match self {
            Ws::Json(j) => j["type"].as_str().unwrap_or(""),
            Ws::Binary(_) => "<binary>",
        }
    }
    pub fn data(&self) -> &Json {
        static NULL: Json = Json::Null;
        match self {
            Ws::Json(j) => &j["data"],
            Ws::Binary(_) => &NULL,
        }
    }
}

pub struct WsClient {
    pub ws: tungstenite::WebSocket<TcpStream>,
}

impl WsClient {
    pub fn connect(addr: SocketAddr, client_id: &str) -> WsClient {
        Self::connect_url(addr, &format!("ws://{addr}/ws?clientId={client_id}"))
    }

    /// Any WebSocket URL served at `addr`.
    pub fn connect_url(addr: SocketAddr, url: &str) -> WsClient {
        let stream = TcpStream::connect(addr).expect("connect ws");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .ok();
        let (ws, _) = tungstenite::client::client(url, stream).expect("ws handshake");
        WsClient { ws }
    }

    /// The next message, or None after `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Ws> {
        let end = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    return Some(Ws::Json(serde_json::from_str(t.as_str()).expect("ws JSON")))
                }
                Ok(tungstenite::Message::Binary(b)) => return Some(Ws::Binary(b.to_vec())),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("websocket failed: {e}"),
            }
            if Instant::now() >= end {
                return None;
            }
        }
    }

    /// Messages until `stop` matches one (included); panics after `timeout`.
    pub fn until(&mut self, timeout: Duration, mut stop: impl FnMut(&Ws) -> bool) -> Vec<Ws> {
        let end = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let m = self.next(left).unwrap_or_else(|| {
                panic!(
                    "timed out; got {:?}",
                    out.iter()
                        .map(|m: &Ws| m.ty().to_string())
                        .collect::<Vec<_>>()
                )
            });
            let done = stop(&m);
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// Messages until `executing {node: null}` for `prompt_id`.
    pub fn until_done(&mut self, prompt_id: &str, timeout: Duration) -> Vec<Ws> {
        self.until(timeout, |m| {
            m.ty() == "executing"
                && m.data()["node"].is_null()
                && m.data()["prompt_id"] == prompt_id
        })
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(tungstenite::Message::Text(text.into()))
            .expect("ws send");
    }
}

/// The tEXt chunks of a PNG file.
pub fn png_text_chunks(png: &[u8]) -> Vec<(String, String)> {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let mut out = Vec::new();
    let mut i = 8;
    while i + 8 <= png.len() {
        let len = u32::from_be_bytes([png[i], png[i + 1], png[i + 2], png[i + 3]]) as usize;
        let ty = &png[i + 4..i + 8];
        let data = &png[i + 8..i + 8 + len];
        if ty == b"tEXt" {
            if let Some(z) = data.iter().position(|&b| b == 0) {
                out.push((
                    String::from_utf8_lossy(&data[..z]).into_owned(),
                    data[z + 1..].iter().map(|&b| b as char).collect(),
                ));
            }
        }
        i += 12 + len;
    }
    out
}

/// A random-looking canonical UUID.
pub fn uuid() -> String {
    odelt_host::new_prompt_id()
}

/// GradientImage → TestSaveImage, and SlowCount(preview) → ShowNumber.
pub fn image_prompt(prefix: &str, width: i64, steps: i64, step_ms: i64) -> Json {
    json!({
        "1": {"class_type": "GradientImage", "inputs": {"width": width, "height": 8}},
        "2": {"class_type": "TestSaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
        "3": {"class_type": "SlowCount", "inputs": {"steps": steps, "step_ms": step_ms, "preview": true}},
        "4": {"class_type": "ShowNumber", "inputs": {"value": ["3", 0]}}
    })
}

/// A prompt that runs for a long time (until interrupted).
pub fn slow_prompt(tag: i64) -> Json {
    json!({
        "1": {"class_type": "SlowCount", "inputs": {"steps": 100000, "step_ms": 5, "tag": tag}},
        "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}
    })
}

/// Polls `/history/{id}` until the entry appears.
pub fn wait_history(addr: SocketAddr, id: &str, timeout: Duration) -> Json {
    let end = Instant::now() + timeout;
    loop {
        let h = get(addr, &format!("/history/{id}")).json();
        if let Some(e) = h.get(id) {
            return e.clone();
        }
        assert!(Instant::now() < end, "prompt {id} never reached history");
        std::thread::sleep(Duration::from_millis(20));
    }
}
