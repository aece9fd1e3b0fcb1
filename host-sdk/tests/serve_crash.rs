//! Durability of `odelt serve`: the queue and history survive restarts, SIGKILL at random moments
//! loses no accepted prompt and leaves no half-written file, and SIGTERM stops gracefully.
//!
//! The crash test runs the real `odelt` binary over the product plugin (its `SaveImage` writes
//! the PNGs through `odelt_nodes::pipeline::png`, write-then-rename) and the test plugin
//! (`SlowCount`, a stand-in for sampling that reports progress per step, and `GradientImage`).
//! Each prompt: SlowCount (sampling) → GradientImage whose width is SlowCount's result →
//! SaveImage. The seed of the random kill moments is printed (set `ODELT_CRASH_SEED` to
//! replay one).

mod serve_util;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use odelt_host::serve::ServeConfig;
use serde_json::{json, Value as Json};
use serve_util::*;

const T: Duration = Duration::from_secs(30);

/// xorshift64*: enough randomness for kill moments, replayable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A running `odelt serve` child.
struct Proc {
    child: Child,
    addr: SocketAddr,
}

fn spawn_server(dir: &Path, plugins: &[PathBuf], extra: &[&str]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_odelt"));
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    for p in plugins {
        cmd.arg("--plugins").arg(p);
    }
    let mut child = cmd
        .args([
            "--output-dir",
            "output",
            "--input-dir",
            "input",
            "--temp-dir",
            "temp",
            "--models-dir",
            "models",
            "--workers",
            "1",
        ])
        .args(extra)
        .env_remove("ODELT_PLUGIN_PATH")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start odelt serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("startup line");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    Proc { child, addr }
}

impl Proc {
    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
    /// SIGTERM, then the exit status.
    fn term(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM failed");
        let end = Instant::now() + T;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < end, "odelt serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn is_temp(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') && n.contains(".tmp-"))
}

/// Decodes a PNG completely; the error says what is wrong.
fn decode_png(p: &Path) -> Result<(u32, u32), String> {
    let f = std::fs::File::open(p).map_err(|e| e.to_string())?;
    let mut r = png::Decoder::new(std::io::BufReader::new(f))
        .read_info()
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0; r.output_buffer_size().ok_or("image too large")?];
    let info = r.next_frame(&mut buf).map_err(|e| e.to_string())?;
    r.finish().map_err(|e| e.to_string())?;
    Ok((info.width, info.height))
}

/// Sampling (SlowCount, `steps` × 1 ms) → an image `steps` wide → the product's SaveImage.
fn crash_prompt(k: usize) -> Json {
    let steps = 240 + k as i64;
    json!({
        "3": {"class_type": "SlowCount", "inputs": {"steps": steps, "step_ms": 1, "tag": k}},
        "1": {"class_type": "GradientImage", "inputs": {"width": ["3", 0], "height": 1500}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": format!("crash/p{k}")}}
    })
}

fn history_len(addr: SocketAddr) -> usize {
    get(addr, "/history")
        .json()
        .as_object()
        .map_or(0, |m| m.len())
}

fn running(addr: SocketAddr) -> bool {
    get(addr, "/queue").json()["queue_running"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

/// Polls `f` every millisecond until it holds; false after `timeout`.
fn poll(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kill {
    /// Right after `POST /prompt` answered 200.
    Accepted,
    /// While SlowCount runs (a random moment into it).
    Sampling,
    /// While a PNG is being written (its temporary file seen in the output folder).
    PngWrite,
    /// As a prompt's history entry appears (the next prompt starting).
    Between,
    /// At a random moment after the start.
    Random,
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_leaves_no_half_file() {
    let product = release_dir().join(format!(
        "{}odelt_plugin{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        product.is_file(),
        "{} is missing: build the workspace first with `cargo build --release --workspace`",
        product.display()
    );
    let plugins = [product, test_plugin()];
    let seed = std::env::var("ODELT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("crash test seed {seed} (ODELT_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let started = Instant::now();
    let dir = temp_dir("crash");
    let out = dir.join("output");
    let mut accepted: Vec<String> = Vec::new();
    let mut next_k = 0usize;
    let mut submit = |addr: SocketAddr, accepted: &mut Vec<String>| {
        let id = uuid();
        let r = queue_prompt(
            addr,
            json!({"prompt": crash_prompt(next_k), "prompt_id": id}),
        );
        next_k += 1;
        assert_eq!(r.status, 200, "{}", r.text());
        accepted.push(id);
    };

    let mut srv = spawn_server(&dir, &plugins, &[]);
    for _ in 0..10 {
        submit(srv.addr, &mut accepted);
    }
    // 20 kill points: each kind 4 times, in an order that mixes them.
    let kinds = [
        Kill::Sampling,
        Kill::PngWrite,
        Kill::Between,
        Kill::Accepted,
        Kill::Random,
    ];
    let plan: Vec<Kill> = (0..20).map(|i| kinds[(i * 3 + i / 5) % 5]).collect();
    let mut tried: HashMap<Kill, usize> = HashMap::new();
    let mut seen_half = 0usize;
    for kind in plan {
        let addr = srv.addr;
        // Keep work queued so that every kill point has something to hit.
        while get(addr, "/queue").json()["queue_pending"]
            .as_array()
            .map_or(0, |a| a.len())
            < 3
        {
            submit(addr, &mut accepted);
        }
        let hit = match kind {
            Kill::Accepted => {
                submit(addr, &mut accepted);
                true
            }
            Kill::Sampling => {
                poll(T, || running(addr)) && {
                    std::thread::sleep(Duration::from_millis(10 + rng.below(150)));
                    true
                }
            }
            Kill::PngWrite => poll(Duration::from_secs(10), || {
                files_under(&out).iter().any(|p| is_temp(p))
            }),
            Kill::Between => {
                let before = history_len(addr);
                poll(T, || history_len(addr) > before)
            }
            Kill::Random => {
                std::thread::sleep(Duration::from_millis(rng.below(1200)));
                true
            }
        };
        let half_now = files_under(&out).iter().filter(|p| is_temp(p)).count();
        srv.kill9();
        if !hit {
            println!("kill point {kind:?} not reached (queue drained?)");
        }
        *tried.entry(kind).or_default() += 1;
        seen_half += half_now;
        srv = spawn_server(&dir, &plugins, &[]);
        // The restarted server removed any half-written file before serving.
        let half: Vec<PathBuf> = files_under(&out)
            .into_iter()
            .filter(|p| is_temp(p))
            .collect();
        assert!(
            half.is_empty(),
            "half-written files after restart: {half:?}"
        );
        // Progress before the next kill: the prompt put back first (if any) ends, so that no
        // prompt is killed MAX_STARTS times (then it would be given up as a crash loop). When the queue had
        // drained before the kill (a loaded machine finishing everything while the kill point was awaited),
        // there is nothing to finish; a lost prompt is still caught by the final check below.
        let before = history_len(srv.addr);
        let q = get(srv.addr, "/queue").json();
        let left: usize = ["queue_running", "queue_pending"]
            .iter()
            .map(|k| q[*k].as_array().map_or(0, |a| a.len()))
            .sum();
        assert!(
            left == 0 || poll(T, || history_len(srv.addr) > before),
            "no prompt finished after a restart ({left} queued or running)"
        );
    }
    // Everything accepted finishes; then a graceful stop.
    let addr = srv.addr;
    let done = poll(Duration::from_secs(60), || {
        history_len(addr) >= accepted.len() && !running(addr)
    });
    let history = get(addr, "/history").json();
    let queue = get(addr, "/queue").json();
    let status = srv.term();
    assert!(done, "not everything finished: queue {queue}");
    assert!(status.success(), "SIGTERM exit status {status}");

    let history = history.as_object().expect("history object");
    let accepted_set: HashSet<&String> = accepted.iter().collect();
    assert_eq!(accepted_set.len(), accepted.len());
    assert_eq!(
        history.len(),
        accepted.len(),
        "history holds other prompts than those accepted"
    );
    let mut restarted = 0;
    let mut listed = HashSet::new();
    for id in &accepted {
        let e = history
            .get(id)
            .unwrap_or_else(|| panic!("accepted prompt {id} is not in history"));
        assert_eq!(e["status"]["status_str"], "success", "{id}: {e}");
        if e["status"]["restarts"].as_u64().unwrap_or(0) > 0 {
            restarted += 1;
            assert_eq!(
                e["status"]["messages"][0][0], "execution_restarted",
                "{id}: {e}"
            );
        }
        let images = e["outputs"]["2"]["images"].as_array().expect("images");
        assert_eq!(images.len(), 1, "{id}: {e}");
        let rel = Path::new(images[0]["subfolder"].as_str().unwrap())
            .join(images[0]["filename"].as_str().unwrap());
        let (w, h) = decode_png(&out.join(&rel))
            .unwrap_or_else(|e| panic!("{} is not a complete PNG: {e}", rel.display()));
        assert_eq!(h, 1500);
        assert!(w >= 240);
        assert!(listed.insert(rel), "two prompts list one file");
    }
    // Every file in the output folder is a complete PNG (files of prompts killed after their
    // rename, before their history entry, included), and none is a temporary one.
    let all = files_under(&out);
    for p in &all {
        assert!(!is_temp(p), "half-written file left: {}", p.display());
        decode_png(p).unwrap_or_else(|e| panic!("{} is not a complete PNG: {e}", p.display()));
    }
    assert!(
        restarted > 0,
        "no prompt was restarted: the kills missed every run"
    );
    let total: usize = tried.values().sum();
    println!(
        "crash test: {total} SIGKILL points ({tried:?}), {} prompts accepted, all in history once as succeeded \
         ({restarted} after a restart), {} PNGs complete ({} not in history, from runs killed after their rename), \
         {seen_half} half-written files seen at kill time and removed on restart, {:.1} s",
        accepted.len(),
        all.len(),
        all.len() - listed.len(),
        started.elapsed().as_secs_f64()
    );
}

/// An in-process server keeping its state in `state`.
fn persistent(tag: &str, state: &Path) -> TestServer {
    let state = state.to_path_buf();
    server_with(tag, move |c: &mut ServeConfig| c.state_dir = Some(state))
}

fn pending_ids(addr: SocketAddr) -> Vec<(String, Json)> {
    get(addr, "/queue").json()["queue_pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t[1].as_str().unwrap().to_string(), t[0].clone()))
        .collect()
}

#[test]
fn queue_order_numbers_and_history_survive_a_restart() {
    let state = temp_dir("persist-state");
    let srv = persistent("persist-a", &state);
    // A long prompt runs; three wait: number 0.., one sent to the front, one explicit number.
    let long = uuid();
    let r = queue_prompt(
        srv.addr,
        json!({"prompt": slow_prompt(1), "prompt_id": long}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(poll(T, || running(srv.addr)));
    let ids: Vec<String> = (0..4).map(|_| uuid()).collect();
    let bodies = [
        json!({"prompt": image_prompt("a", 4, 1, 0), "prompt_id": ids[0]}),
        json!({"prompt": image_prompt("b", 4, 1, 0), "prompt_id": ids[1]}),
        json!({"prompt": image_prompt("c", 4, 1, 0), "prompt_id": ids[2], "front": true}),
        json!({"prompt": image_prompt("d", 4, 1, 0), "prompt_id": ids[3], "number": 1.5}),
    ];
    for b in bodies {
        let r = queue_prompt(srv.addr, b);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let before = pending_ids(srv.addr);
    assert_eq!(
        before.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        [&ids[2], &ids[0], &ids[3], &ids[1]]
    );
    // A finished prompt in history, then a stop that puts the running one back.
    let done_id = uuid();
    srv.handle.stop();

    let srv = persistent("persist-b", &state);
    assert!(poll(T, || running(srv.addr)));
    let (running_now, pending_now) = {
        let q = get(srv.addr, "/queue").json();
        (q["queue_running"].clone(), pending_ids(srv.addr))
    };
    // The interrupted long prompt runs again first; the others keep their order and numbers.
    assert_eq!(running_now[0][1], long, "{running_now}");
    assert_eq!(pending_now, before);
    let r = queue_prompt(
        srv.addr,
        json!({"prompt": image_prompt("e", 4, 1, 0), "prompt_id": done_id}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["number"],
        json!(4),
        "the number counter continues after a restart"
    );
    assert!(post_json(srv.addr, "/interrupt", &json!({})).status == 200);
    let e = wait_history(srv.addr, &long, T);
    assert_eq!(e["status"]["restarts"], 1, "{e}");
    assert_eq!(e["status"]["messages"][0][0], "execution_restarted");
    for id in ids.iter().chain([&done_id]) {
        let e = wait_history(srv.addr, id, T);
        assert_eq!(e["status"]["status_str"], "success", "{e}");
    }
    // Deleting one history entry is stored too.
    let r = post_json(srv.addr, "/history", &json!({"delete": [ids[0]]}));
    assert_eq!(r.status, 200);
    let hist_before = get(srv.addr, "/history").json();
    srv.handle.stop();

    let srv = persistent("persist-c", &state);
    let hist_after = get(srv.addr, "/history").json();
    assert_eq!(
        hist_after, hist_before,
        "history survives the restart as it was"
    );
    assert!(hist_after.get(&ids[0]).is_none());
    assert!(get(srv.addr, "/queue").json()["queue_pending"]
        .as_array()
        .unwrap()
        .is_empty());
    // A second server on the same state is refused with a clear reason.
    let other = std::panic::catch_unwind(|| persistent("persist-d", &state));
    assert!(other.is_err(), "two servers opened one state directory");
    srv.handle.stop();
}

#[test]
fn history_retention_holds_on_disk() {
    let state = temp_dir("retain-state");
    let run = |tag: &str, n: usize| {
        let st = state.clone();
        let srv = server_with(tag, move |c| {
            c.state_dir = Some(st);
            c.max_history = 3;
        });
        let mut last = Vec::new();
        for k in 0..n {
            let id = uuid();
            let r = queue_prompt(
                srv.addr,
                json!({"prompt": image_prompt(&format!("r{k}"), 4, 1, 0), "prompt_id": id}),
            );
            assert_eq!(r.status, 200);
            wait_history(srv.addr, &id, T);
            last.push(id);
        }
        let h = get(srv.addr, "/history").json();
        srv.handle.stop();
        (last, h)
    };
    let (ids, h) = run("retain-a", 5);
    assert_eq!(h.as_object().unwrap().len(), 3);
    let srv = server_with("retain-b", |c| {
        c.state_dir = Some(state.clone());
        c.max_history = 3;
    });
    let h2 = get(srv.addr, "/history").json();
    let keys: Vec<&String> = h2.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ids[2..].iter().collect::<Vec<_>>(),
        "the newest 3, in order"
    );
    srv.handle.stop();
}

#[test]
fn sigterm_finishes_the_running_prompt_or_keeps_it_queued() {
    let plugins = [test_plugin()];
    let dir = temp_dir("sigterm");
    // Enough grace: the running prompt finishes, the waiting one stays queued.
    let srv = spawn_server(&dir, &plugins, &["--shutdown-grace", "20"]);
    let (a, b) = (uuid(), uuid());
    let short = json!({
        "1": {"class_type": "SlowCount", "inputs": {"steps": 30, "step_ms": 10}},
        "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}
    });
    for id in [&a, &b] {
        let r = queue_prompt(srv.addr, json!({"prompt": short, "prompt_id": id}));
        assert_eq!(r.status, 200);
    }
    assert!(poll(T, || running(srv.addr)));
    let t = Instant::now();
    let st = srv.term();
    assert!(st.success(), "exit status {st}");
    let srv = spawn_server(&dir, &plugins, &["--shutdown-grace", "0"]);
    let e = wait_history(srv.addr, &a, T);
    assert_eq!(e["status"]["status_str"], "success");
    assert!(e["status"].get("restarts").is_none(), "{e}");
    let e = wait_history(srv.addr, &b, T);
    assert_eq!(e["status"]["status_str"], "success");
    println!(
        "graceful stop with a prompt running took {:.2} s",
        t.elapsed().as_secs_f64()
    );
    // No grace: the long prompt is cancelled at once and runs again after the restart.
    let c = uuid();
    let r = queue_prompt(srv.addr, json!({"prompt": slow_prompt(7), "prompt_id": c}));
    assert_eq!(r.status, 200);
    assert!(poll(T, || running(srv.addr)));
    let t = Instant::now();
    let st = srv.term();
    assert!(st.success(), "exit status {st}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let srv = spawn_server(&dir, &plugins, &[]);
    assert!(poll(T, || running(srv.addr)));
    let q = get(srv.addr, "/queue").json();
    assert_eq!(q["queue_running"][0][1], c, "{q}");
    assert!(get(srv.addr, &format!("/history/{c}"))
        .json()
        .get(&c)
        .is_none());
    let r = post_json(srv.addr, "/interrupt", &json!({}));
    assert_eq!(r.status, 200);
    let e = wait_history(srv.addr, &c, T);
    assert_eq!(e["status"]["restarts"], 1, "{e}");
    // --no-persist starts empty and keeps nothing.
    srv.kill9();
    let srv = spawn_server(&dir, &plugins, &["--no-persist"]);
    assert_eq!(history_len(srv.addr), 0);
    srv.kill9();
}
