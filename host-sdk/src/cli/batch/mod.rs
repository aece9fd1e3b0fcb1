//! `odelt batch`: one workflow run for many items, sharded over processes or machines without a
//! coordinator, resumable after a kill at any moment.
//!
//! # Design
//!
//! A batch is a pure function of (workflow, items, shard):
//!
//! * **Items** are the manifest's rows times the `--sweep` axes, in a fixed order. Item `k`
//!   belongs to shard `k % N`, so every shard knows its items from the command line alone.
//! * **Names come from the item**, not from a counter: [`odelt_host::BatchItem::key`] (the
//!   sorted overrides, readable, plus a stable 64-bit hash). Item `key`'s files are
//!   `items/<key>/<node>-<name>_00001_.png`.
//! * **Outputs are written by the workflow's own file nodes** (SaveImage, SaveLatent: every
//!   node with a literal `filename_prefix`), redirected per item to an empty staging folder
//!   `.odelt-batch/staging/<key>/`. In an empty folder their counters start at 1, so the names
//!   are fixed; the bytes are those of a plain `odelt run` with the same inputs (the embedded
//!   prompt names the staging prefix, which depends on the item only).
//! * **Commit** once the run succeeded: the files are fsynced, the staging folder is renamed to
//!   `items/<key>/` (one atomic rename: the folder appears whole or not at all), and one line
//!   is appended to the shard's journal (`.odelt-batch/journal/shard-I-of-N.jsonl`, fsynced).
//!   The journal is the only record of "done".
//! * **Resume**: a rerun skips items found in any journal and redoes every other one, first
//!   deleting its staging folder and any `items/<key>/` left by a kill between the rename and
//!   the journal line; a journal line torn by a kill is cut off. Hence a shard killed at any
//!   moment and run again ends with exactly the files of an uninterrupted run, none twice,
//!   none partial.
//! * **Same pixels everywhere**: an item's inputs are its overrides (a seed among them, or one
//!   derived from its key with `--item-seed`), never its shard or position.
//!
//! `status` and `merge` read only the output directory.

mod items;
mod npz;
mod report;
mod runner;
mod store;

use std::process::ExitCode;

use clap::{Args, Subcommand};

/// Arguments of `odelt batch`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BatchArgs {
    #[command(subcommand)]
    command: Option<BatchCommand>,
    #[command(flatten)]
    run: runner::RunBatchArgs,
}

#[derive(Debug, Subcommand)]
enum BatchCommand {
    /// Done / total items per shard; which shards are incomplete (exit 5 when any item is not done).
    #[command(
        after_help = "Examples:\n  odelt batch status runs/eval\n  odelt batch status runs/eval --shards 16 --json\n\nA shard whose process is gone (killed, preempted) shows as interrupted when it ran on this\nmachine; elsewhere as `running on HOST, or stopped there`. Rerun any incomplete shard with\nthe same command: finished items are skipped."
    )]
    Status(report::StatusArgs),
    /// Write one index of every item's outputs (JSONL), optionally gathering images into .npz.
    #[command(
        after_help = "Examples:\n  odelt batch merge runs/eval\n  odelt batch merge runs/eval --npz-by 2.active_blocks\n\nEach line of OUTPUT_DIR/index.jsonl is {\"index\", \"key\", \"overrides\", \"files\"}, in item order,\nevery item exactly once. Refuses (exit 5) while items are unfinished, unless --allow-incomplete."
    )]
    Merge(report::MergeArgs),
}

/// Long help of `odelt batch`.
pub const AFTER_HELP: &str = "Examples:
  odelt batch examples/workflows/generate.json --output-dir runs/gen --sweep 4.seed=0..49999 --sweep 2.active_blocks=2,4,6
  odelt batch wf.json --items items.csv --output-dir runs/x --shard 3/16
  odelt batch wf.json --sweep 4.class_label=0..9 --item-seed 4.seed --output-dir runs/y --list
  odelt batch status runs/gen
  odelt batch merge runs/gen --npz-by 2.active_blocks

Items: every row of --items (JSONL: {\"4.seed\": 3} or [\"4.seed=3\"]; CSV: a header of NODE.INPUT
columns) times every point of the --sweep axes (last axis fastest). Item k belongs to shard
k % N. The shard comes from --shard I/N, else ODELT_SHARD, Slurm (SLURM_ARRAY_TASK_ID and
SLURM_ARRAY_TASK_COUNT), a Kubernetes Indexed Job (JOB_COMPLETION_INDEX and JOB_COMPLETIONS,
which the Job sets to its completions), else 0/1.

Outputs: OUTPUT_DIR/items/<key>/<node>-<name>_00001_.png, where key is derived from the item's
overrides. Files are written to a staging folder and moved into place when the item is
complete; finished items are journaled. Run a killed or failed shard again with the same
command: it skips what is done and redoes the rest. All shards share OUTPUT_DIR.
On stdout at the end: a JSON summary (items/s, ms per item spent committing).
Exit codes: 0 ok, 1 usage/IO/plugin error, 3 validation failed, 4 an item failed, 130 interrupted.";

/// Runs `odelt batch ...`.
pub fn batch(a: BatchArgs) -> ExitCode {
    match (a.command, a.run) {
        (Some(BatchCommand::Status(s)), _) => report::status(s),
        (Some(BatchCommand::Merge(m)), _) => report::merge(m),
        (None, r) if r.workflow.is_some() => runner::run(r),
        (None, _) => super::fail(
            super::EXIT_FAILURE,
            "odelt batch needs a workflow, or `status` / `merge` (see --help)",
            None,
        ),
    }
}
