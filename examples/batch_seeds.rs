//! Batch runs from a script: one workflow, many seeds (or labels), with progress.
//!
//! ```text
//! cargo build --release --manifest-path tests/fixtures/Cargo.toml --target-dir target/fixtures
//! cargo run --release -p odelt-host --example batch_seeds -- \
//!     [--plugins target/fixtures/release/libodelt_test_plugin.so] [--workflow WF.json --target NODE.INPUT] [--count N]
//! ```
//!
//! Without `--workflow` it builds a small workflow in code from the test plugin's nodes
//! (`IntConstant(seed) -> SlowCount -> Add -> ShowNumber`) and runs it for seeds 0..N: the
//! SlowCount node does not depend on the seed, so after the first run it comes from cache and
//! only the seed-dependent nodes re-run. With `--workflow`, every seed is written to
//! `--target` (e.g. `3.seed`) of that file and the UI outputs of each run are printed.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use odelt_host::{
    Batch, CancelToken, Event, EventKind, Executor, ExecutorConfig, PluginSearch, RunOptions,
    Workflow,
};
use serde_json::json;

struct Args {
    plugins: Vec<PathBuf>,
    workflow: Option<PathBuf>,
    target: Option<String>,
    count: u64,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        plugins: Vec::new(),
        workflow: None,
        target: None,
        count: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--plugins" => a.plugins.push(PathBuf::from(val()?)),
            "--workflow" => a.workflow = Some(PathBuf::from(val()?)),
            "--target" => a.target = Some(val()?),
            "--count" => a.count = val()?.parse().context("--count must be a number")?,
            "-h" | "--help" => {
                println!("usage: batch_seeds [--plugins PATH]... [--workflow WF.json --target NODE.INPUT] [--count N]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// The built-in demo workflow (test plugin nodes); returns it and the seed target.
fn demo_workflow() -> (Workflow, String) {
    let mut wf = Workflow::new();
    let seed = wf.add("IntConstant", &[("value", json!(0))]);
    let slow = wf.add("SlowCount", &[("steps", json!(5)), ("step_ms", json!(20))]);
    let sum = wf.add(
        "Add",
        &[
            ("a", Workflow::link_value(&seed, 0)),
            ("b", Workflow::link_value(&slow, 0)),
        ],
    );
    wf.add("ShowNumber", &[("value", Workflow::link_value(&sum, 0))]);
    (wf, format!("{seed}.value"))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let plugins = PluginSearch::from_env(args.plugins.clone()).load()?;
    if plugins.plugins().is_empty() {
        bail!("no plugins found; pass --plugins target/fixtures/release/libodelt_test_plugin.so");
    }
    let exec = Executor::new(Arc::new(plugins), ExecutorConfig::default());

    let (wf, target) = match (&args.workflow, &args.target) {
        (Some(path), Some(target)) => (Workflow::load(path)?, target.clone()),
        (Some(_), None) => {
            bail!("--workflow needs --target NODE.INPUT (the input that receives the seed)")
        }
        _ => demo_workflow(),
    };

    let batch = Batch::seeds(&target, 0..args.count)?;
    let cancel = CancelToken::new();
    let on_event = |ev: &Event| match &ev.kind {
        EventKind::ExecutionCached { nodes, to_execute } => {
            eprintln!(
                "[{}] cached {:?}, running {to_execute} node(s)",
                ev.prompt_id, nodes
            )
        }
        EventKind::Progress {
            node_id,
            value,
            max,
            ..
        } => {
            eprintln!("[{}] node {node_id}: {value}/{max}", ev.prompt_id)
        }
        _ => {}
    };
    let results = batch.run(&exec, &wf, &RunOptions::default(), &on_event, &cancel);
    let mut failed = 0;
    for r in &results {
        match &r.outcome {
            Ok(o) => println!(
                "{}: outputs {} ({} ran, {} cached)",
                r.label,
                o.ui_outputs(),
                o.executed.len(),
                o.cached.len()
            ),
            Err(e) => {
                failed += 1;
                println!("{}: failed: {e}", r.label);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} runs failed", results.len());
    }
    Ok(())
}
