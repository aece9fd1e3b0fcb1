//! `odelt-bench`: how the DiT forward scales with the active length l.
//!
//! On a DiT-B-size model (random weights written to a temporary checkpoint in the project's safetensors format, or a
//! real checkpoint given with `--ckpt`) it measures
//! - forward latency at every length for each batch size (warm-up, then the median of N runs);
//! - peak resident memory (VmHWM) of a fresh process that opens the file, loads the model at length l and runs one
//!   forward: the benchmark re-runs itself as a child (`odelt-bench child ...`, hidden) per length, plus one child
//!   that loads nothing (the process baseline: binary + candle + allocator);
//! - achieved GFLOP/s of the forward (FLOPs counted analytically) against a plain f32 matmul measured in the same run.
//!
//! It ends with one machine-readable line:
//! `summary: latency_l4_over_l12=X memory_l4_over_l12=Y forward_gflops=Z matmul_gflops=W`
//! (shortest over longest length, at the largest batch; GFLOP/s of the longest length at the largest batch).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, Parser, Subcommand};
use odelt_nodes::checkpoint::{self, safetensors_format, LoadOptions};
use odelt_nodes::params::{param_specs, Init};
use odelt_nodes::{Dit, DitConfig};

#[derive(Parser)]
#[command(
    name = "odelt-bench",
    version,
    about = "Latency, peak memory and GFLOP/s of the ODE_t(ODE_l) DiT forward at each active length",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Internal: load the model at one length, run one forward, print the process's peak memory.
    #[command(hide = true)]
    Child(ChildArgs),
    /// Write the random-weight checkpoint the benchmark uses to a file (to re-use or profile with `--ckpt FILE`).
    WriteRandom {
        /// Output path (.safetensors).
        #[arg(long)]
        out: PathBuf,
        /// `dit-b`, `dit-xl` or `tiny`.
        #[arg(long, default_value = "dit-b")]
        model: String,
        /// Classes of the model.
        #[arg(long, default_value_t = 1000)]
        classes: usize,
    },
}

#[derive(Args, Debug, Clone)]
struct BenchArgs {
    /// Timed runs per (length, batch) after the warm-up; the median is reported [default: 5].
    #[arg(long)]
    runs: Option<usize>,
    /// Untimed warm-up forwards per (length, batch).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1usize, 8])]
    batch: Vec<usize>,
    /// Active lengths, comma-separated (default: the trained lengths, 4,8,12 for DiT-B).
    #[arg(long, value_delimiter = ',')]
    lengths: Vec<usize>,
    /// `cpu` or `cuda:N` (the latter needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Benchmark this checkpoint (any file `checkpoint::open` reads, e.g. the project's .safetensors) instead of
    /// random weights.
    #[arg(long)]
    ckpt: Option<PathBuf>,
    /// Architecture of the random-weight model: `dit-b` (the default), `dit-xl`, or `tiny` (the golden test
    /// configuration, 8x8x4 latents, hidden 64, depth 4: a seconds-long smoke run).
    #[arg(long, default_value = "dit-b")]
    model: String,
    /// Classes of the random model (1000 = ImageNet; 1 = CelebA-HQ).
    #[arg(long, default_value_t = 1000)]
    classes: usize,
    /// Where the temporary random-weight checkpoint is written (default: the system temp dir). Removed at exit.
    #[arg(long)]
    tmp_dir: Option<PathBuf>,
    /// Side of the square f32 matmul used as the throughput reference.
    #[arg(long, default_value_t = 1024)]
    matmul_size: usize,
    /// Timed bursts (>= 0.25 s of back-to-back products each) of the reference matmul before and after the
    /// forward timings, plus one burst after every round of forwards; the median of all is reported.
    #[arg(long, default_value_t = 6)]
    matmul_runs: usize,
    /// Batch of the one forward each memory child runs.
    #[arg(long, default_value_t = 1)]
    mem_batch: usize,
    /// Skip the child-process memory measurement.
    #[arg(long)]
    no_memory: bool,
    /// Skip the latency measurement (memory and matmul only).
    #[arg(long)]
    no_latency: bool,
    /// Also time each stage of one forward at the longest length and the largest batch (per-op breakdown; CPU).
    #[arg(long)]
    profile: bool,
}

#[derive(Args, Debug, Clone)]
struct ChildArgs {
    #[arg(long)]
    ckpt: PathBuf,
    /// Active length; 0 = load nothing (process baseline).
    #[arg(long)]
    length: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 1)]
    batch: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Child(a)) => run_child(&a),
        Some(Cmd::WriteRandom {
            out,
            model,
            classes,
        }) => {
            write_random_checkpoint(&model_config(&model, classes)?, &out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(())
        }
        None => run_bench(&cli.bench),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Device

fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    if spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.as_str() {
        "cuda" => Some(0),
        s => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok()),
    };
    let Some(ordinal) = ordinal else {
        bail!("unknown device `{spec}` (use `cpu`, `cuda` or `cuda:N`)");
    };
    if !cfg!(feature = "cuda") {
        bail!(
            "device `{spec}` needs CUDA support, but this binary was built without it; rebuild with \
             `cargo build --release -p odelt-nodes --features cuda --bin odelt-bench` (needs nvcc at build time)"
        );
    }
    Device::new_cuda(ordinal).with_context(|| format!("opening CUDA device {ordinal}"))
}

/// Waits for queued device work (a no-op on the CPU).
fn sync(device: &Device) -> Result<()> {
    device.synchronize()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------
// Random checkpoint

/// Deterministic xorshift64* stream (cheap; quality is irrelevant for timing).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    /// Uniform in [-1, 1).
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((v >> 40) as f32) * (2.0 / (1u64 << 24) as f32) - 1.0
    }
}

fn name_seed(name: &str) -> u64 {
    // FNV-1a
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Uniform fill with the spread of the official init (zero-initialised tensors get a small non-zero spread so every
/// op does real arithmetic).
fn fill(name: &str, len: usize, init: Init) -> Vec<f32> {
    let bound = match init {
        Init::XavierUniform { fan_in, fan_out } => (6.0 / (fan_in + fan_out) as f64).sqrt(),
        Init::Normal(std) => std * 3f64.sqrt(),
        Init::Zeros => 0.02,
    } as f32;
    let mut rng = Rng::new(name_seed(name));
    (0..len).map(|_| bound * rng.next_f32()).collect()
}

/// Writes a random-weight checkpoint of `cfg` (all blocks) to `path`.
fn write_random_checkpoint(cfg: &DitConfig, path: &Path) -> Result<()> {
    let tensors = param_specs(cfg, cfg.depth)
        .into_iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            let t = Tensor::from_vec(fill(&s.name, n, s.init), s.shape.as_slice(), &Device::Cpu)?;
            Ok((s.name, t))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors_format::save(
        path,
        cfg,
        &tensors,
        &[("odelt.source", "odelt-bench random weights".to_string())],
    )?;
    Ok(())
}

/// The architecture of a random-weight model.
fn model_config(name: &str, classes: usize) -> Result<DitConfig> {
    let mut cfg = match name.to_ascii_lowercase().as_str() {
        "dit-b" => DitConfig::dit_b(classes),
        "dit-xl" => DitConfig::dit_xl(classes),
        "tiny" => DitConfig::golden_tiny(),
        other => bail!("unknown --model `{other}` (choose dit-b, dit-xl or tiny)"),
    };
    if classes == 0 {
        bail!("--classes must be at least 1");
    }
    cfg.num_classes = classes;
    Ok(cfg)
}

/// Removes the temporary checkpoint when dropped.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn open_model(path: &Path, device: &Device, length: Option<usize>) -> Result<(DitConfig, Dit)> {
    let ck = checkpoint::open(path, &LoadOptions::default())
        .with_context(|| format!("opening checkpoint {}", path.display()))?;
    let cfg = ck.config.clone();
    let model = Dit::load(&cfg, &*ck.source, device, DType::F32, length)
        .with_context(|| format!("loading the model from {}", path.display()))?;
    Ok((cfg, model))
}

// ---------------------------------------------------------------------------------------------------------------
// Inputs, FLOPs

struct Inputs {
    t: Tensor,
    x: Tensor,
    dt_base: Tensor,
    y: Tensor,
}

fn inputs(cfg: &DitConfig, batch: usize, device: &Device) -> Result<Inputs> {
    let s = cfg.input_size;
    let n = batch * s * s * cfg.in_channels;
    let mut rng = Rng::new(7);
    let x: Vec<f32> = (0..n).map(|_| rng.next_f32()).collect();
    let x = Tensor::from_vec(x, (batch, s, s, cfg.in_channels), device)?;
    let t = Tensor::from_vec(vec![0.5f32; batch], batch, device)?;
    let dt_base = Tensor::from_vec(vec![7f32; batch], batch, device)?;
    let y: Vec<u32> = (0..batch)
        .map(|i| (i % cfg.num_classes.max(1)) as u32)
        .collect();
    let y = Tensor::from_vec(y, batch, device)?;
    Ok(Inputs { t, x, dt_base, y })
}

fn forward(model: &Dit, inp: &Inputs) -> Result<Tensor> {
    Ok(model.forward(&inp.t, &inp.x, &inp.dt_base, &inp.y)?)
}

/// Multiply-add FLOPs (2 per MAC) of one forward computing `blocks` DiT blocks on a batch of `b`.
/// adaLN projections act once per sample (on the conditioning), everything else once per token.
fn forward_flops(cfg: &DitConfig, blocks: usize, b: usize) -> f64 {
    let b = b as f64;
    let t = cfg.num_tokens() as f64;
    let h = cfg.hidden_size as f64;
    let mlp = cfg.mlp_hidden as f64;
    let heads = cfg.num_heads as f64;
    let hd = cfg.head_dim() as f64;
    let pd = cfg.patch_dim() as f64;
    let freq = 256.0;
    let ada_ln = 2.0 * b * h * 6.0 * h;
    let per_token = 2.0 * b * t * (4.0 * h * h + 2.0 * h * mlp);
    let attention = 2.0 * 2.0 * b * heads * t * t * hd;
    let block = ada_ln + per_token + attention;
    let patch_embed = 2.0 * b * t * pd * h;
    let timestep_embedders = 2.0 * (2.0 * b * (freq * h + h * h));
    let final_layer = 2.0 * b * h * 2.0 * h + 2.0 * b * t * h * pd;
    blocks as f64 * block + patch_embed + timestep_embedders + final_layer
}

/// Blocks one forward at length `l` computes.
fn computed_blocks(cfg: &DitConfig, model: &Dit, l: usize) -> usize {
    if cfg.length_embedding {
        cfg.resident_blocks(l)
    } else {
        model.resident_blocks()
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Memory (child side)

/// Fields of /proc/self/status in kB (`VmHWM`, `VmRSS`, `RssAnon`, `RssFile`, ...).
fn proc_status_kb() -> Result<BTreeMap<String, u64>> {
    let s = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status (the memory measurement needs Linux procfs)")?;
    Ok(parse_status_kb(&s))
}

fn parse_status_kb(s: &str) -> BTreeMap<String, u64> {
    s.lines()
        .filter_map(|line| {
            let (k, v) = line.split_once(':')?;
            let v = v.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

fn run_child(a: &ChildArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let mut fields = vec![("length".to_string(), a.length.to_string())];
    // Read while the model is still alive, so RssAnon/RssFile show what it holds.
    let st = if a.length > 0 {
        let t0 = Instant::now();
        let (cfg, model) = open_model(&a.ckpt, &device, Some(a.length))?;
        let load_ms = t0.elapsed().as_secs_f64() * 1e3;
        let inp = inputs(&cfg, a.batch, &device)?;
        let t1 = Instant::now();
        let out = forward(&model, &inp)?;
        sync(&device)?;
        let fwd_ms = t1.elapsed().as_secs_f64() * 1e3;
        let checksum: f32 = out.abs()?.sum_all()?.to_scalar()?;
        if !checksum.is_finite() {
            bail!(
                "the forward at length {} produced non-finite values",
                a.length
            );
        }
        fields.push((
            "resident_blocks".into(),
            model.resident_blocks().to_string(),
        ));
        fields.push(("load_ms".into(), format!("{load_ms:.0}")));
        fields.push(("forward_ms".into(), format!("{fwd_ms:.0}")));
        proc_status_kb()?
    } else {
        proc_status_kb()?
    };
    for k in ["VmHWM", "VmRSS", "RssAnon", "RssFile"] {
        fields.push((k.to_string(), st.get(k).copied().unwrap_or(0).to_string()));
    }
    let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("child: {}", line.join(" "));
    Ok(())
}

/// Runs the child for `length` and returns its `key=value` report.
fn spawn_child(
    ckpt: &Path,
    length: usize,
    device: &str,
    batch: usize,
) -> Result<BTreeMap<String, String>> {
    let exe = std::env::current_exe().context("locating the odelt-bench executable")?;
    let out = Command::new(&exe)
        .args(["child", "--ckpt"])
        .arg(ckpt)
        .args([
            "--length",
            &length.to_string(),
            "--device",
            device,
            "--batch",
            &batch.to_string(),
        ])
        .output()
        .with_context(|| format!("spawning {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "memory child at length {length} failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("child: "))
        .with_context(|| format!("memory child at length {length} printed no report: {stdout}"))?;
    Ok(line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

// ---------------------------------------------------------------------------------------------------------------
// Bench (parent side)

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Process CPU time (user + system, all threads) in seconds, from /proc/self/stat (USER_HZ = 100); NaN if
/// unavailable.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    match (
        f.get(11).and_then(|v| v.parse::<f64>().ok()),
        f.get(12).and_then(|v| v.parse::<f64>().ok()),
    ) {
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

/// CPU seconds over (wall seconds x cores); NaN when the wall time is too short for the 10 ms tick of
/// /proc/self/stat.
fn cpu_share(cpu_s: f64, wall_s: f64, cores: usize) -> f64 {
    if wall_s < 1.0 {
        f64::NAN
    } else {
        cpu_s / (wall_s * cores.max(1) as f64)
    }
}

/// The reference: a square f32 matmul on random inputs, timed in bursts of back-to-back products lasting at least
/// [`RefMatmul::BURST_S`], so that on a shared machine its samples see the same kind of preemption as the
/// seconds-long forwards (a single 40 ms product often fits between two preemptions and flatters the reference).
struct RefMatmul {
    a: Tensor,
    b: Tensor,
    device: Device,
    per_burst: usize,
}

impl RefMatmul {
    const BURST_S: f64 = 0.25;

    fn new(n: usize, device: &Device) -> Result<Self> {
        let mut rng = Rng::new(11);
        let a: Vec<f32> = (0..n * n).map(|_| rng.next_f32()).collect();
        let b: Vec<f32> = (0..n * n).map(|_| rng.next_f32()).collect();
        let mut r = RefMatmul {
            a: Tensor::from_vec(a, (n, n), device)?,
            b: Tensor::from_vec(b, (n, n), device)?,
            device: device.clone(),
            per_burst: 1,
        };
        // Warm-up, then size the bursts from the fastest of a few single products.
        let single = r.time(3)?.into_iter().fold(f64::INFINITY, f64::min);
        r.per_burst = ((Self::BURST_S / single.max(1e-6)).ceil() as usize).clamp(1, 1000);
        Ok(r)
    }

    /// Seconds per product, one value per burst, for `bursts` bursts.
    fn time(&self, bursts: usize) -> Result<Vec<f64>> {
        let mut times = Vec::with_capacity(bursts);
        for _ in 0..bursts {
            let t0 = Instant::now();
            for _ in 0..self.per_burst {
                let c = self.a.matmul(&self.b)?;
                sync(&self.device)?;
                drop(c);
            }
            times.push(t0.elapsed().as_secs_f64() / self.per_burst as f64);
        }
        Ok(times)
    }
}

/// One forward with stage timing on: (total seconds, stages merged over the blocks).
fn profile_forward(
    ckpt: &Path,
    device: &Device,
    cfg: &DitConfig,
    l: usize,
    batch: usize,
    warmup: usize,
) -> Result<(f64, Vec<odelt_nodes::model::profile::StageTime>)> {
    use odelt_nodes::model::profile;
    let (_, model) = open_model(ckpt, device, Some(l))?;
    let inp = inputs(cfg, batch, device)?;
    for _ in 0..warmup.max(1) {
        forward(&model, &inp)?;
    }
    profile::set_enabled(true);
    profile::take();
    let t0 = Instant::now();
    let out = forward(&model, &inp);
    sync(device)?;
    let total = t0.elapsed().as_secs_f64();
    profile::set_enabled(false);
    out?;
    Ok((total, profile::take()))
}

struct LatencyRow {
    length: usize,
    batch: usize,
    blocks: usize,
    median_s: f64,
    min_s: f64,
    /// Process CPU time over (wall time x cores) during this row's runs: well below 1 means other processes took
    /// the cores.
    cpu_share: f64,
    flops: f64,
}

fn mib(kb: f64) -> f64 {
    kb / 1024.0
}

fn run_bench(a: &BenchArgs) -> Result<()> {
    let t_start = Instant::now();
    let device = parse_device(&a.device)?;
    if a.batch.is_empty() || a.batch.contains(&0) {
        bail!("--batch needs positive batch sizes");
    }
    println!("odelt-bench");
    println!(
        "machine: cpu `{}`, {} logical cores, candle threads {}, load average {} (start)",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        candle_core::utils::get_num_threads(),
        loadavg()
    );
    println!("device: {}", a.device);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // The checkpoint: given, or random DiT-B weights in a temp file (never loaded into this process).
    let mut _guard = TempFile(None);
    let ckpt = match &a.ckpt {
        Some(p) => p.clone(),
        None => {
            let cfg = model_config(&a.model, a.classes)?;
            let dir = a.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
            let path = dir.join(format!("odelt-bench-{}.safetensors", std::process::id()));
            let t0 = Instant::now();
            _guard = TempFile(Some(path.clone()));
            write_random_checkpoint(&cfg, &path)
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
            path
        }
    };
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
    let mut mem: BTreeMap<usize, BTreeMap<String, String>> = BTreeMap::new();
    if !a.no_memory {
        for &l in std::iter::once(&0).chain(lengths.iter()) {
            mem.insert(l, spawn_child(&ckpt, l, &a.device, a.mem_batch)?);
        }
    }

    let n = a.matmul_size;
    let mm_flops = 2.0 * (n as f64).powi(3);
    let reference = RefMatmul::new(n, &device)?;
    let mut mm_times = reference.time(a.matmul_runs.div_ceil(2).max(1))?;

    let mut rows = Vec::new();
    if !a.no_latency {
        let (_, model) = open_model(&ckpt, &device, Some(l_max))?;
        let models = lengths
            .iter()
            .map(|&l| model.with_length(l))
            .collect::<odelt_nodes::Result<Vec<_>>>()?;
        for &b in &a.batch {
            let runs = a.runs.unwrap_or(5).max(1);
            let inp = inputs(&cfg, b, &device)?;
            for m in &models {
                for _ in 0..a.warmup {
                    forward(m, &inp)?;
                    sync(&device)?;
                }
            }
            // Rounds interleave the lengths (and one reference matmul), so load from other processes hits every
            // length alike instead of skewing the ratios.
            let mut times = vec![Vec::with_capacity(runs); lengths.len()];
            let mut cpu = vec![0f64; lengths.len()];
            for _ in 0..runs {
                for (j, m) in models.iter().enumerate() {
                    let c0 = cpu_seconds();
                    let t0 = Instant::now();
                    let out = forward(m, &inp)?;
                    sync(&device)?;
                    times[j].push(t0.elapsed().as_secs_f64());
                    cpu[j] += cpu_seconds() - c0;
                    drop(out);
                }
                mm_times.extend(reference.time(1)?);
            }
            for (j, (&l, m)) in lengths.iter().zip(&models).enumerate() {
                let blocks = computed_blocks(&cfg, m, l);
                let row = LatencyRow {
                    length: l,
                    batch: b,
                    blocks,
                    median_s: median(&times[j]),
                    min_s: times[j].iter().copied().fold(f64::INFINITY, f64::min),
                    cpu_share: cpu_share(cpu[j], times[j].iter().sum(), cores),
                    flops: forward_flops(&cfg, blocks, b),
                };
                eprintln!(
                    "  l={l:>2} batch={b}: median {:.1} ms over {runs} runs",
                    row.median_s * 1e3
                );
                rows.push(row);
            }
        }
        mm_times.extend(reference.time(a.matmul_runs / 2)?);
    }
    let breakdown = if a.profile {
        let b = *a.batch.iter().max().context("no batch")?;
        Some((
            b,
            profile_forward(&ckpt, &device, &cfg, l_max, b, a.warmup)?,
        ))
    } else {
        None
    };
    let mm_median = median(&mm_times);
    let matmul_gflops = mm_flops / mm_median / 1e9;

    // ---- report
    println!();
    if !rows.is_empty() {
        println!(
            "forward latency (f32, {} warm-up, median of N runs):",
            a.warmup
        );
        println!(
            "| l | batch | blocks | median ms | min ms | ms/image | GFLOP | GFLOP/s | vs l={l_max} | CPU share |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for r in &rows {
            let base = rows
                .iter()
                .find(|o| o.batch == r.batch && o.length == l_max)
                .map_or(f64::NAN, |o| r.median_s / o.median_s);
            println!(
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} | {} |",
                r.length,
                r.batch,
                r.blocks,
                r.median_s * 1e3,
                r.min_s * 1e3,
                r.median_s * 1e3 / r.batch as f64,
                r.flops / 1e9,
                r.flops / r.median_s / 1e9,
                base,
                if r.cpu_share.is_finite() {
                    format!("{:.0}%", r.cpu_share * 100.0)
                } else {
                    "-".to_string()
                }
            );
        }
        println!();
    }
    println!(
        "reference matmul: {n}x{n} @ {n}x{n} f32, median {:.1} ms per product over {} bursts of {} -> {:.1} GFLOP/s",
        mm_median * 1e3,
        mm_times.len(),
        reference.per_burst,
        matmul_gflops
    );
    println!();
    if let Some((b, (total, stages))) = &breakdown {
        println!(
            "per-stage breakdown of one forward at l={l_max}, batch {b} ({:.1} ms in all):",
            total * 1e3
        );
        println!("| stage | ms per forward | share | calls |");
        println!("|---|---|---|---|");
        let mut accounted = 0.0;
        for s in stages {
            accounted += s.seconds;
            println!(
                "| {} | {:.1} | {:.1}% | {} |",
                s.name,
                s.seconds * 1e3,
                100.0 * s.seconds / total,
                s.calls
            );
        }
        println!(
            "| other (length embedding, unpatchify, glue) | {:.1} | {:.1}% | |",
            (total - accounted) * 1e3,
            100.0 * (total - accounted) / total
        );
        let mm: f64 = stages
            .iter()
            .filter(|s| s.name.contains("matmul") || s.name.starts_with("adaLN"))
            .map(|s| s.seconds)
            .sum();
        println!(
            "matmul stages: {:.1}% of the forward; element-wise and copies: {:.1}%",
            100.0 * mm / total,
            100.0 * (1.0 - mm / total)
        );
        println!();
    }
    let hwm = |l: usize| -> f64 {
        mem.get(&l)
            .and_then(|m| m.get("VmHWM"))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    if !mem.is_empty() {
        println!(
            "peak resident memory of a fresh process (VmHWM; open + load at length l + one forward at batch {}):",
            a.mem_batch
        );
        println!("| l | resident blocks | VmHWM MiB | above baseline MiB | RssAnon MiB (after forward) | RssFile MiB (after forward) | vs l={l_max} |");
        println!("|---|---|---|---|---|---|---|");
        let base = hwm(0);
        for (l, m) in &mem {
            let g = |k: &str| {
                m.get(k)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            };
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
                if *l == 0 {
                    "baseline (nothing loaded)".to_string()
                } else {
                    l.to_string()
                },
                m.get("resident_blocks").map_or("0", String::as_str),
                mib(hwm(*l)),
                mib(hwm(*l) - base),
                mib(g("RssAnon")),
                mib(g("RssFile")),
                hwm(*l) / hwm(l_max)
            );
        }
        println!(
            "above-baseline ratio l={l_min}/l={l_max}: {:.2}",
            (hwm(l_min) - base) / (hwm(l_max) - base)
        );
        println!();
    }

    let big = *a.batch.iter().max().context("no batch")?;
    let lat = |l: usize| {
        rows.iter()
            .find(|r| r.batch == big && r.length == l)
            .map_or(f64::NAN, |r| r.median_s)
    };
    let fwd_gflops = rows
        .iter()
        .find(|r| r.batch == big && r.length == l_max)
        .map_or(f64::NAN, |r| r.flops / r.median_s / 1e9);
    println!(
        "load average {} (end); total {:.0} s",
        loadavg(),
        t_start.elapsed().as_secs_f64()
    );
    println!(
        "summary: latency_l4_over_l12={:.3} memory_l4_over_l12={:.3} forward_gflops={:.1} matmul_gflops={:.1}",
        lat(l_min) / lat(l_max),
        hwm(l_min) / hwm(l_max),
        fwd_gflops,
        matmul_gflops
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_scale_with_blocks_and_batch() {
        let cfg = DitConfig::dit_b(1000);
        let f = |blocks, b| forward_flops(&cfg, blocks, b);
        // Linear in the batch, affine in the block count.
        assert!((f(12, 8) / f(12, 1) - 8.0).abs() < 1e-9);
        let per_block = f(5, 1) - f(4, 1);
        assert!(((f(12, 1) - f(4, 1)) / per_block - 8.0).abs() < 1e-9);
        // The adaLN projection acts per sample: doubling the tokens must not double its cost.
        let mut big = cfg.clone();
        big.input_size *= 2; // 4x tokens
        let h = cfg.hidden_size as f64;
        let ada = 2.0 * h * 6.0 * h;
        let per_block_big = forward_flops(&big, 1, 1) - forward_flops(&big, 0, 1);
        let t = cfg.num_tokens() as f64;
        let linear_part = 2.0 * t * (4.0 * h * h + 2.0 * h * cfg.mlp_hidden as f64);
        let attention = 4.0 * t * t * h;
        assert!((per_block - (ada + linear_part + attention)).abs() < 1.0);
        assert!((per_block_big - (ada + 4.0 * linear_part + 16.0 * attention)).abs() < 1.0);
    }

    #[test]
    fn status_parser_reads_kb_fields() {
        let s = "Name:\todelt-bench\nVmHWM:\t  123456 kB\nVmRSS:\t 100 kB\nThreads:\t3\n";
        let m = parse_status_kb(s);
        assert_eq!(m.get("VmHWM"), Some(&123456));
        assert_eq!(m.get("VmRSS"), Some(&100));
        assert!(!m.contains_key("Threads"));
        assert!(!m.contains_key("Name"));
    }

    #[test]
    fn fill_is_deterministic_and_bounded() {
        let init = Init::XavierUniform {
            fan_in: 768,
            fan_out: 768,
        };
        let a = fill("DiTBlock_0/Dense_1/kernel", 1000, init);
        let b = fill("DiTBlock_0/Dense_1/kernel", 1000, init);
        let c = fill("DiTBlock_0/Dense_2/kernel", 1000, init);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let bound = (6.0f32 / 1536.0).sqrt();
        assert!(a.iter().all(|v| v.abs() <= bound));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.1 * bound);
    }

    #[test]
    fn device_parse_rejects_unknown_and_explains_cuda() {
        assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
        assert!(parse_device("tpu").is_err());
        if !cfg!(feature = "cuda") {
            let e = parse_device("cuda:0").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
