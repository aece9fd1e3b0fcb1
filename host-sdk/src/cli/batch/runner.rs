//! Running one shard: plan the items, skip the journaled ones, run the rest one by one, each
//! written to its staging folder and moved into `items/<key>/` only when complete.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use odelt_host::batch::{canonical_json, stable_hash};
use odelt_host::{
    BatchItem, BatchRunError, CancelToken, Executor, NullSink, RunError, RunOptions, Workflow,
};
use serde_json::{json, Value as Json};

use super::items::{self, ItemsError, Shard};
use super::store::{self, io, BatchInfo, Done, ItemLine, Journal, Store, StoreError};
use crate::cli::{
    fail, print_warnings, ExecArgs, PluginArgs, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_INVALID,
    EXIT_NODE_ERROR,
};

/// Arguments of `odelt batch WORKFLOW`.
#[derive(Debug, Args)]
pub struct RunBatchArgs {
    /// The workflow: ComfyUI API-format JSON (or a POST /prompt body).
    #[arg(value_name = "WORKFLOW.json", required = true)]
    pub workflow: Option<PathBuf>,
    /// Manifest of items: .jsonl (one {"NODE.INPUT": value} object or ["NODE.INPUT=VALUE", ...]
    /// array per line) or .csv (a header of NODE.INPUT columns, one item per row).
    #[arg(long, value_name = "FILE")]
    pub items: Option<PathBuf>,
    /// A sweep axis: NODE.INPUT=A..B (integers, both ends included) or NODE.INPUT=V1,V2,...
    /// (repeatable; the items are the product of the axes, times the manifest's rows).
    #[arg(long = "sweep", value_name = "NODE.INPUT=VALUES")]
    pub sweep: Vec<String>,
    /// Override an input of the workflow for every item: NODE.INPUT=VALUE (repeatable).
    #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
    pub set: Vec<String>,
    /// This process's shard, I/N (default: ODELT_SHARD, Slurm's SLURM_ARRAY_TASK_ID/COUNT,
    /// a Kubernetes Indexed Job's JOB_COMPLETION_INDEX/JOB_COMPLETIONS, else 0/1).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Give every item that does not set it a seed derived from the item: NODE.INPUT.
    #[arg(long = "item-seed", value_name = "NODE.INPUT")]
    pub item_seed: Option<String>,
    /// Go on after an item fails (it stays unfinished; the exit status is still 4).
    #[arg(long)]
    pub keep_going: bool,
    /// Do not fsync outputs and journal lines (faster; a machine crash may then lose
    /// journaled items, a killed process still does not).
    #[arg(long)]
    pub no_sync: bool,
    /// Print this shard's items (JSONL: index, key, overrides) and exit; loads no plugins.
    #[arg(long)]
    pub list: bool,
    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub plugins: PluginArgs,
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// Why a batch could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The workflow file.
    #[error("cannot use workflow {path}: {source}")]
    Workflow {
        /// The file.
        path: PathBuf,
        /// The error.
        source: odelt_host::WorkflowError,
    },
    /// A `--set`.
    #[error("--set {spec}: {source}")]
    Set {
        /// The flag's value.
        spec: String,
        /// The error.
        source: odelt_host::WorkflowError,
    },
    /// Items, sweep or shard.
    #[error(transparent)]
    Items(#[from] ItemsError),
    /// The output directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An override names a node the workflow lacks.
    #[error("{target}: no node '{node}' in the workflow")]
    NoSuchNode {
        /// The override target.
        target: String,
        /// The node.
        node: String,
    },
    /// Nothing in the workflow writes files.
    #[error("the workflow has no node with a literal filename_prefix (SaveImage, SaveLatent): a batch item's outputs are the files those write")]
    NoOutputs,
    /// A file-writing node whose prefix is computed.
    #[error("node {0}: filename_prefix is linked to another node; a batch needs it literal (it sets it per item)")]
    LinkedPrefix(String),
}

/// A planned item: its key (from the manifest's overrides) and what is applied.
struct Planned {
    key: String,
    item: BatchItem,
}

/// Nodes whose files are an item's outputs: (node id, file base name).
fn file_nodes(wf: &Workflow) -> Result<Vec<(String, String)>, BatchError> {
    let mut out = Vec::new();
    for (id, node) in wf.nodes() {
        match node.get("inputs").and_then(|i| i.get("filename_prefix")) {
            Some(Json::String(p)) => {
                let base = p
                    .rsplit(['/', '\\'])
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "._-".contains(c) {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect::<String>();
                let base = if base.is_empty() || base.starts_with('.') {
                    format!("out{base}")
                } else {
                    base
                };
                let id_safe: String = id
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                out.push((id.clone(), format!("{id_safe}-{base}")));
            }
            Some(Json::Array(_)) => return Err(BatchError::LinkedPrefix(id.clone())),
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(BatchError::NoOutputs);
    }
    Ok(out)
}

/// The seed `--item-seed` gives an item: from its key, below 2^53 (exact in JSON everywhere).
pub fn item_seed(key: &str) -> u64 {
    stable_hash(format!("seed:{key}").as_bytes()) >> 11
}

struct Plan {
    base: Workflow,
    items: Vec<Planned>,
    outputs: Vec<(String, String)>,
    info: BatchInfo,
}

fn plan(a: &RunBatchArgs) -> Result<Plan, BatchError> {
    let path = a.workflow.clone().unwrap_or_default();
    let mut base = Workflow::load(&path).map_err(|source| BatchError::Workflow { path, source })?;
    for s in &a.set {
        base.apply_override(s).map_err(|source| BatchError::Set {
            spec: s.clone(),
            source,
        })?;
    }
    let rows = match &a.items {
        Some(p) => items::read_manifest(p)?,
        None => Vec::new(),
    };
    let axes = a
        .sweep
        .iter()
        .map(|s| items::parse_sweep(s))
        .collect::<Result<Vec<_>, _>>()?;
    let expanded = items::expand(rows, &axes)?;
    let mut targets: Vec<&str> = expanded
        .iter()
        .flat_map(|i| i.overrides.iter().map(|(t, _)| t.as_str()))
        .chain(a.item_seed.as_deref())
        .collect();
    targets.sort_unstable();
    targets.dedup();
    for t in targets {
        let node = t.split_once('.').map_or(t, |(n, _)| n);
        if !t.contains('.') {
            return Err(ItemsError::Sweep {
                spec: t.to_string(),
                reason: "expected NODE.INPUT".into(),
            }
            .into());
        }
        if !base.nodes().contains_key(node) {
            return Err(BatchError::NoSuchNode {
                target: t.to_string(),
                node: node.to_string(),
            });
        }
    }
    let outputs = file_nodes(&base)?;
    let items: Vec<Planned> = expanded
        .into_iter()
        .map(|mut item| {
            let key = item.key();
            if let Some(t) = &a.item_seed {
                if !item.overrides.iter().any(|(o, _)| o == t) {
                    item.overrides.push((t.clone(), json!(item_seed(&key))));
                }
            }
            Planned { key, item }
        })
        .collect();
    let keys: Vec<&str> = items.iter().map(|p| p.key.as_str()).collect();
    let fp_src = json!({
        "workflow": canonical_json(&base.to_json()),
        "extra_pnginfo": base.extra_pnginfo.as_ref().map(canonical_json),
        "keys": keys,
        "item_seed": a.item_seed,
    });
    let fingerprint = format!(
        "{:016x}",
        stable_hash(
            serde_json::to_string(&fp_src)
                .unwrap_or_default()
                .as_bytes()
        )
    );
    let info = BatchInfo {
        format: 1,
        fingerprint,
        items: items.len(),
        item_seed: a.item_seed.clone(),
        workflow: base.to_json(),
    };
    Ok(Plan {
        base,
        items,
        outputs,
        info,
    })
}

fn item_line(index: usize, p: &Planned) -> ItemLine {
    ItemLine {
        index,
        key: p.key.clone(),
        overrides: items::overrides_json(&p.item),
    }
}

/// Shows `shard I/N [bar] done/total items/s` on a terminal, or a log line every 10 s.
struct ShardProgress {
    bar: Option<ProgressBar>,
    quiet: bool,
    last: Instant,
    start: Instant,
    shard: Shard,
    total: u64,
}

impl ShardProgress {
    fn new(quiet: bool, shard: Shard, total: u64, done: u64) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} items ({per_sec}, eta {eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            b.set_style(style);
            b.set_prefix(format!("shard {shard}"));
            b.set_position(done);
            b
        });
        ShardProgress {
            bar,
            quiet,
            last: Instant::now(),
            start: Instant::now(),
            shard,
            total,
        }
    }

    fn update(&mut self, done: u64, ran: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        } else if !self.quiet && self.last.elapsed() >= Duration::from_secs(10) {
            self.last = Instant::now();
            let rate = ran as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "shard {}: {done}/{} items done ({rate:.2} items/s)",
                self.shard, self.total
            );
        }
    }

    fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Moves a complete staging folder into place: files synced (when asked), one rename, the
/// parent folder synced. Returns the files relative to the output directory.
fn commit(store: &Store, key: &str, staging: &Path, sync: bool) -> Result<Vec<String>, StoreError> {
    std::fs::create_dir_all(staging).map_err(io("creating", staging))?;
    let files = store::list_files(staging)?;
    if sync {
        for f in &files {
            let p = staging.join(f);
            std::fs::File::open(&p)
                .and_then(|h| h.sync_all())
                .map_err(io("syncing", &p))?;
        }
    }
    let dest = store.item_dir(key);
    std::fs::rename(staging, &dest).map_err(io("renaming into", &dest))?;
    if sync {
        if let Some(parent) = dest.parent() {
            std::fs::File::open(parent)
                .and_then(|h| h.sync_all())
                .map_err(io("syncing", parent))?;
        }
    }
    Ok(files
        .into_iter()
        .map(|f| format!("{}/{key}/{f}", store::ITEMS_DIR))
        .collect())
}

fn remove_if_present(p: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", p)(e)),
    }
}

/// Runs `odelt batch WORKFLOW ...`.
pub fn run(a: RunBatchArgs) -> ExitCode {
    let started = Instant::now();
    let p = match plan(&a) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_FAILURE, &e.to_string(), None),
    };
    let (shard, source) = match &a.shard {
        Some(s) => match Shard::parse(s) {
            Ok(s) => (s, "--shard"),
            Err(e) => return fail(EXIT_FAILURE, &e.to_string(), None),
        },
        None => match Shard::from_env(|k| std::env::var(k).ok()) {
            Ok(s) => s,
            Err(e) => return fail(EXIT_FAILURE, &e.to_string(), None),
        },
    };
    let mine: Vec<usize> = (0..p.items.len()).filter(|k| shard.owns(*k)).collect();
    if a.list {
        eprintln!(
            "shard {shard} (from {source}): {} of {} items",
            mine.len(),
            p.items.len()
        );
        for &k in &mine {
            println!(
                "{}",
                serde_json::to_string(&item_line(k, &p.items[k])).unwrap_or_default()
            );
        }
        return ExitCode::SUCCESS;
    }
    let store = Store::new(&a.exec.output_dir);
    let lines: Vec<ItemLine> = p
        .items
        .iter()
        .enumerate()
        .map(|(k, it)| item_line(k, it))
        .collect();
    let prepared = store
        .prepare(&p.info, &lines)
        .and_then(|()| Journal::open(&store.journal_path(shard), !a.no_sync))
        .and_then(|j| Ok((j, store.done_by_key(&lines)?)));
    let (mut journal, done) = match prepared {
        Ok(x) => x,
        Err(e) => return fail(EXIT_FAILURE, &e.to_string(), None),
    };
    let todo: Vec<usize> = mine
        .iter()
        .copied()
        .filter(|k| !done.contains_key(&p.items[*k].key))
        .collect();
    let skipped = mine.len() - todo.len();
    if let Err(e) = store.write_state(shard, "running", None) {
        return fail(EXIT_FAILURE, &e.to_string(), None);
    }
    if !a.quiet {
        eprintln!(
            "shard {shard} (from {source}): {} of {} items, {skipped} already done, {} to run",
            mine.len(),
            p.items.len(),
            todo.len()
        );
    }

    let mut stats = Stats::default();
    let outcome = if todo.is_empty() {
        Ok(())
    } else {
        match a.exec.load_plugins(&a.plugins) {
            Err(e) => Err((EXIT_FAILURE, e, None)),
            Ok(plugins) => {
                let exec = Executor::new(plugins.clone(), a.exec.executor_config());
                let cancel = CancelToken::new();
                let handler = cancel.clone();
                let _ = ctrlc::set_handler(move || {
                    if handler.is_cancelled() {
                        eprintln!("error: interrupted again, exiting");
                        std::process::exit(EXIT_INTERRUPTED as i32);
                    }
                    handler.cancel();
                });
                let mut progress =
                    ShardProgress::new(a.quiet, shard, mine.len() as u64, skipped as u64);
                let ctx = RunCtx {
                    plan: &p,
                    store: &store,
                    exec: &exec,
                    cancel: &cancel,
                    shard,
                    sync: !a.no_sync,
                    keep_going: a.keep_going,
                };
                let r = run_items(
                    &ctx,
                    &todo,
                    &mut journal,
                    &mut stats,
                    &mut progress,
                    skipped,
                );
                progress.finish();
                print_warnings(&plugins);
                r
            }
        }
    };
    let failed_msg = match &outcome {
        Ok(()) if stats.failed == 0 => None,
        Ok(()) => Some(format!("{} item(s) failed", stats.failed)),
        Err((_, m, _)) => Some(m.clone()),
    };
    let state = if failed_msg.is_none() {
        "done"
    } else {
        "failed"
    };
    let _ = store.write_state(shard, state, failed_msg.clone());
    let loop_s = stats.loop_time.as_secs_f64();
    let ran = stats.ran as f64;
    let summary = json!({
        "shard": shard.to_string(),
        "shard_from": source,
        "items_total": p.items.len(),
        "items_in_shard": mine.len(),
        "skipped_done": skipped,
        "ran": stats.ran,
        "failed": stats.failed,
        "seconds": started.elapsed().as_secs_f64(),
        "items_per_s": if loop_s > 0.0 { ran / loop_s } else { 0.0 },
        "run_ms_per_item": if ran > 0.0 { stats.run_time.as_secs_f64() * 1e3 / ran } else { 0.0 },
        "commit_ms_per_item": if ran > 0.0 { stats.commit_time.as_secs_f64() * 1e3 / ran } else { 0.0 },
        "synced": !a.no_sync,
    });
    println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    match outcome {
        Err((code, msg, details)) => fail(code, &msg, details.as_deref()),
        Ok(()) if stats.failed > 0 => fail(
            EXIT_NODE_ERROR,
            &format!(
                "{} item(s) of shard {shard} failed; rerun the shard to retry them",
                stats.failed
            ),
            None,
        ),
        Ok(()) => ExitCode::SUCCESS,
    }
}

#[derive(Default)]
struct Stats {
    ran: usize,
    failed: usize,
    run_time: Duration,
    commit_time: Duration,
    loop_time: Duration,
}

struct RunCtx<'a> {
    plan: &'a Plan,
    store: &'a Store,
    exec: &'a Executor,
    cancel: &'a CancelToken,
    shard: Shard,
    sync: bool,
    keep_going: bool,
}

type Fatal = (u8, String, Option<String>);

fn run_items(
    c: &RunCtx<'_>,
    todo: &[usize],
    journal: &mut Journal,
    stats: &mut Stats,
    progress: &mut ShardProgress,
    skipped: usize,
) -> Result<(), Fatal> {
    let loop_start = Instant::now();
    let store_err = |e: StoreError| (EXIT_FAILURE, e.to_string(), None);
    for &k in todo {
        if c.cancel.is_cancelled() {
            break;
        }
        let planned = &c.plan.items[k];
        let key = &planned.key;
        let staging = c.store.staging_root().join(key);
        // Leftovers of an attempt that was killed: half-written files, or a finished folder
        // whose journal line was never written. The item is simply done again.
        remove_if_present(&staging).map_err(store_err)?;
        remove_if_present(&c.store.item_dir(key)).map_err(store_err)?;
        let mut wf = planned
            .item
            .apply(&c.plan.base)
            .map_err(|e| (EXIT_FAILURE, format!("item {k}: {e}"), None))?;
        let rel = Store::staging_rel(key);
        for (node, name) in &c.plan.outputs {
            wf.set(node, "filename_prefix", json!(format!("{rel}/{name}")))
                .map_err(|e| (EXIT_FAILURE, e.to_string(), None))?;
        }
        let opts = RunOptions {
            prompt_id: Some(format!("batch-{key}")),
            ..RunOptions::default()
        };
        let t0 = Instant::now();
        let r = wf.run(c.exec, &opts, &NullSink, c.cancel);
        stats.run_time += t0.elapsed();
        match r {
            Ok(outcome) => {
                let run_ms = outcome.elapsed.as_secs_f64() * 1e3;
                let t1 = Instant::now();
                let files = commit(c.store, key, &staging, c.sync).map_err(store_err)?;
                journal
                    .append(&Done {
                        key: key.clone(),
                        index: k,
                        files,
                        shard: c.shard.to_string(),
                        run_ms,
                    })
                    .map_err(store_err)?;
                stats.commit_time += t1.elapsed();
                stats.ran += 1;
            }
            Err(BatchRunError::Run(RunError::Interrupted { .. })) => {
                return Err((
                    EXIT_INTERRUPTED,
                    format!("interrupted at item {k} ({key}); rerun the shard to go on"),
                    None,
                ))
            }
            Err(BatchRunError::Run(RunError::Validation(v))) => {
                return Err((
                    EXIT_INVALID,
                    format!(
                        "item {k} ({}) failed validation: {}",
                        planned.item.label,
                        v.summary()
                    ),
                    Some(serde_json::to_string_pretty(&v.to_json()).unwrap_or_default()),
                ))
            }
            Err(e) => {
                let _ = remove_if_present(&staging);
                stats.failed += 1;
                let msg = format!("item {k} ({}) failed: {e}", planned.item.label);
                if !c.keep_going {
                    return Err((EXIT_NODE_ERROR, msg, None));
                }
                progress.println(&format!("error: {msg}"));
            }
        }
        stats.loop_time = loop_start.elapsed();
        progress.update((skipped + stats.ran) as u64, stats.ran as u64);
    }
    stats.loop_time = loop_start.elapsed();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_nodes_get_item_names() {
        let wf = Workflow::from_json(json!({
            "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "fashion/gen erate"}},
            "7": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": ".hidden"}},
            "5": {"class_type": "X", "inputs": {}},
        }))
        .unwrap();
        let mut n = file_nodes(&wf).unwrap();
        n.sort();
        assert_eq!(
            n,
            vec![
                ("6".into(), "6-gen_erate".into()),
                ("7".into(), "7-out.hidden".into())
            ]
        );
        let none = Workflow::from_json(json!({"1": {"class_type": "X", "inputs": {}}})).unwrap();
        assert!(matches!(file_nodes(&none), Err(BatchError::NoOutputs)));
        let linked = Workflow::from_json(
            json!({"1": {"class_type": "S", "inputs": {"filename_prefix": ["2", 0]}},
                                               "2": {"class_type": "X", "inputs": {}}}),
        )
        .unwrap();
        assert!(matches!(
            file_nodes(&linked),
            Err(BatchError::LinkedPrefix(_))
        ));
        assert!(item_seed("a") < (1u64 << 53));
        assert_ne!(item_seed("a"), item_seed("b"));
    }
}
