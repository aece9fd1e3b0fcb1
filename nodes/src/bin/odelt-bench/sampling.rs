//! `odelt-bench sampling`: what the sampling loop costs around the forward.
//!
//! For each step count T it times, interleaved round by round,
//! - **forward x T**: T back-to-back bare forwards of the model with fixed inputs (the batch the guidance runs:
//!   B, or 2B for 0 < cfg != 1);
//! - **sampling**: one Euler sampling call with T steps through the sampler node's own path:
//!   [`run_sampler`] (labels, seeded noise, the NCHW <-> NHWC conversion, [`sample_seeded`], the preview after
//!   every evaluation) with the plugin's progress callback (`ExecContext::progress_with_preview` and its
//!   cancellation check) on host hooks that copy the preview as the host's `node_call` does;
//! - with `--breakdown` also [`run_sampler`] with a no-op progress callback, [`sample_seeded`] with a hook that
//!   makes the node's preview, and [`sample_seeded`] with no hook, to split the overhead between the solver, the
//!   preview, the node's setup and the plugin's callback.
//!
//! Each call is timed on its own, in pairs (T forwards, one sampling call) taken back to back in alternating
//! order; each of `--runs` rounds holds enough pairs to last `--burst` seconds. The overhead per step is the
//! median over the pairs of `(sampling - forward x T) / T` (paired, so slow changes of the load cancel), stated
//! as a share of one forward (the median of T forwards over T). With `--components` each piece of the loop's own work is also timed alone (the
//! precise attribution; the end-to-end difference of two noisy totals resolves a few percent at best on a
//! loaded machine).
//!
//! [`run_sampler`]: odelt_nodes::pipeline::run_sampler
//! [`sample_seeded`]: odelt_nodes::sample::sample_seeded

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use clap::Args;
use odelt_contract::abi_stable::std_types::{ROption, RStr};
use odelt_contract::{ExecContext, HostHooks, PreviewImage};
use odelt_nodes::pipeline::image::preview_nhwc;
use odelt_nodes::pipeline::sampler::{empty_latent, Progress};
use odelt_nodes::pipeline::{
    run_sampler, LoadedCheckpoint, LoaderOptions, ModelHandle, Precision, SamplerSettings,
};
use odelt_nodes::sample::{self, SampleEvent, SampleOptions, SeededBatch};
use odelt_nodes::solver::{Solver, SolverKind};
use odelt_nodes::Dit;

use crate::machine::{cpu_model, loadavg, median};
use crate::model::{self, TempFile};

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// The checkpoint to sample (e.g. the default model `models/fashion-dit.safetensors`); without it a random
    /// `--model` checkpoint is written to a temporary file.
    #[arg(long)]
    ckpt: Option<PathBuf>,
    /// Architecture of the random-weight model: `dit-b`, `dit-xl` or `tiny`.
    #[arg(long, default_value = "dit-b")]
    model: String,
    /// Classes of the random model.
    #[arg(long, default_value_t = 1000)]
    classes: usize,
    /// Where the temporary random checkpoint is written (default: the system temp dir). Removed at exit.
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Active length (default: the model's depth).
    #[arg(long)]
    length: Option<usize>,
    /// Euler step counts T, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 8, 128])]
    steps: Vec<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Guidance scale (1: one pass, the node's default; 0 < w != 1: one forward of twice the batch).
    #[arg(long, default_value_t = 1.0)]
    cfg: f64,
    /// Rounds per step count, each of enough pairs (T forwards, one sampling call) to last `--burst` seconds;
    /// medians over all pairs are reported, the overhead is the median of the pairs' differences.
    #[arg(long, default_value_t = 15)]
    runs: usize,
    /// At most this many rounds for a step count whose one sampling call takes over 2 s (DiT-B at T = 128).
    #[arg(long, default_value_t = 3)]
    long_runs: usize,
    /// A round repeats pairs until it lasts at least this many seconds.
    #[arg(long, default_value_t = 0.1)]
    burst: f64,
    /// Also time the path with less around the solve: run_sampler with a no-op progress callback,
    /// sample_seeded with the node's preview, sample_seeded alone.
    #[arg(long)]
    breakdown: bool,
    /// Also time each piece of the per-step and per-call work on its own (microseconds; far less noisy than the
    /// end-to-end difference on a loaded machine).
    #[arg(long)]
    components: bool,
    /// `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// What the host's side of the hooks does (as `odelt_host::node_call`): copy the preview, count it, answer the
/// cancellation check from a flag.
struct HostSide {
    cancel: AtomicBool,
    bytes: AtomicU64,
    events: AtomicU64,
}

extern "C" fn host_progress(data: *const (), value: u64, max: u64, p: ROption<PreviewImage<'_>>) {
    // SAFETY: `data` is the `HostSide` of `run`, alive for every call that uses these hooks.
    let h = unsafe { &*(data as *const HostSide) };
    let copy = p.into_option().map(|p| p.data.as_slice().to_vec());
    let n = copy.as_ref().map_or(0, Vec::len) as u64;
    h.bytes
        .fetch_add(std::hint::black_box(n), Ordering::Relaxed);
    std::hint::black_box((value, max));
    h.events.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn host_cancelled(data: *const ()) -> bool {
    // SAFETY: see host_progress.
    let h = unsafe { &*(data as *const HostSide) };
    h.cancel.load(Ordering::Relaxed)
}

extern "C" fn host_text(_: *const (), _: RStr<'_>) {}

/// Seconds of one call of `f`.
fn timed(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t0 = Instant::now();
    f()?;
    Ok(t0.elapsed().as_secs_f64())
}

/// Seconds per call of `f` in each of `runs` bursts of `per` calls.
fn bursts(runs: usize, per: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        for _ in 0..per {
            f()?;
        }
        v.push(t0.elapsed().as_secs_f64() / per as f64);
    }
    Ok(v)
}

/// The variants timed against the bare forwards: the node path first, then (with `--breakdown`) the same work
/// with less and less around the solve.
pub const VARIANTS: [&str; 4] = [
    "node path: run_sampler + the plugin's progress callback",
    "run_sampler, a no-op progress callback",
    "sample_seeded + the node's preview (prediction, preview_nhwc)",
    "sample_seeded, no hook",
];

/// One row of the table.
pub struct Row {
    pub steps: usize,
    pub runs: usize,
    /// Pairs per round.
    pub per_burst: usize,
    /// Seconds of T bare forwards, per pair.
    pub forwards: Vec<f64>,
    /// Seconds of one sampling call of each variant timed ([`VARIANTS`], in order), per pair.
    pub variants: Vec<Vec<f64>>,
}

impl Row {
    /// Median seconds of T forwards.
    pub fn forwards_s(&self) -> f64 {
        median(&self.forwards)
    }
    /// Overhead per step in seconds: the median over the pairs of `(total - forwards) / T`, each pair's two
    /// calls taken back to back (so slow changes of the machine's load cancel).
    pub fn overhead_s(&self, total: &[f64]) -> f64 {
        let d: Vec<f64> = total
            .iter()
            .zip(&self.forwards)
            .map(|(s, f)| (s - f) / self.steps as f64)
            .collect();
        median(&d)
    }
    /// Overhead per step as a share of one forward.
    pub fn overhead_share(&self, total: &[f64]) -> f64 {
        self.overhead_s(total) / (self.forwards_s() / self.steps as f64)
    }
}

fn checkpoint(a: &SamplingArgs) -> Result<(PathBuf, TempFile)> {
    if let Some(p) = &a.ckpt {
        return Ok((p.clone(), TempFile(None)));
    }
    let cfg = model::config(&a.model, a.classes)?;
    let dir = a.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!(
        "odelt-bench-sampling-{}.safetensors",
        std::process::id()
    ));
    let guard = TempFile(Some(path.clone()));
    model::write_random_checkpoint(&cfg, &path)
        .with_context(|| format!("writing the random checkpoint {}", path.display()))?;
    Ok((path, guard))
}

fn open_handle(path: &Path, length: Option<usize>) -> Result<ModelHandle> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the checkpoint path has no file name")?;
    let lc = LoadedCheckpoint::open(dir, &LoaderOptions::named(name))
        .with_context(|| format!("opening {}", path.display()))?;
    let h = ModelHandle::new(lc, Precision::Fp32);
    Ok(match length {
        Some(l) => h.with_length(l)?,
        None => h,
    })
}

/// The bare forward's inputs: what [`odelt_nodes::solver::Guided`] passes for `batch` samples at guidance `cfg`.
struct Forward {
    t: Tensor,
    x: Tensor,
    d: Tensor,
    y: Tensor,
}

impl Forward {
    fn new(dit: &Dit, batch: usize, cfg: f64) -> Result<Forward> {
        let c = dit.config();
        let n = if cfg == 0.0 || cfg == 1.0 {
            batch
        } else {
            2 * batch
        };
        let dev = dit.device();
        let s = c.input_size;
        let x = sample::noise(&[n, s, s, c.in_channels], 1, dev)?;
        Ok(Forward {
            t: Tensor::full(0.5f32, n, dev)?,
            x,
            d: Tensor::full(3f32, n, dev)?,
            y: Tensor::full(0u32, n, dev)?,
        })
    }

    fn run(&self, dit: &Dit) -> Result<Tensor> {
        Ok(dit.forward(&self.t, &self.x, &self.d, &self.y)?)
    }
}

pub fn run(a: &SamplingArgs) -> Result<()> {
    if a.steps.is_empty() || a.steps.contains(&0) {
        bail!("--steps needs positive step counts");
    }
    if a.batch == 0 || a.runs == 0 {
        bail!("--batch and --runs must be at least 1");
    }
    let device = model::device(&a.device)?;
    let (ckpt, _guard) = checkpoint(a)?;
    let handle = open_handle(&ckpt, a.length)?;
    let cfg = handle.config().clone();
    let dit = handle.dit(&a.device)?;
    println!(
        "odelt-bench sampling: cpu `{}`, {} logical cores, candle threads {}, load average {} (start)",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        candle_core::utils::get_num_threads(),
        loadavg()
    );
    println!(
        "model: {} (hidden {}, depth {}, {}x{}x{} latents, patch {}), length {}, batch {}, cfg {}, euler, device {}",
        match &a.ckpt {
            Some(p) => p.display().to_string(),
            None => format!("random {}", a.model),
        },
        cfg.hidden_size,
        cfg.depth,
        cfg.input_size,
        cfg.input_size,
        cfg.in_channels,
        cfg.patch_size,
        handle.length,
        a.batch,
        a.cfg,
        a.device
    );

    let fwd = Forward::new(&dit, a.batch, a.cfg)?;
    let latent = empty_latent(&cfg, a.batch)?;
    let labels_t = sample::labels(&vec![0; a.batch], cfg.num_classes, &device)?;
    let host = HostSide {
        cancel: AtomicBool::new(false),
        bytes: AtomicU64::new(0),
        events: AtomicU64::new(0),
    };
    // SAFETY: `host` outlives `ctx`; the callbacks only read it and do not unwind.
    let hooks = unsafe {
        HostHooks::new(
            &host as *const HostSide as *const (),
            host_progress,
            host_cancelled,
            host_text,
        )
    };
    let ctx = ExecContext {
        device: RStr::from_str(a.device.as_str()),
        hooks,
        ..ExecContext::detached()
    };

    let mut rows = Vec::new();
    for &steps in &a.steps {
        let settings = SamplerSettings {
            seed: 0,
            steps,
            solver: SolverKind::Euler,
            cfg: a.cfg,
            class_label: 0,
            ..SamplerSettings::default()
        };
        let forwards = || -> Result<()> {
            for _ in 0..steps {
                drop(fwd.run(&dit)?);
            }
            model::sync(&device)
        };
        let sample_node = |on_progress: &mut dyn FnMut(Progress<'_>) -> bool| -> Result<()> {
            drop(run_sampler(
                &handle,
                &a.device,
                &latent,
                &settings,
                on_progress,
            )?);
            model::sync(&device)
        };
        // The sampler node's own callback (`Progress::report`, as plugin/src/sampler.rs calls it).
        let node = || sample_node(&mut |p: Progress<'_>| p.report(&ctx));
        let batch = SeededBatch::new(
            0,
            &labels_t,
            SampleOptions {
                cfg: a.cfg,
                ..SampleOptions::new(Solver::Euler { steps })
            },
        );
        let node_quiet = || sample_node(&mut |_: Progress<'_>| true);
        let with_preview = || -> Result<()> {
            let mut hook = |e: &SampleEvent<'_>| {
                let p = e.prediction().ok().and_then(|p| preview_nhwc(&p).ok());
                std::hint::black_box(p);
                Ok(())
            };
            drop(sample::sample_seeded(&dit, &batch, &mut hook)?);
            model::sync(&device)
        };
        let bare = || -> Result<()> {
            drop(sample::sample_seeded(&dit, &batch, &mut ())?);
            model::sync(&device)
        };
        let all: [&dyn Fn() -> Result<()>; 4] = [&node, &node_quiet, &with_preview, &bare];
        let variants = if a.breakdown { &all[..] } else { &all[..1] };
        // Warm-up, and the pairs per round from one call.
        let t0 = Instant::now();
        node()?;
        let one = t0.elapsed().as_secs_f64();
        forwards()?;
        for v in &variants[1..] {
            v()?;
        }
        let per = ((a.burst / one.max(1e-6)).ceil() as usize).clamp(1, 100_000);
        let runs = if one > 2.0 {
            a.runs.min(a.long_runs.max(1))
        } else {
            a.runs
        };
        let mut tf = Vec::new();
        let mut tv = vec![Vec::new(); variants.len()];
        // The forwards and each variant timed one call at a time, back to back, in alternating order (ABBA), so
        // load from other processes hits them alike; each variant's overhead is the median of its differences.
        for r in 0..runs * per {
            if r % 2 == 0 {
                tf.push(timed(forwards)?);
                for (t, v) in tv.iter_mut().zip(variants) {
                    t.push(timed(v)?);
                }
            } else {
                for (t, v) in tv.iter_mut().zip(variants).rev() {
                    t.push(timed(v)?);
                }
                tf.push(timed(forwards)?);
            }
        }
        let row = Row {
            steps,
            runs,
            per_burst: per,
            forwards: tf,
            variants: tv,
        };
        eprintln!(
            "  T={steps}: forward x T {:.3} ms, sampling {:.3} ms ({runs} rounds of {per} pairs)",
            row.forwards_s() * 1e3,
            median(&row.variants[0]) * 1e3
        );
        rows.push(row);
    }
    if host.events.load(Ordering::Relaxed) == 0 {
        bail!("the progress callback never reached the host hooks");
    }
    print_table(a, &rows);
    if a.components {
        components(a, &handle, &dit, &fwd, &latent, &ctx)?;
    }
    println!("load average {} (end)", loadavg());
    Ok(())
}

fn print_table(a: &SamplingArgs, rows: &[Row]) {
    println!();
    println!(
        "sampling overhead per step (batch {}, cfg {}; medians over pairs of back-to-back calls, {} s or more per \
         round):",
        a.batch, a.cfg, a.burst
    );
    println!(
        "| T | rounds x pairs | forward ms | forward ms x T | sampling ms | overhead ms/step | overhead % of a forward |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} x {} | {:.3} | {:.3} | {:.3} | {:.4} | {:.2} % |",
            r.steps,
            r.runs,
            r.per_burst,
            r.forwards_s() / r.steps as f64 * 1e3,
            r.forwards_s() * 1e3,
            median(&r.variants[0]) * 1e3,
            r.overhead_s(&r.variants[0]) * 1e3,
            r.overhead_share(&r.variants[0]) * 100.0
        );
    }
    if rows.iter().all(|r| r.variants.len() < 2) {
        return;
    }
    println!();
    println!("breakdown: overhead per step, % of a forward (ms per step), by what runs around the solve:");
    let head: Vec<String> = rows.iter().map(|r| format!("T = {}", r.steps)).collect();
    println!("| variant | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(rows.len()));
    for (k, name) in VARIANTS.iter().enumerate() {
        let cells: Vec<String> = rows
            .iter()
            .map(|r| match r.variants.get(k) {
                Some(v) => format!(
                    "{:.2} % ({:.4})",
                    r.overhead_share(v) * 100.0,
                    r.overhead_s(v) * 1e3
                ),
                None => "-".into(),
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
}

/// Median microseconds per call of `f` over 7 bursts of at least 0.05 s.
fn micros(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let t0 = Instant::now();
    f()?;
    let per = ((0.05 / t0.elapsed().as_secs_f64().max(1e-7)).ceil() as usize).clamp(1, 1_000_000);
    Ok(median(&bursts(7, per, f)?) * 1e6)
}

/// Each piece of the loop's own work, timed alone on the model's shapes.
fn components(
    a: &SamplingArgs,
    handle: &ModelHandle,
    dit: &Dit,
    fwd: &Forward,
    latent: &odelt_nodes::pipeline::Array,
    ctx: &ExecContext<'_>,
) -> Result<()> {
    use odelt_nodes::pipeline::array::{nchw_to_nhwc, nhwc_to_nchw};
    use odelt_nodes::solver::{Guided, VelocityField};
    let cfg = dit.config();
    let dev = dit.device().clone();
    let s = cfg.input_size;
    let shape = [a.batch, s, s, cfg.in_channels];
    let x = sample::noise(&shape, 3, &dev)?;
    let v = sample::noise(&shape, 4, &dev)?;
    let labels = sample::labels(&vec![0; a.batch], cfg.num_classes, &dev)?;
    let n = fwd.x.dim(0)?;
    let fwd_us = micros(|| {
        drop(fwd.run(dit)?);
        Ok(())
    })?;
    let mut per_step: Vec<(&str, f64)> = vec![
        (
            "guidance: t and dt_base tensors (2 x Tensor::full)",
            micros(|| {
                drop(Tensor::full(0.5f32, n, &dev)?);
                drop(Tensor::full(3f32, n, &dev)?);
                Ok(())
            })?,
        ),
        (
            "Euler update x + h v",
            micros(|| {
                drop((&x + v.affine(0.125, 0.0)?)?);
                Ok(())
            })?,
        ),
        (
            "hook: prediction x + (1 - t) v",
            micros(|| {
                drop((&x + v.affine(0.5, 0.0)?)?);
                Ok(())
            })?,
        ),
        (
            "hook: preview_nhwc",
            micros(|| {
                drop(preview_nhwc(&x)?);
                Ok(())
            })?,
        ),
    ];
    let img = preview_nhwc(&x)?;
    per_step.push((
        "plugin callback: progress_with_preview + host copy + cancel check",
        micros(|| {
            let p = Progress {
                value: 1,
                max: 2,
                preview: Some(&img),
            };
            std::hint::black_box(p.report(ctx));
            Ok(())
        })?,
    ));
    if a.cfg != 0.0 && a.cfg != 1.0 {
        per_step.push((
            "guidance: cat [x; x] + narrow + combine",
            micros(|| {
                let x2 = Tensor::cat(&[&x, &x], 0)?;
                let (vn, vl) = (x2.narrow(0, 0, a.batch)?, x2.narrow(0, a.batch, a.batch)?);
                drop((&vn + (vl - &vn)?.affine(a.cfg, 0.0)?)?);
                Ok(())
            })?,
        ));
    }
    let per_call: Vec<(&str, f64)> = vec![
        (
            "seeded noise (ChaCha8)",
            micros(|| {
                drop(sample::noise(&shape, 0, &dev)?);
                Ok(())
            })?,
        ),
        (
            "labels + Guided::new",
            micros(|| {
                let l = sample::labels(&vec![0; a.batch], cfg.num_classes, &dev)?;
                drop(Guided::new(dit, &l, a.cfg)?);
                Ok(())
            })?,
        ),
        (
            "ModelHandle::dit (the cached model at the length)",
            micros(|| {
                drop(handle.dit(&a.device)?);
                Ok(())
            })?,
        ),
        (
            "LATENT NCHW -> NHWC and back",
            micros(|| {
                let t = nchw_to_nhwc(latent, cfg.latent_scale, &dev)?;
                drop(nhwc_to_nchw(&t, cfg.latent_scale)?);
                Ok(())
            })?,
        ),
    ];
    let mut g = Guided::new(dit, &labels, a.cfg)?;
    let xb = fwd.x.narrow(0, 0, a.batch)?;
    let eval_us = micros(|| {
        drop(g.velocity(0.5, &xb, 3.0)?);
        Ok(())
    })?;
    println!();
    println!(
        "components (median us per call over 7 bursts >= 0.05 s; one forward {fwd_us:.1} us, one guided evaluation \
         {eval_us:.1} us):"
    );
    println!("| per step | us | % of a forward |");
    println!("|---|---|---|");
    let mut sum = 0.0;
    for (name, us) in &per_step {
        sum += us;
        println!("| {name} | {us:.2} | {:.3} % |", us / fwd_us * 100.0);
    }
    println!(
        "| **sum per step** | **{sum:.2}** | **{:.3} %** |",
        sum / fwd_us * 100.0
    );
    println!("| **per sampling call** | | |");
    for (name, us) in &per_call {
        println!("| {name} | {us:.2} | {:.3} % |", us / fwd_us * 100.0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_is_per_step_and_relative_to_one_forward() {
        let r = Row {
            steps: 4,
            runs: 3,
            per_burst: 1,
            forwards: vec![4.0, 8.0, 4.0],
            variants: vec![vec![4.2, 8.2, 4.6]],
        };
        // Paired: the slow second round does not count as overhead.
        assert!((r.overhead_s(&r.variants[0]) - 0.05).abs() < 1e-12);
        assert!((r.overhead_share(&r.variants[0]) - 0.05).abs() < 1e-12);
    }
}
