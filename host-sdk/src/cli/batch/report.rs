//! `odelt batch status` (done / total per shard) and `odelt batch merge` (one index of every
//! item's outputs; optionally the images gathered into `.npz` files).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value as Json};

use super::items::Shard;
use super::npz::{self, Array, NpzError};
use super::store::{self, pid_alive, Done, ItemLine, Store, StoreError};
use crate::cli::{fail, EXIT_FAILURE};

/// Exit status of `status` when some item is not finished, and of `merge` when it refuses
/// an incomplete run.
pub const EXIT_INCOMPLETE: u8 = 5;

/// Arguments of `odelt batch status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The batch's output directory.
    #[arg(value_name = "OUTPUT_DIR")]
    dir: PathBuf,
    /// The number of shards to report (default: the count the journals were written for).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `odelt batch merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The batch's output directory.
    #[arg(value_name = "OUTPUT_DIR")]
    dir: PathBuf,
    /// Where to write the index (default: OUTPUT_DIR/index.jsonl).
    #[arg(long, value_name = "FILE")]
    index: Option<PathBuf>,
    /// Index the finished items even when some are not (they are left out and counted).
    #[arg(long)]
    allow_incomplete: bool,
    /// Also gather every PNG into OUTPUT_DIR/merged/all.npz (images uint8 [N,H,W,C],
    /// item_index int64 [N], and one int64 [N] array per integer-valued override).
    #[arg(long)]
    npz: bool,
    /// Gather into one .npz per value of this override instead (e.g. 2.active_blocks:
    /// merged/2.active_blocks=4.npz); repeatable for several settings at once. Implies --npz.
    #[arg(long = "npz-by", value_name = "NODE.INPUT")]
    npz_by: Vec<String>,
}

/// Per shard: (items, done, journal present).
struct ShardRow {
    shard: Shard,
    total: usize,
    done: usize,
    journal: bool,
    state: String,
    staging: Vec<String>,
}

fn shard_rows(
    store: &Store,
    items: &[ItemLine],
    count: usize,
    done: &HashMap<String, Done>,
) -> Vec<ShardRow> {
    let staging: Vec<String> = std::fs::read_dir(store.staging_root())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let pos: HashMap<&str, usize> = items.iter().map(|i| (i.key.as_str(), i.index)).collect();
    (0..count)
        .map(|index| {
            let shard = Shard { index, count };
            let total = (0..items.len()).filter(|k| shard.owns(*k)).count();
            let fin = (0..items.len())
                .filter(|k| shard.owns(*k) && done.contains_key(&items[*k].key))
                .count();
            let journal = store.journal_path(shard).exists();
            let st = store.read_state(shard);
            let state = match (&st, fin == total) {
                (_, true) => "complete".to_string(),
                (None, false) if !journal => "not started".to_string(),
                (None, false) => "incomplete".to_string(),
                (Some(s), false) => match s.state.as_str() {
                    "running" if s.host == store::host_name() => match pid_alive(s.pid) {
                        Some(false) => {
                            format!("interrupted (pid {} on {} is gone: killed?)", s.pid, s.host)
                        }
                        _ => format!("running (pid {} on {})", s.pid, s.host),
                    },
                    "running" => format!("running on {} (pid {}), or stopped there", s.host, s.pid),
                    "failed" => format!(
                        "failed: {}",
                        s.error.clone().unwrap_or_else(|| "unknown".into())
                    ),
                    other => format!("incomplete (last state {other})"),
                },
            };
            let staging = staging
                .iter()
                .filter(|k| pos.get(k.as_str()).is_some_and(|p| shard.owns(*p)))
                .cloned()
                .collect();
            ShardRow {
                shard,
                total,
                done: fin,
                journal,
                state,
                staging,
            }
        })
        .collect()
}

/// Runs `odelt batch status`.
pub fn status(a: StatusArgs) -> ExitCode {
    let store = Store::new(&a.dir);
    let loaded = store
        .read_info()
        .and_then(|_| store.read_items())
        .and_then(|items| Ok((store.done_by_key(&items)?, store.read_journals()?, items)));
    let (done, journals, items) = match loaded {
        Ok(x) => x,
        Err(e) => return fail(EXIT_FAILURE, &e.to_string(), None),
    };
    let mut counts: Vec<usize> = journals.iter().map(|(s, _)| s.count).collect();
    counts.sort_unstable();
    counts.dedup();
    let count = a
        .shards
        .or_else(|| counts.last().copied())
        .unwrap_or(1)
        .max(1);
    let rows = shard_rows(&store, &items, count, &done);
    let finished = items.iter().filter(|i| done.contains_key(&i.key)).count();
    let incomplete: Vec<usize> = rows
        .iter()
        .filter(|r| r.done < r.total)
        .map(|r| r.shard.index)
        .collect();
    if a.json {
        let shards: Vec<Json> = rows
            .iter()
            .map(|r| {
                json!({"shard": r.shard.to_string(), "done": r.done, "total": r.total,
                       "state": r.state, "journal": r.journal, "staging": r.staging})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dir": a.dir, "items": items.len(), "done": finished, "shards": shards,
                "incomplete_shards": incomplete, "journal_shard_counts": counts,
            }))
            .unwrap_or_default()
        );
    } else {
        println!(
            "{}: {finished}/{} items done, {count} shard(s)",
            a.dir.display(),
            items.len()
        );
        if counts.len() > 1 {
            println!("note: journals were written for several shard counts {counts:?}; showing {count} (items count as done whichever shard finished them)");
        }
        println!("{:>11}  {:>15}  state", "shard", "done/total");
        for r in &rows {
            let dt = format!("{}/{}", r.done, r.total);
            let staging = if r.staging.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} item(s) left half-written (redone on rerun)",
                    r.staging.len()
                )
            };
            println!(
                "{:>11}  {dt:>15}  {}{staging}",
                r.shard.to_string(),
                r.state
            );
        }
        if incomplete.is_empty() {
            println!(
                "complete: `odelt batch merge {}` writes the index",
                a.dir.display()
            );
        } else {
            println!(
                "incomplete shards: {} (rerun them with the same command: finished items are skipped)",
                incomplete
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
    }
    if finished == items.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INCOMPLETE)
    }
}

/// Why a merge failed.
#[derive(Debug, thiserror::Error)]
enum MergeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Npz(#[from] NpzError),
    #[error("item {index} ({key}) is journaled but its file {file} is missing")]
    Missing {
        index: usize,
        key: String,
        file: String,
    },
}

/// Runs `odelt batch merge`.
pub fn merge(a: MergeArgs) -> ExitCode {
    match merge_inner(&a) {
        Ok(code) => code,
        Err(e) => fail(EXIT_FAILURE, &e.to_string(), None),
    }
}

fn merge_inner(a: &MergeArgs) -> Result<ExitCode, MergeError> {
    let store = Store::new(&a.dir);
    store.read_info()?;
    let items = store.read_items()?;
    let done = store.done_by_key(&items)?;
    let missing = items.iter().filter(|i| !done.contains_key(&i.key)).count();
    if missing > 0 && !a.allow_incomplete {
        eprintln!(
            "error: {missing} of {} items are not finished; see `odelt batch status {}` (or pass --allow-incomplete)",
            items.len(),
            a.dir.display()
        );
        return Ok(ExitCode::from(EXIT_INCOMPLETE));
    }
    let mut text = String::new();
    let mut listed = Vec::new();
    for it in &items {
        let Some(d) = done.get(&it.key) else {
            continue;
        };
        for f in &d.files {
            if !a.dir.join(f).is_file() {
                return Err(MergeError::Missing {
                    index: it.index,
                    key: it.key.clone(),
                    file: f.clone(),
                });
            }
        }
        let line =
            json!({"index": it.index, "key": it.key, "overrides": it.overrides, "files": d.files});
        text.push_str(&serde_json::to_string(&line).unwrap_or_default());
        text.push('\n');
        listed.push((it, d));
    }
    let index_path = a.index.clone().unwrap_or_else(|| a.dir.join("index.jsonl"));
    store::write_atomic(&index_path, text.as_bytes())?;
    let mut written = Vec::new();
    if a.npz || !a.npz_by.is_empty() {
        written = gather(a, &listed)?;
    }
    println!(
        "{}",
        serde_json::to_string(&json!({
            "index": index_path, "items": listed.len(), "missing": missing, "npz": written,
        }))
        .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

fn value_name(v: &Json) -> String {
    let s = match v {
        Json::String(s) => s.clone(),
        Json::Null => "none".into(),
        other => serde_json::to_string(other).unwrap_or_default(),
    };
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._=,+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One group of images: shape, pixels, the item of each image and the items' overrides.
#[derive(Default)]
struct Group {
    shape: Option<[usize; 3]>,
    pixels: Vec<u8>,
    item_index: Vec<i64>,
    overrides: Vec<Json>,
}

fn gather(a: &MergeArgs, listed: &[(&ItemLine, &Done)]) -> Result<Vec<PathBuf>, MergeError> {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for (it, d) in listed {
        let name = if a.npz_by.is_empty() {
            "all".to_string()
        } else {
            a.npz_by
                .iter()
                .map(|t| {
                    format!(
                        "{t}={}",
                        value_name(it.overrides.get(t).unwrap_or(&Json::Null))
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let g = groups.entry(name).or_default();
        for f in d.files.iter().filter(|f| f.ends_with(".png")) {
            let path = a.dir.join(f);
            let (shape, px) = npz::read_png(&path)?;
            match g.shape {
                None => g.shape = Some(shape),
                Some(want) if want != shape => {
                    return Err(NpzError::Shape {
                        path: path.display().to_string(),
                        got: shape,
                        want,
                    }
                    .into())
                }
                Some(_) => {}
            }
            g.pixels.extend_from_slice(&px);
            g.item_index.push(it.index as i64);
            g.overrides.push(it.overrides.clone());
        }
    }
    let dir = a.dir.join("merged");
    std::fs::create_dir_all(&dir).map_err(store::io("creating", &dir))?;
    let mut written = Vec::new();
    for (name, g) in groups {
        let Some([h, w, c]) = g.shape else { continue };
        let n = g.item_index.len();
        let mut arrays = vec![
            Array {
                name: "images".into(),
                descr: "|u1",
                shape: vec![n, h, w, c],
                data: g.pixels,
            },
            Array::i64s("item_index", &g.item_index),
        ];
        // Integer-valued overrides (seeds, class labels, lengths) as per-image arrays.
        let mut targets: Vec<&String> = g
            .overrides
            .iter()
            .filter_map(Json::as_object)
            .flat_map(|m| m.keys())
            .collect();
        targets.sort();
        targets.dedup();
        for t in targets {
            let vals: Option<Vec<i64>> = g
                .overrides
                .iter()
                .map(|o| o.get(t).and_then(Json::as_i64))
                .collect();
            if let Some(v) = vals {
                arrays.push(Array::i64s(t, &v));
            }
        }
        let path = dir.join(format!("{name}.npz"));
        npz::write_npz(&path, &arrays)?;
        written.push(path);
    }
    Ok(written)
}
