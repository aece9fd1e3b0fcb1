//! Per-node overhead of the host (dispatch + marshalling) on the test plugin.
//!
//! ```text
//! cargo build --release -p odelt-host && cargo build --release --manifest-path tests/fixtures/Cargo.toml --target-dir target/fixtures
//! target/release/odelt-host-bench [--plugin target/fixtures/release/libodelt_test_plugin.so] [--nodes 2000] [--image 512]
//! ```
//!
//! Prints a table: the raw ABI call, the executor per node (chain run inline, fan-out on the
//! worker pool, fully cached, validation only), and for a tensor node the executor time
//! next to the raw call and a memcpy of the same bytes (a host-side copy would show up as
//! the difference), plus a pointer check that the consumer sees the producer's buffer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use odelt_contract::{ExecContext, NamedValue, Value};
use odelt_host::{CancelToken, Executor, ExecutorConfig, NullSink, PluginSet, Prompt, RunOptions};
use serde_json::{json, Map, Value as Json};

struct Args {
    plugin: PathBuf,
    nodes: usize,
    image: u64,
}

fn args() -> Result<Args> {
    let exe_dir = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut a = Args {
        // The test plugins are built apart from the product (tests/fixtures), into <target>/fixtures/release.
        plugin: exe_dir.join("../fixtures/release").join(format!(
            "{}odelt_test_plugin{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        )),
        nodes: 2000,
        image: 512,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--plugin" => a.plugin = PathBuf::from(v()?),
            "--nodes" => a.nodes = v()?.parse()?,
            "--image" => a.image = v()?.parse()?,
            "-h" | "--help" => {
                println!("usage: odelt-host-bench [--plugin PATH] [--nodes N] [--image SIZE]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// Median of `reps` timings of `f`.
fn median(reps: usize, mut f: impl FnMut() -> Result<Duration>) -> Result<Duration> {
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        t.push(f()?);
    }
    t.sort();
    Ok(t[t.len() / 2])
}

fn us(d: Duration) -> String {
    format!("{:>10.2}", d.as_secs_f64() * 1e6)
}

fn chain(n: usize) -> Prompt {
    let mut m = Map::new();
    m.insert(
        "0".into(),
        json!({"class_type": "IntConstant", "inputs": {"value": 1}}),
    );
    for i in 1..n {
        m.insert(
            i.to_string(),
            json!({"class_type": "Add", "inputs": {"a": [(i - 1).to_string(), 0], "b": 1}}),
        );
    }
    m.insert(
        "out".into(),
        json!({"class_type": "ShowNumber", "inputs": {"value": [(n - 1).to_string(), 0]}}),
    );
    Prompt::from_json(Json::Object(m)).expect("chain prompt")
}

fn fan_out(pairs: usize) -> Prompt {
    let mut m = Map::new();
    for i in 0..pairs {
        m.insert(
            format!("c{i}"),
            json!({"class_type": "IntConstant", "inputs": {"value": i}}),
        );
        m.insert(
            format!("s{i}"),
            json!({"class_type": "ShowNumber", "inputs": {"value": [format!("c{i}"), 0]}}),
        );
    }
    Prompt::from_json(Json::Object(m)).expect("fan-out prompt")
}

fn main() -> Result<()> {
    let a = args()?;
    let mut set = PluginSet::new();
    set.load_file(&a.plugin).with_context(|| {
        format!(
            "loading {} (build it with cargo build --release --manifest-path tests/fixtures/Cargo.toml --target-dir target/fixtures)",
            a.plugin.display()
        )
    })?;
    let plugins = Arc::new(set);
    let plugin = &plugins.plugins()[0];
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let exec = |cache_runs| {
        Executor::new(
            plugins.clone(),
            ExecutorConfig {
                workers,
                cache_runs,
                output_dir: std::env::temp_dir(),
                ..ExecutorConfig::default()
            },
        )
    };
    let opts = RunOptions::default();
    let cancel = CancelToken::new();
    let mut rows: Vec<(String, Duration, String)> = Vec::new();

    // 1. Raw ABI call: Add with two INT inputs.
    let ctx = ExecContext::detached();
    let inputs = [NamedValue::new("a", 2i64), NamedValue::new("b", 3i64)];
    let calls = 200_000u32;
    let raw = median(5, || {
        let t = Instant::now();
        for _ in 0..calls {
            let out = plugin
                .execute("Add", &inputs, &ctx)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            std::hint::black_box(out);
        }
        Ok(t.elapsed() / calls)
    })?;
    rows.push((
        "raw ABI call (Add, 2 INT in, 1 out)".into(),
        raw,
        format!("median of 5 x {calls}"),
    ));

    // 2. Executor, chain of N scalar nodes, no cache (each node runs inline on the scheduler).
    let p = chain(a.nodes);
    let n = a.nodes + 1;
    let uncached = exec(0);
    let chain_t = median(5, || {
        let t = Instant::now();
        let out = uncached.run(&p, &opts, &NullSink, &cancel)?;
        let e = t.elapsed();
        assert_eq!(
            out.output("out").map(|o| o.ui_text()),
            Some(vec![a.nodes.to_string()])
        );
        Ok(e / n as u32)
    })?;
    rows.push((
        format!("executor, chain of {n} scalar nodes, per node"),
        chain_t,
        "validate+plan+keys+call+events, no cache".into(),
    ));

    // 3. Fan-out: independent pairs on the worker pool.
    let pairs = a.nodes / 2;
    let fp = fan_out(pairs);
    let fan_t = median(5, || {
        let t = Instant::now();
        uncached.run(&fp, &opts, &NullSink, &cancel)?;
        Ok(t.elapsed() / (2 * pairs) as u32)
    })?;
    rows.push((
        format!(
            "executor, {} independent nodes ({workers} workers), per node",
            2 * pairs
        ),
        fan_t,
        "thread hand-off included".into(),
    ));

    // 4. Fully cached re-run and validation only.
    let cached = exec(1);
    cached.run(&p, &opts, &NullSink, &cancel)?;
    let cached_t = median(5, || {
        let t = Instant::now();
        let out = cached.run(&p, &opts, &NullSink, &cancel)?;
        assert!(out.executed.is_empty());
        Ok(t.elapsed() / n as u32)
    })?;
    rows.push((
        "executor, same chain fully cached, per node".into(),
        cached_t,
        "validation + cache lookup".into(),
    ));
    let val_t = median(5, || {
        let t = Instant::now();
        cached
            .validate(&p, &opts)
            .map_err(|v| anyhow::anyhow!("{}", v.summary()))?;
        Ok(t.elapsed() / n as u32)
    })?;
    rows.push(("validation only, per node".into(), val_t, String::new()));

    // 5. Tensors: [1, S, S, 3] f32 image through InvertImage.
    let s = a.image;
    let bytes = (s * s * 3 * 4) as usize;
    let img = match plugin
        .execute(
            "GradientImage",
            &[
                NamedValue::new("width", s as i64),
                NamedValue::new("height", s as i64),
            ],
            &ctx,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .values
        .into_vec()
        .remove(0)
    {
        Value::Tensor(t) => t,
        other => bail!("GradientImage returned {other:?}"),
    };
    let raw_inv = median(9, || {
        let t = Instant::now();
        let out = plugin
            .execute(
                "InvertImage",
                &[NamedValue::new("image", img.clone())],
                &ctx,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        std::hint::black_box(out);
        Ok(t.elapsed())
    })?;
    let tensor_prompt = Prompt::from_json(json!({
        "1": {"class_type": "GradientImage", "inputs": {"width": s, "height": s}},
        "2": {"class_type": "InvertImage", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "TensorAddress", "inputs": {"image": ["1", 0]}},
        "4": {"class_type": "ShowNumber", "inputs": {"value": ["3", 0]}},
        "5": {"class_type": "ShowNumber", "inputs": {"value": ["1", 1]}},
        "6": {"class_type": "ImageMean", "inputs": {"image": ["2", 0]}},
        "7": {"class_type": "ShowNumber", "inputs": {"value": ["6", 0]}}
    }))?;
    let tensor_exec = exec(1);
    let first = tensor_exec.run(&tensor_prompt, &opts, &NullSink, &cancel)?;
    let same_buffer =
        first.output("4").map(|o| o.ui_text()) == first.output("5").map(|o| o.ui_text());
    let mut in_exec = Vec::new();
    for _ in 0..9 {
        let rec = std::sync::Mutex::new(None);
        let sink = |e: &odelt_host::Event| {
            if let odelt_host::EventKind::NodeDone {
                node_id,
                elapsed_us,
                ..
            } = &e.kind
            {
                if node_id == "2" {
                    *rec.lock().unwrap() = Some(Duration::from_micros(*elapsed_us));
                }
            }
        };
        // Everything re-runs; NodeDone gives InvertImage's time inside the executor.
        tensor_exec.free_cache();
        tensor_exec.run(&tensor_prompt, &opts, &sink, &cancel)?;
        let got = *rec.lock().unwrap();
        if let Some(d) = got {
            in_exec.push(d);
        }
    }
    in_exec.sort();
    let exec_inv = in_exec.get(in_exec.len() / 2).copied().unwrap_or_default();
    let src = vec![1u8; bytes];
    let copy_t = median(9, || {
        let t = Instant::now();
        let c = std::hint::black_box(src.clone());
        let e = t.elapsed();
        drop(c);
        Ok(e)
    })?;
    rows.push((
        format!(
            "InvertImage {s}x{s} ({:.1} MB) raw ABI call",
            bytes as f64 / 1e6
        ),
        raw_inv,
        "plugin reads borrowed, writes 1 new buffer".into(),
    ));
    rows.push((
        format!("InvertImage {s}x{s} inside the executor"),
        exec_inv,
        "same call + host marshalling".into(),
    ));
    rows.push((
        format!(
            "memcpy of {:.1} MB (what one host copy would add)",
            bytes as f64 / 1e6
        ),
        copy_t,
        String::new(),
    ));

    println!(
        "odelt host overhead benchmark (plugin {}, {workers} workers)",
        a.plugin.display()
    );
    println!("{:<58} {:>10}  notes", "measurement", "µs");
    println!("{}", "-".repeat(110));
    for (name, d, note) in &rows {
        println!("{:<58} {}  {}", name, us(*d), note);
    }
    println!("{}", "-".repeat(110));
    let target = Duration::from_micros(50);
    println!(
        "scalar node overhead in the executor: {:.2} µs per node (target < 50 µs): {}",
        chain_t.as_secs_f64() * 1e6,
        if chain_t < target {
            "OK"
        } else {
            "OVER TARGET"
        }
    );
    println!(
        "tensor bytes copied by the host: {} (consumer saw the producer's buffer: {}); executor - raw call for the tensor node: {:+.1} µs vs memcpy {:.1} µs",
        if same_buffer { 0 } else { 1 },
        same_buffer,
        (exec_inv.as_secs_f64() - raw_inv.as_secs_f64()) * 1e6,
        copy_t.as_secs_f64() * 1e6
    );
    Ok(())
}
