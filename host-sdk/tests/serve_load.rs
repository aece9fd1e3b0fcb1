//! Load test of `odelt serve` on loopback (ignored by default; run with
//! `cargo test --release -p odelt-host --test serve_load -- --ignored --nocapture`):
//! 32 concurrent clients queue 2,000 prompts between them over HTTP, each following its own
//! prompts over its WebSocket, while a monitor polls GET /queue; once with the queue and
//! history kept in memory, once persisted (redb, an fsync per commit). Checks that every
//! prompt reaches history with its outputs exactly once, none lost or duplicated, that the
//! persisted history is all there after a restart, and prints latency and throughput tables.

mod serve_util;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use serve_util::*;

const CLIENTS: usize = 32;
const PROMPTS: usize = 2000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "| {name:<44} | {:>5} | {:>8.2} | {:>8.2} | {:>8.2} | {:>8.2} |",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.95),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

fn load_prompt(client: usize, k: usize) -> serde_json::Value {
    json!({
        "1": {"class_type": "GradientImage", "inputs": {"width": 32 + (k % 8) as i64, "height": 32}},
        "2": {"class_type": "TestSaveImage", "inputs": {"images": ["1", 0], "filename_prefix": format!("load_c{client}_p{k}")}},
        "3": {"class_type": "SlowCount", "inputs": {"steps": 2, "step_ms": 0, "tag": (client * 1000 + k) as i64}},
        "4": {"class_type": "ShowNumber", "inputs": {"value": ["3", 0]}}
    })
}

/// What one run measured.
struct Report {
    wall: Duration,
    post_ms: Vec<f64>,
    queue_ms: Vec<f64>,
    e2e_ms: Vec<f64>,
    max_pending: usize,
}

/// `CLIENTS` clients queue `PROMPTS` prompts between them (the first ones one more when it
/// does not divide) and follow them to the end; `state`: persisted there, else in memory.
fn run(tag: &str, state: Option<PathBuf>) -> Report {
    let persisted = state.is_some();
    let srv = server_with(tag, |c| {
        c.max_queue = PROMPTS + 100;
        c.state_dir = state.clone();
    });
    let addr = srv.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut max_pending = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = get(addr, "/queue");
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                assert_eq!(r.status, 200);
                let pending = r.json()["queue_pending"].as_array().map_or(0, |a| a.len());
                max_pending = max_pending.max(pending);
                std::thread::sleep(Duration::from_millis(20));
            }
            (lat, max_pending)
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mine = PROMPTS / CLIENTS + usize::from(c < PROMPTS % CLIENTS);
            std::thread::spawn(move || {
                let cid = format!("load-{c}");
                let mut ws = WsClient::connect(addr, &cid);
                ws.next(Duration::from_secs(10)).expect("status on connect");
                let mut post_ms = Vec::new();
                let mut sent_at: HashMap<String, Instant> = HashMap::new();
                for k in 0..mine {
                    let body = json!({"prompt": load_prompt(c, k), "client_id": cid});
                    let t = Instant::now();
                    let r = queue_prompt(addr, body);
                    post_ms.push(t.elapsed().as_secs_f64() * 1e3);
                    assert_eq!(r.status, 200, "{}", r.text());
                    let id = r.json()["prompt_id"].as_str().unwrap().to_string();
                    assert!(sent_at.insert(id, t).is_none(), "duplicate prompt id");
                }
                // Follow completions: each own prompt ends exactly once, no foreign ones.
                let mut done: HashMap<String, f64> = HashMap::new();
                let end = Instant::now() + Duration::from_secs(600);
                while done.len() < mine {
                    let left = end.saturating_duration_since(Instant::now());
                    let m = ws.next(left).expect("completion events");
                    if m.ty() == "executing" && m.data()["node"].is_null() {
                        let id = m.data()["prompt_id"].as_str().unwrap().to_string();
                        let t0 = sent_at.get(&id).unwrap_or_else(|| {
                            panic!("client {c} got another client's prompt {id}")
                        });
                        let e2e = t0.elapsed().as_secs_f64() * 1e3;
                        assert!(done.insert(id, e2e).is_none(), "prompt finished twice");
                    }
                    if m.ty() == "execution_error" || m.ty() == "execution_interrupted" {
                        panic!("prompt failed: {:?}", m.data());
                    }
                }
                (post_ms, done)
            })
        })
        .collect();
    let mut post_ms = Vec::new();
    let mut e2e_ms = Vec::new();
    let mut ids = HashSet::new();
    for h in clients {
        let (p, done) = h.join().expect("client thread");
        post_ms.extend(p);
        for (id, ms) in done {
            e2e_ms.push(ms);
            assert!(ids.insert(id), "a prompt id was reported to two clients");
        }
    }
    let wall = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (queue_ms, max_pending) = monitor.join().expect("monitor");

    // Every prompt is in history once, successful, with its own PNG.
    let history = get(addr, "/history").json();
    let history = history.as_object().unwrap();
    assert_eq!(history.len(), PROMPTS);
    let mut files = HashSet::new();
    for id in &ids {
        let e = &history[id];
        assert_eq!(e["status"]["status_str"], "success", "{id}");
        let f = e["outputs"]["2"]["images"][0]["filename"].as_str().unwrap();
        assert!(srv.output_dir().join(f).is_file(), "{f} missing");
        assert!(files.insert(f.to_string()), "{f} reported twice");
        assert_eq!(e["outputs"]["4"]["text"][0], "2");
    }
    assert_eq!(files.len(), PROMPTS);
    let queue_max = queue_ms.iter().cloned().fold(0.0, f64::max);
    assert!(queue_max < 5000.0, "GET /queue took {queue_max} ms");
    let before = get(addr, "/history").json();
    srv.handle.stop();
    if persisted {
        // The persisted history is all there after a restart.
        let t = Instant::now();
        let again = server_with(&format!("{tag}-again"), |c| c.state_dir = state.clone());
        let reopened = t.elapsed();
        let after = get(again.addr, "/history").json();
        assert_eq!(after, before, "history after a restart differs");
        println!(
            "restart with {} history entries on disk: {:.0} ms to listen",
            PROMPTS,
            reopened.as_secs_f64() * 1e3
        );
        again.handle.stop();
    }
    Report {
        wall,
        post_ms,
        queue_ms,
        e2e_ms,
        max_pending,
    }
}

#[test]
#[ignore = "load test: run with --ignored --nocapture"]
fn thirty_two_clients_queue_2000_prompts_in_memory_and_persisted() {
    let memory = run("load-mem", None);
    let state = temp_dir("load-state");
    let disk = run("load-disk", Some(state));
    println!(
        "\nodelt serve load test: {CLIENTS} clients (HTTP POST + own WebSocket), {PROMPTS} prompts, loopback; \
         none lost or duplicated in either mode\n"
    );
    println!("| mode      | wall (s) | prompts/s | max pending seen |");
    println!("|-----------|----------|-----------|------------------|");
    for (name, r) in [("in memory", &memory), ("persisted", &disk)] {
        println!(
            "| {name} | {:>8.2} | {:>9.1} | {:>16} |",
            r.wall.as_secs_f64(),
            PROMPTS as f64 / r.wall.as_secs_f64(),
            r.max_pending
        );
    }
    println!();
    println!("| latency (ms)                                 |     n |      p50 |      p95 |      p99 |      max |");
    println!("|----------------------------------------------|-------|----------|----------|----------|----------|");
    for (name, r) in [("in memory", memory), ("persisted", disk)] {
        println!("{}", summary(&format!("POST /prompt, {name}"), r.post_ms));
        println!(
            "{}",
            summary(&format!("GET /queue during the run, {name}"), r.queue_ms)
        );
        println!(
            "{}",
            summary(&format!("prompt end-to-end, {name}"), r.e2e_ms)
        );
    }
}
