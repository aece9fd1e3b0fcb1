//! `odelt-model eval`: FD / class accuracy / latency for every (T, l), with a real-vs-real calibration row; writes
//! a markdown table, a CSV and a PNG plot of FD against latency (one curve per l). `--precision bf16` loads the
//! blocks in bf16; every output states the precision and which kernels ran ([`compute_path`]).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use odelt_nodes::data::fashion_mnist::Split;
use odelt_nodes::eval::classifier::{Classifier, FEATURE_DIM};
use odelt_nodes::eval::frechet::{frechet_distance, Gaussian};
use odelt_nodes::eval::sweep::{self, Calibration, SweepOptions};
use odelt_nodes::model::packed::{Bf16Products, CpuKernels, WeightFormat};
use odelt_nodes::pipeline::Precision;
use odelt_nodes::Dit;

use crate::common::{prefixed, DataArgs};
use crate::model_io::{fixed_dt_base, load_model_as};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value = "models/fashion-dit.safetensors")]
    model: PathBuf,
    #[arg(long, default_value = "models/classifier.safetensors")]
    classifier: PathBuf,
    /// Output prefix: PREFIX.md, PREFIX.csv, PREFIX.png and PREFIX.svg (the plot), PREFIX.json.
    #[arg(long, default_value = "docs/results/fashion-dit")]
    out: PathBuf,
    /// Euler step counts T.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64,128")]
    steps: Vec<usize>,
    /// Lengths l (default: every trained length).
    #[arg(long, value_delimiter = ',')]
    lengths: Vec<usize>,
    /// Samples per (T, l).
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Different sample counts for some T, e.g. `64=1000,128=1000` (to fit a time budget; stated in the table).
    #[arg(long, value_delimiter = ',')]
    n_override: Vec<String>,
    /// Images per sampling batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    #[arg(long, default_value_t = 1.0)]
    guidance: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Precision of the model's blocks: fp32, bf16 or fp16. bf16 on an AVX-512 CPU runs the fused kernels
    /// (bf16 weights, f32 accumulation; the inputs rounded to bf16 too on AMX or where vdpbf16ps is fast), elsewhere candle's reference ops in that dtype; the outputs
    /// say which ran.
    #[arg(long, default_value = "fp32")]
    precision: Precision,
    /// Plot title.
    #[arg(long, default_value = "Fashion-MNIST: FD vs latency")]
    title: String,
}

pub fn run(a: Args) -> Result<()> {
    let device = Device::Cpu;
    let (model, opts) = load_model_as(&a.model, &device, a.precision.dtype())?;
    let path = compute_path(&model);
    let path_tag = compute_tag(&model, a.precision);
    eprintln!("precision {}: {path}", a.precision.name());
    let c = Classifier::load(&a.classifier, &device)
        .with_context(|| format!("loading classifier {}", a.classifier.display()))?;
    let test = a.data.load(Split::Test)?;
    let train = a.data.load(Split::Train)?;
    let (reference, test_acc) = sweep::real_stats(&c, &test, &device)?;
    let mut overrides: Vec<(usize, usize)> = Vec::new();
    for o in &a.n_override {
        let (t, n) = o
            .split_once('=')
            .and_then(|(t, n)| Some((t.trim().parse().ok()?, n.trim().parse().ok()?)))
            .with_context(|| format!("--n-override `{o}`: expected T=N"))?;
        overrides.push((t, n));
    }
    let n_for = |t: usize| {
        overrides
            .iter()
            .find(|(tt, _)| *tt == t)
            .map_or(a.n, |(_, n)| *n)
    };
    let mut ns: Vec<usize> = a.steps.iter().map(|&t| n_for(t)).collect();
    ns.sort_unstable();
    ns.dedup();
    ns.reverse();
    // Calibration: n training images (a fixed stride through the set) against the test statistics, for every n used.
    let mut cals = Vec::new();
    for &n in &ns {
        let n_real = n.min(train.len());
        let stride = (train.len() / n_real.max(1)).max(1);
        let idx: Vec<usize> = (0..n_real).map(|i| i * stride).collect();
        let (px, lb) = train.gather(&idx);
        let (f, p) = c.features(&px, 500, &device)?;
        cals.push(Calibration {
            n: n_real,
            n_test: test.len(),
            fd_train_vs_test: frechet_distance(&Gaussian::fit(&f, FEATURE_DIM)?, &reference)?,
            classifier_test_accuracy: test_acc,
            classifier_train_subset_accuracy: p.iter().zip(&lb).filter(|(a, b)| a == b).count()
                as f64
                / n_real as f64,
        });
    }
    let cal = cals[0].clone();
    eprintln!(
        "real vs real: FD {:.3} (train {} vs test {}), classifier test accuracy {:.2}%",
        cal.fd_train_vs_test,
        cal.n,
        test.len(),
        100.0 * test_acc
    );
    let cfg = model.config().clone();
    let lengths = if a.lengths.is_empty() {
        cfg.trained_lengths()
    } else {
        a.lengths.clone()
    };
    let so = SweepOptions {
        steps: a.steps.clone(),
        lengths: lengths.clone(),
        n: a.n,
        batch: a.batch,
        guidance: a.guidance,
        seed: a.seed,
        fixed_dt_base: fixed_dt_base(&opts),
    };
    if let Some(d) = so.fixed_dt_base {
        eprintln!("model trained without time consistency: sampling with dt_base {d} at every T");
    }
    if let Some(d) = a.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    let start = Instant::now();
    let mut rows = Vec::new();
    let log_path = prefixed(&a.out, "log.csv");
    let mut log = std::fs::File::create(&log_path)?;
    for &t in &a.steps {
        for &l in &lengths {
            let so_t = SweepOptions {
                n: n_for(t),
                ..so.clone()
            };
            let r = sweep::evaluate_setting(&model, &c, &reference, l, t, &so_t)?;
            eprintln!(
                "T={t:>3} l={l}: FD {:.3} acc {:.1}% wall {:.3} cpu {:.3} ms/img  (elapsed {:.0}s)",
                r.fd,
                100.0 * r.accuracy,
                r.latency_ms,
                r.cpu_ms,
                start.elapsed().as_secs_f64()
            );
            writeln!(
                log,
                "{},{},{},{:.4},{:.4},{:.3}",
                l, t, r.n, r.fd, r.accuracy, r.latency_ms
            )?;
            rows.push(r);
        }
    }
    let title = match a.precision {
        Precision::Fp32 => format!("{} (w = {})", a.title, a.guidance),
        p => format!("{} (w = {}, {})", a.title, a.guidance, p.name()),
    };
    let md = format!(
        "Model `{}`, classifier `{}`, N = {} samples per setting (class-balanced), guidance w = {}, Euler, \
         seed {}{}.\nPrecision {}: {}.\nLatency = CPU time (user+system, /proc) of sampling per image at batch {} (the CSV has both: `latency_ms_per_image` is wall-clock, `cpu_ms_per_image` CPU time); \
         the 2 cores are shared with other jobs, so CPU time is the steadier measure.\n\n{}",
        a.model.display(),
        a.classifier.display(),
        a.n,
        a.guidance,
        a.seed,
        so.fixed_dt_base
            .map(|d| format!(", dt_base fixed at {d} (model trained without time consistency)"))
            .unwrap_or_default(),
        a.precision.name(),
        path,
        a.batch,
        sweep::to_markdown(&rows, &cals)
    );
    std::fs::write(prefixed(&a.out, "md"), md)?;
    std::fs::write(
        prefixed(&a.out, "csv"),
        with_precision_columns(&sweep::to_csv(&rows), a.precision, &path_tag),
    )?;
    std::fs::write(
        prefixed(&a.out, "json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "model": a.model, "rows": rows, "calibration": cals, "n": a.n, "guidance": a.guidance,
            "seed": a.seed, "batch": a.batch, "seconds": start.elapsed().as_secs_f64(),
            "threads": std::env::var("RAYON_NUM_THREADS").ok(),
            "precision": a.precision.name(), "cpu_path": path_tag, "compute": path,
        }))?,
    )?;
    sweep::plot(&rows, &title, Some(cal.fd_train_vs_test)).save(&a.out, 900, 560)?;
    println!(
        "wrote {}.{{md,csv,json,png,svg}} in {:.0}s",
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Which kernels run the model's blocks, in words (the tables' "what was measured").
pub fn compute_path(model: &Dit) -> String {
    match model.cpu_weights() {
        Some(WeightFormat::F32) => format!(
            "fused CPU kernels, f32 weights ({})",
            CpuKernels::detect().name()
        ),
        Some(WeightFormat::Bf16) => match Bf16Products::detect() {
            Bf16Products::Dot => format!(
                "fused CPU kernels, bf16 weights, every product's inputs rounded to bf16 with f32 accumulation, \
                 f32 activations between the products ({})",
                CpuKernels::detect().name()
            ),
            Bf16Products::Amx => format!(
                "fused CPU kernels, bf16 weights, every dense layer's inputs rounded to bf16 and multiplied on \
                 AMX tiles with f32 accumulation, f32 attention and activations between the products ({})",
                CpuKernels::detect().name()
            ),
            Bf16Products::Widen => format!(
                "fused CPU kernels, bf16 weights widened to f32 in the products, f32 inputs, activations and \
                 accumulation ({}; its vdpbf16ps is slower than f32 FMAs here)",
                CpuKernels::detect().name()
            ),
        },
        None => format!(
            "candle reference ops in {:?} (no fused CPU kernels for this precision here)",
            model.precision()
        ),
    }
}

/// The short form of [`compute_path`] for the CSV and JSON: `fused-f32`, `fused-bf16` or `reference-<precision>`.
pub fn compute_tag(model: &Dit, precision: Precision) -> String {
    match model.cpu_weights() {
        Some(WeightFormat::F32) => "fused-f32".into(),
        Some(WeightFormat::Bf16) => "fused-bf16".into(),
        None => format!("reference-{}", precision.name()),
    }
}

/// [`sweep::to_csv`]'s table with two more columns, `precision` and `cpu_path`, on every row.
fn with_precision_columns(csv: &str, precision: Precision, path_tag: &str) -> String {
    csv.lines()
        .enumerate()
        .map(|(i, line)| {
            if i == 0 {
                format!("{line},precision,cpu_path\n")
            } else {
                format!("{line},{},{path_tag}\n", precision.name())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_gains_precision_columns() {
        let csv = "length,steps\n6,1\n4,1\n";
        assert_eq!(
            with_precision_columns(csv, Precision::Bf16, "fused-bf16"),
            "length,steps,precision,cpu_path\n6,1,bf16,fused-bf16\n4,1,bf16,fused-bf16\n"
        );
    }
}
