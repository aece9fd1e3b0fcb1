//! Load test of `odelt serve` on loopback (ignored by default; run with
//! `cargo test --release -p odelt-host --test serve_load -- --ignored --nocapture`):
//! 8 concurrent clients queue 200 prompts between them, each following its own prompts over
//! its WebSocket, while a monitor polls GET /queue. Checks that every prompt reaches history
//! with its outputs, none lost or duplicated, and prints a latency table.

mod serve_util;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use serve_util::*;

const CLIENTS: usize = 8;
const PER_CLIENT: usize = 25;

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
        "| {name:<34} | {:>5} | {:>8.2} | {:>8.2} | {:>8.2} | {:>8.2} |",
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
        "3": {"class_type": "SlowCount", "inputs": {"steps": 4, "step_ms": 1, "tag": (client * 1000 + k) as i64}},
        "4": {"class_type": "ShowNumber", "inputs": {"value": ["3", 0]}}
    })
}

#[test]
#[ignore = "load test: run with --ignored --nocapture"]
fn eight_clients_queue_200_prompts() {
    let srv = server_with("load", |c| c.max_queue = 1000);
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
            std::thread::spawn(move || {
                let cid = format!("load-{c}");
                let mut ws = WsClient::connect(addr, &cid);
                ws.next(Duration::from_secs(10)).expect("status on connect");
                let mut post_ms = Vec::new();
                let mut sent_at: HashMap<String, Instant> = HashMap::new();
                for k in 0..PER_CLIENT {
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
                let end = Instant::now() + Duration::from_secs(300);
                while done.len() < PER_CLIENT {
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
    assert_eq!(history.len(), CLIENTS * PER_CLIENT);
    let mut files = HashSet::new();
    for id in &ids {
        let e = &history[id];
        assert_eq!(e["status"]["status_str"], "success", "{id}");
        let f = e["outputs"]["2"]["images"][0]["filename"].as_str().unwrap();
        assert!(srv.output_dir().join(f).is_file(), "{f} missing");
        assert!(files.insert(f.to_string()), "{f} reported twice");
        assert_eq!(e["outputs"]["4"]["text"][0], "4");
    }
    assert_eq!(files.len(), CLIENTS * PER_CLIENT);
    let queue_max = queue_ms.iter().cloned().fold(0.0, f64::max);

    println!(
        "\nodelt serve load test: {CLIENTS} clients x {PER_CLIENT} prompts = {} prompts, loopback",
        CLIENTS * PER_CLIENT
    );
    println!(
        "wall {:.2} s, {:.1} prompts/s, max pending seen {max_pending}, history {} entries, {} distinct PNGs\n",
        wall.as_secs_f64(),
        (CLIENTS * PER_CLIENT) as f64 / wall.as_secs_f64(),
        history.len(),
        files.len()
    );
    println!("| latency (ms)                       |     n |      p50 |      p95 |      p99 |      max |");
    println!("|------------------------------------|-------|----------|----------|----------|----------|");
    println!("{}", summary("GET /queue during the run", queue_ms));
    println!("{}", summary("POST /prompt (validate + enqueue)", post_ms));
    println!("{}", summary("prompt end-to-end (POST to end)", e2e_ms));
    assert!(queue_max < 2000.0, "GET /queue took {queue_max} ms");
}
