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
//!
//! Modules: [`model`] (device, random checkpoint, inputs), [`child`] (the memory children), [`measure`] (the
//! measurements), [`machine`] (load, CPU share, the reference matmul), [`flops`], [`report`] (the tables).

mod child;
mod flops;
mod gemm;
mod machine;
mod measure;
mod model;
mod report;
mod sampling;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

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
    /// The products of one DiT block, timed on each CPU kernel of this build (candle's matmul, the packed f32 and
    /// bf16 layers): GFLOP/s per shape.
    Gemm {
        /// Hidden size (768 = DiT-B, 1152 = DiT-XL).
        #[arg(long, default_value_t = 768)]
        hidden: usize,
        /// Tokens per sample (256 for 32x32 latents and patch 2).
        #[arg(long, default_value_t = 256)]
        tokens: usize,
        /// Batch.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Side of the extra square product.
        #[arg(long, default_value_t = 1024)]
        square: usize,
        /// Timed bursts per shape and kernel (the median is printed).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Per-step overhead of the sampler node's sampling loop against bare forwards, at each step count.
    Sampling(sampling::SamplingArgs),
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
    /// Precision of the forward and the memory children: fp32, bf16 (on an AVX-512 CPU: bf16 weights, f32 accumulation,
    /// with a bf16 reference matmul; AMX tiles where the CPU has them, else bf16 products where its vdpbf16ps is fast,
    /// else the weights widened to f32)
    /// or fp16.
    #[arg(long, default_value = "fp32")]
    precision: odelt_nodes::pipeline::Precision,
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
    #[arg(long, default_value = "fp32")]
    precision: odelt_nodes::pipeline::Precision,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Child(a)) => child::run(&a),
        Some(Cmd::WriteRandom {
            out,
            model,
            classes,
        }) => {
            model::write_random_checkpoint(&model::config(&model, classes)?, &out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Some(Cmd::Gemm {
            hidden,
            tokens,
            batch,
            square,
            runs,
        }) => gemm::run(hidden, tokens, batch, square, runs),
        Some(Cmd::Sampling(a)) => sampling::run(&a),
        None => {
            let results = measure::run(&cli.bench)?;
            report::print(&cli.bench, &results)
        }
    }
}
