//! The measurements: the checkpoint, memory children, latency rounds interleaved with the reference matmul, and the
//! optional per-stage profile. Prints the run's preamble as it goes; [`crate::report`] prints the tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use odelt_nodes::checkpoint::{self, LoadOptions};
use odelt_nodes::model::packed::{Bf16Products, CpuKernels, WeightFormat};
use odelt_nodes::model::profile::{self, StageTime};
use odelt_nodes::pipeline::Precision;
use odelt_nodes::util::process_cpu_seconds;
use odelt_nodes::DitConfig;

use crate::flops::{computed_blocks, forward_flops};
use crate::machine::{cpu_model, cpu_share, gemm_kernel, loadavg, median, RefMatmul};
use crate::model::{self, TempFile};
use crate::{child, BenchArgs};

pub struct LatencyRow {
    pub length: usize,
    pub batch: usize,
    pub blocks: usize,
    pub median_s: f64,
    pub min_s: f64,
    /// Process CPU time over (wall time x cores) during this row's runs: well below 1 means other processes took
    /// the cores.
    pub cpu_share: f64,
    pub flops: f64,
}

/// A reference matmul's timings.
pub struct MatmulTimes {
    pub size: usize,
    pub median_s: f64,
    pub bursts: usize,
    pub per_burst: usize,
    /// The kernels the matmul ran ([`gemm_kernel`], or the packed layers).
    pub kernel: String,
    pub format: WeightFormat,
    /// The operands and accumulation ([`RefMatmul::operands`]).
    pub operands: &'static str,
}

impl MatmulTimes {
    pub fn gflops(&self) -> f64 {
        2.0 * (self.size as f64).powi(3) / self.median_s / 1e9
    }
}

/// One profiled forward at the longest length.
pub struct Profile {
    pub batch: usize,
    pub total_s: f64,
    /// Stages merged over the blocks, in first-seen order.
    pub stages: Vec<StageTime>,
}

pub struct Results {
    pub started: Instant,
    pub l_min: usize,
    pub l_max: usize,
    /// Memory child reports by length (0 = the baseline that loads nothing).
    pub mem: BTreeMap<usize, BTreeMap<String, String>>,
    pub rows: Vec<LatencyRow>,
    /// Every reference matmul of the run.
    pub matmuls: Vec<MatmulTimes>,
    /// The precision of the forward.
    pub precision: Precision,
    pub profile: Option<Profile>,
}

impl Results {
    /// The reference the forward is stated against: the fastest matmul of the forward's precision (f32 for
    /// anything but bf16 weights on the fused CPU path).
    pub fn matmul(&self) -> &MatmulTimes {
        let want = if self.precision == Precision::Bf16
            && self.matmuls.iter().any(|m| m.format == WeightFormat::Bf16)
        {
            WeightFormat::Bf16
        } else {
            WeightFormat::F32
        };
        self.matmuls
            .iter()
            .filter(|m| m.format == want)
            .max_by(|a, b| a.gflops().total_cmp(&b.gflops()))
            .unwrap_or(&self.matmuls[0])
    }
}

pub fn run(a: &BenchArgs) -> Result<Results> {
    let started = Instant::now();
    let device = model::device(&a.device)?;
    if a.batch.is_empty() || a.batch.contains(&0) {
        bail!("--batch needs positive batch sizes");
    }
    println!("odelt-bench");
    println!(
        "machine: cpu `{}`, {} logical cores, candle threads {}, matmul kernels {}, fused CPU layers {}, load \
         average {} (start)",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        candle_core::utils::get_num_threads(),
        gemm_kernel(&device),
        CpuKernels::detect().name(),
        loadavg()
    );
    println!("device: {}", a.device);

    let (ckpt, _guard) = checkpoint_file(a)?;
    let cfg = checkpoint::open(&ckpt, &LoadOptions::default())
        .with_context(|| format!("opening checkpoint {}", ckpt.display()))?
        .config;
    let lengths = if a.lengths.is_empty() {
        cfg.trained_lengths()
    } else {
        a.lengths.clone()
    };
    for &l in &lengths {
        cfg.check_length(l)
            .with_context(|| format!("--lengths: {l} is not a valid length for this model"))?;
    }
    let (l_min, l_max) = (
        *lengths.iter().min().context("no lengths")?,
        *lengths.iter().max().context("no lengths")?,
    );
    println!(
        "model: hidden {}, depth {}, heads {}, {}x{}x{} latents, patch {}, group {}, depth_min {}, {} classes; lengths {:?}",
        cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.input_size, cfg.input_size, cfg.in_channels,
        cfg.patch_size, cfg.depth_group, cfg.depth_min, cfg.num_classes, lengths
    );

    // Peak memory of fresh processes (before this process loads anything big).
    let mut mem = BTreeMap::new();
    if !a.no_memory {
        for &l in std::iter::once(&0).chain(lengths.iter()) {
            mem.insert(
                l,
                child::spawn(&ckpt, l, &a.device, a.mem_batch, a.precision)?,
            );
        }
    }

    let mut refs = vec![RefMatmul::new(a.matmul_size, &device)?];
    if !device.is_cpu() && a.precision == Precision::Bf16 {
        refs.push(RefMatmul::bf16(a.matmul_size, &device)?);
    }
    let kernels = CpuKernels::detect();
    if device.is_cpu() && odelt_nodes::model::blas::LINKED {
        refs.push(RefMatmul::blas(a.matmul_size)?);
    }
    if device.is_cpu() && matches!(kernels, CpuKernels::Avx512 { .. } | CpuKernels::Avx2) {
        refs.push(RefMatmul::packed(
            a.matmul_size,
            WeightFormat::F32,
            kernels,
        )?);
        if a.precision == Precision::Bf16 && kernels.has_bf16() {
            refs.push(RefMatmul::packed(
                a.matmul_size,
                WeightFormat::Bf16,
                kernels,
            )?);
        }
    }
    let mut mm_times = refs
        .iter()
        .map(|r| r.time(a.matmul_runs.div_ceil(2).max(1)))
        .collect::<Result<Vec<_>>>()?;
    let mut rows = Vec::new();
    if !a.no_latency {
        rows = latency(a, &ckpt, &cfg, &lengths, &device, &refs, &mut mm_times)?;
        for (r, t) in refs.iter().zip(&mut mm_times) {
            t.extend(r.time(a.matmul_runs / 2)?);
        }
    }
    let profile = if a.profile {
        let b = *a.batch.iter().max().context("no batch")?;
        Some(profile_forward(
            a, &ckpt, &device, &cfg, l_max, b, a.warmup,
        )?)
    } else {
        None
    };
    Ok(Results {
        started,
        l_min,
        l_max,
        mem,
        rows,
        matmuls: refs
            .iter()
            .zip(&mm_times)
            .map(|(r, t)| MatmulTimes {
                size: a.matmul_size,
                median_s: median(t),
                bursts: t.len(),
                per_burst: r.per_burst,
                kernel: r.kernel.clone(),
                format: r.format,
                operands: r.operands,
            })
            .collect(),
        precision: a.precision,
        profile,
    })
}

/// The checkpoint: given, or random weights in a temp file (never loaded into this process), removed when the
/// returned guard drops.
fn checkpoint_file(a: &BenchArgs) -> Result<(PathBuf, TempFile)> {
    if let Some(p) = &a.ckpt {
        return Ok((p.clone(), TempFile(None)));
    }
    let cfg = model::config(&a.model, a.classes)?;
    let dir = a.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("odelt-bench-{}.safetensors", std::process::id()));
    let t0 = Instant::now();
    let guard = TempFile(Some(path.clone()));
    model::write_random_checkpoint(&cfg, &path)
        .with_context(|| format!("writing the random checkpoint {}", path.display()))?;
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "checkpoint: random {} ({} classes) -> {} ({:.0} MiB, {:.1} s)",
        a.model,
        a.classes,
        path.display(),
        size as f64 / (1 << 20) as f64,
        t0.elapsed().as_secs_f64()
    );
    Ok((path, guard))
}

/// Latency rows for every (length, batch); one reference burst after each round goes into `mm_times`.
fn latency(
    a: &BenchArgs,
    ckpt: &Path,
    cfg: &DitConfig,
    lengths: &[usize],
    device: &Device,
    refs: &[RefMatmul],
    mm_times: &mut [Vec<f64>],
) -> Result<Vec<LatencyRow>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let l_max = lengths.iter().copied().max().unwrap_or(0);
    let (_, dit) = model::open_model(ckpt, device, Some(l_max), a.precision.dtype())?;
    if a.precision != Precision::Fp32 {
        println!(
            "precision {}: {}",
            a.precision.name(),
            match dit.cpu_weights() {
                Some(WeightFormat::Bf16) => format!(
                    "fused CPU kernels, Bf16 weights, f32 activations, {}",
                    Bf16Products::detect().name()
                ),
                Some(f) => format!("fused CPU kernels, {f:?} weights, f32 activations"),
                None => "the reference ops in that dtype".to_string(),
            }
        );
    }
    let models = lengths
        .iter()
        .map(|&l| dit.with_length(l))
        .collect::<odelt_nodes::Result<Vec<_>>>()?;
    let mut rows = Vec::new();
    for &b in &a.batch {
        let runs = a.runs.unwrap_or(5).max(1);
        let inp = model::inputs(cfg, b, device)?;
        for m in &models {
            for _ in 0..a.warmup {
                model::forward(m, &inp)?;
                model::sync(device)?;
            }
        }
        // Rounds interleave the lengths (and one reference matmul), so load from other processes hits every
        // length alike instead of skewing the ratios.
        let mut times = vec![Vec::with_capacity(runs); lengths.len()];
        let mut cpu = vec![0f64; lengths.len()];
        for _ in 0..runs {
            for (j, m) in models.iter().enumerate() {
                let c0 = process_cpu_seconds();
                let t0 = Instant::now();
                let out = model::forward(m, &inp)?;
                model::sync(device)?;
                times[j].push(t0.elapsed().as_secs_f64());
                cpu[j] += process_cpu_seconds() - c0;
                drop(out);
            }
            for (r, t) in refs.iter().zip(mm_times.iter_mut()) {
                t.extend(r.time(1)?);
            }
        }
        for (j, (&l, m)) in lengths.iter().zip(&models).enumerate() {
            let blocks = computed_blocks(cfg, m, l);
            let row = LatencyRow {
                length: l,
                batch: b,
                blocks,
                median_s: median(&times[j]),
                min_s: times[j].iter().copied().fold(f64::INFINITY, f64::min),
                cpu_share: cpu_share(cpu[j], times[j].iter().sum(), cores),
                flops: forward_flops(cfg, blocks, b),
            };
            eprintln!(
                "  l={l:>2} batch={b}: median {:.1} ms over {runs} runs",
                row.median_s * 1e3
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// One forward with stage timing on.
fn profile_forward(
    a: &BenchArgs,
    ckpt: &Path,
    device: &Device,
    cfg: &DitConfig,
    l: usize,
    batch: usize,
    warmup: usize,
) -> Result<Profile> {
    let (_, dit) = model::open_model(ckpt, device, Some(l), a.precision.dtype())?;
    let inp = model::inputs(cfg, batch, device)?;
    for _ in 0..warmup.max(1) {
        model::forward(&dit, &inp)?;
    }
    profile::set_enabled(true);
    profile::take();
    let t0 = Instant::now();
    let out = model::forward(&dit, &inp);
    model::sync(device)?;
    let total_s = t0.elapsed().as_secs_f64();
    profile::set_enabled(false);
    out?;
    Ok(Profile {
        batch,
        total_s,
        stages: profile::take(),
    })
}
