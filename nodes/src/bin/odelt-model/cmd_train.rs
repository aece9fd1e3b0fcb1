//! `odelt-model train`: the ODE_t(ODE_l) objective on Fashion-MNIST, resumable, with a progress display.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use odelt_nodes::checkpoint::{self, LoadOptions};
use odelt_nodes::data::fashion_mnist::Split;
use odelt_nodes::train::optim::AdamWParams;
use odelt_nodes::train::{ObjectiveConfig, TrainOptions, Trainer};
use odelt_nodes::DitConfig;

use crate::common::{ensure_parent, DataArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// Run directory: state.safetensors (resumable), log.csv, config.
    #[arg(long, default_value = "runs/fashion-dit")]
    out: PathBuf,
    /// Also export the EMA model in the project's format here after every checkpoint and at the end.
    #[arg(long)]
    export: Option<PathBuf>,
    /// Continue from OUT/state.safetensors when it exists (the model/options flags are then taken from it).
    #[arg(long)]
    resume: bool,
    /// Fine-tune: start from the weights of this model (project safetensors or official .pkl) instead of a fresh
    /// initialisation; its architecture replaces the model flags, the weights go into both the trained copy and the
    /// EMA teacher, the optimiser and the step count start from zero. Ignored when --resume finds a state.
    #[arg(long, value_name = "MODEL")]
    init: Option<PathBuf>,
    /// Total steps of the run (the learning-rate schedule's length).
    #[arg(long, default_value_t = 4000)]
    steps: u64,
    /// Stop after this step, saving the state and the export there, although the schedule runs to --steps (one
    /// leg of a longer run; continue it with --resume).
    #[arg(long, value_name = "STEP")]
    stop_at: Option<u64>,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 5e-4)]
    lr: f64,
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Maximum EMA decay (after the (1+s)/(10+s) warm-up).
    #[arg(long, default_value_t = 0.998)]
    ema: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 96)]
    hidden: usize,
    #[arg(long, default_value_t = 6)]
    depth: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 4)]
    patch: usize,
    #[arg(long, default_value_t = 4)]
    mlp_ratio: usize,
    #[arg(long, default_value_t = 2)]
    depth_group: usize,
    #[arg(long, default_value_t = 2)]
    depth_min: usize,
    #[arg(long, default_value_t = 0.1)]
    class_dropout: f64,
    /// One in N rows of a batch is a time-consistency (shortcut bootstrap) row; the official value is 8.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    bootstrap_every: u64,
    /// One in N rows of a batch gets a length-consistency target; the official value is 8.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    length_bootstrap_every: u64,
    /// Relative weights of the step codes 0..6 (one step .. 64 steps) drawn for the time-consistency rows, e.g.
    /// `4,2,1,1,1,1,1` to train the one- and two-step shortcuts harder; uniform when not given (official).
    #[arg(long, value_delimiter = ',', value_name = "W0,..,W6")]
    dt_weights: Option<Vec<f64>>,
    /// Ablation: no time-consistency (shortcut bootstrap) rows; every row is a flow row at dt_base 7.
    #[arg(long)]
    no_time_consistency: bool,
    /// Ablation: no length-consistency rows (students still train at random lengths).
    #[arg(long)]
    no_length_consistency: bool,
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    /// Print a plain log line every N steps (also when the progress bar is hidden, e.g. under nohup).
    #[arg(long, default_value_t = 25)]
    log_every: u64,
    /// Where to train: `cpu`, or `cuda` / `cuda:N` (needs a build with `--features odelt-nodes/cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(a: Args) -> Result<()> {
    let device = odelt_nodes::pipeline::device::device(&a.device)
        .with_context(|| format!("opening device `{}`", a.device))?;
    let data = a.data.load(Split::Train)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let state_path = a.out.join("state.safetensors");
    let mut tr = if a.resume && state_path.exists() {
        let tr = Trainer::resume(&state_path, data.len(), Some(a.steps), &device)
            .with_context(|| format!("resuming from {}", state_path.display()))?;
        eprintln!("resumed at step {} from {}", tr.step, state_path.display());
        tr
    } else {
        let opts = TrainOptions {
            steps: a.steps,
            batch_size: a.batch,
            lr: a.lr,
            warmup: a.warmup,
            adam: AdamWParams {
                weight_decay: a.weight_decay,
                ..Default::default()
            },
            ema_decay: a.ema,
            seed: a.seed,
            objective: ObjectiveConfig {
                bootstrap_every: if a.no_time_consistency {
                    0
                } else {
                    a.bootstrap_every as usize
                },
                length_bootstrap_every: if a.no_length_consistency {
                    0
                } else {
                    a.length_bootstrap_every as usize
                },
                class_dropout: a.class_dropout,
                log2_steps: 7,
                dt_weights: a.dt_weights.clone(),
            },
        };
        opts.objective.validate()?;
        match &a.init {
            Some(init) => {
                let ck = checkpoint::open(init, &LoadOptions::default())
                    .with_context(|| format!("opening the initial model {}", init.display()))?;
                if (
                    ck.config.input_size,
                    ck.config.in_channels,
                    ck.config.num_classes,
                ) != (data.size, data.channels, data.num_classes)
                {
                    anyhow::bail!(
                        "{} is a model of {}x{}x{} images and {} classes; the data has {}x{}x{} and {}",
                        init.display(),
                        ck.config.input_size,
                        ck.config.input_size,
                        ck.config.in_channels,
                        ck.config.num_classes,
                        data.size,
                        data.size,
                        data.channels,
                        data.num_classes
                    );
                }
                let tr = Trainer::fine_tune(&ck.config, &*ck.source, opts, data.len(), &device)
                    .with_context(|| format!("starting from {}", init.display()))?;
                eprintln!("fine-tuning from {}", init.display());
                tr
            }
            None => {
                let cfg = DitConfig {
                    input_size: data.size,
                    in_channels: data.channels,
                    patch_size: a.patch,
                    hidden_size: a.hidden,
                    depth: a.depth,
                    num_heads: a.heads,
                    mlp_hidden: a.mlp_ratio * a.hidden,
                    num_classes: data.num_classes,
                    depth_group: a.depth_group,
                    depth_min: a.depth_min,
                    length_embedding: true,
                    latent_scale: 1.0,
                };
                cfg.validate()?;
                Trainer::new(&cfg, opts, data.len(), &device)?
            }
        }
    };
    tr.stop_at = a.stop_at;
    std::fs::write(
        a.out.join("run.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "config": tr.cfg, "options": tr.opts, "argv": std::env::args().collect::<Vec<_>>(),
        }))?,
    )?;
    let n_params: usize = tr.vars.iter().map(|v| v.as_tensor().elem_count()).sum();
    eprintln!(
        "model: {} params, config {}",
        n_params,
        serde_json::to_string(&tr.cfg)?
    );
    let log_path = a.out.join("log.csv");
    let new_log = !log_path.exists() || tr.step == 0;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(!new_log)
        .write(true)
        .truncate(new_log)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    if new_log {
        writeln!(log, "step,lr,loss,flow,time,length,sec_per_step,elapsed_s")?;
    }
    let bar = ProgressBar::new(tr.opts.steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(tr.step);
    let start = Instant::now();
    let mut acc = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0usize);
    let export = a.export.clone();
    let every = a.checkpoint_every.max(1);
    let log_every = a.log_every.max(1);
    tr.run(&data, Some(&state_path), every, &mut |t, terms, secs| {
        let lr = odelt_nodes::train::schedule::lr_at(t.step - 1, t.opts.steps, t.opts.lr, t.opts.warmup);
        writeln!(
            log,
            "{},{:.3e},{:.5},{:.5},{:.5},{:.5},{:.3},{:.1}",
            t.step,
            lr,
            terms.total,
            terms.flow,
            terms.time,
            terms.length,
            secs,
            start.elapsed().as_secs_f64()
        )
        .map_err(|e| odelt_nodes::Error::Invalid(format!("writing log: {e}")))?;
        acc.0 += terms.total;
        acc.1 += terms.flow;
        acc.2 += if terms.time.is_nan() { 0.0 } else { terms.time };
        acc.3 += if terms.length.is_nan() { 0.0 } else { terms.length };
        acc.4 += 1;
        let msg = format!(
            "loss {:.4} flow {:.4} time {:.4} len {:.4} {:.2}s/step",
            terms.total, terms.flow, terms.time, terms.length, secs
        );
        bar.set_position(t.step);
        bar.set_message(msg);
        if t.step % log_every == 0 || t.step == t.end() {
            let k = acc.4 as f64;
            let line = format!(
                "step {}/{} lr {:.2e} loss {:.4} flow {:.4} time {:.4} len {:.4} | {:.2}s/step elapsed {:.0}s",
                t.step, t.opts.steps, lr, acc.0 / k, acc.1 / k, acc.2 / k, acc.3 / k, secs,
                start.elapsed().as_secs_f64()
            );
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
            acc = (0.0, 0.0, 0.0, 0.0, 0);
        }
        if let Some(p) = &export {
            if t.step % every == 0 || t.step == t.end() {
                ensure_parent(p).map_err(|e| odelt_nodes::Error::Invalid(e.to_string()))?;
                t.export(p, true, &[])?;
            }
        }
        Ok(())
    })?;
    bar.finish();
    eprintln!(
        "done: {} steps, state {}, {:.0}s",
        tr.step,
        state_path.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
