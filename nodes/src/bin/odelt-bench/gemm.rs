//! `odelt-bench gemm`: the products of one DiT block at a batch, timed on every CPU kernel this build has: candle's
//! matmul (the `gemm` crate), the system BLAS's `sgemm` in a `blas` build, the packed f32 layers of the fused path
//! (AVX-512 and AVX2 tiles, where the CPU has them), and their bf16 form on AVX-512, each reading its weights from memory as in a forward (distinct copies cycled past the L3).

mod peak;

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use odelt_nodes::model::packed::{Bf16Products, CpuKernels, Epilogue, PackedLinear, WeightFormat};
use odelt_nodes::util::XorShift;

use crate::machine::{self, median};

/// One product shape `[m, k] x [k, n]`.
#[derive(Debug, Clone)]
pub struct Shape {
    pub name: String,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// The products of a DiT block with `hidden` features and `tokens` tokens per sample at `batch`, plus a square.
pub fn block_shapes(hidden: usize, tokens: usize, batch: usize, square: usize) -> Vec<Shape> {
    let m = tokens * batch;
    let s = |name: &str, m, k, n| Shape {
        name: name.to_string(),
        m,
        k,
        n,
    };
    vec![
        s("adaLN", batch, hidden, 6 * hidden),
        s("qkv", m, hidden, 3 * hidden),
        s("attn out", m, hidden, hidden),
        s("mlp in", m, hidden, 4 * hidden),
        s("mlp out", m, 4 * hidden, hidden),
        s("square", square, square, square),
    ]
}

/// Weight bytes cycled per product: twice the development machine's 32 MB L3.
const COLD_BYTES: usize = 64 << 20;

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut r = XorShift::new(seed);
    (0..n).map(|_| r.next_f32() - 0.5).collect()
}

/// Median seconds per call of `f` over `runs` bursts of at least 0.2 s.
fn time(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let t0 = Instant::now();
    f()?;
    let per = ((0.2 / t0.elapsed().as_secs_f64().max(1e-6)).ceil() as usize).clamp(1, 10_000);
    let mut v = Vec::new();
    for _ in 0..runs {
        let t0 = Instant::now();
        for _ in 0..per {
            f()?;
        }
        v.push(t0.elapsed().as_secs_f64() / per as f64);
    }
    Ok(median(&v))
}

/// GFLOP/s of each kernel on each shape, in the order of `kernels()`.
pub fn measure(shapes: &[Shape], runs: usize) -> Result<(Vec<String>, Vec<Vec<f64>>)> {
    let here = CpuKernels::detect();
    let mut names = vec!["candle matmul (gemm crate)".to_string()];
    let mut packed = vec![(CpuKernels::Portable, WeightFormat::F32, Bf16Products::Widen)];
    if let Some(lib) = odelt_nodes::model::blas::library() {
        names.push(format!("system BLAS sgemm ({lib})"));
    }
    if matches!(here, CpuKernels::Avx512 { .. }) {
        names.push("odelt packed f32".to_string());
        packed.push((here, WeightFormat::F32, Bf16Products::Widen));
    }
    if CpuKernels::Avx2.supported() {
        // Also on AVX-512 CPUs: the kernel an AVX2-only CPU would run, on this CPU's cores.
        names.push("odelt packed f32, avx2".to_string());
        packed.push((CpuKernels::Avx2, WeightFormat::F32, Bf16Products::Widen));
    }
    if here.has_bf16() {
        // Every bf16 product the CPU has; the first is the one the model uses here.
        let chosen = Bf16Products::detect();
        let all = [Bf16Products::Amx, Bf16Products::Dot, Bf16Products::Widen];
        for products in std::iter::once(chosen).chain(all.into_iter().filter(|&p| p != chosen)) {
            if products.supported() {
                names.push(format!("odelt packed bf16, {}", short(products)));
                packed.push((here, WeightFormat::Bf16, products));
            }
        }
    }
    let mut rows = Vec::new();
    for s in shapes {
        let a = rand(s.m * s.k, 1);
        let bias = rand(s.n, 3);
        let flop = 2.0 * (s.m * s.k * s.n) as f64;
        // Distinct weights, cycled, until they exceed the last-level cache twice over: each product reads its
        // weights from memory, as a forward's layers do (the same weights again would come from L3).
        let copies = (COLD_BYTES / (4 * s.k * s.n).max(1)).clamp(1, 64);
        let ws: Vec<Vec<f32>> = (0..copies).map(|c| rand(s.k * s.n, 2 + c as u64)).collect();
        let mut row = Vec::new();
        let at = Tensor::from_slice(&a, (s.m, s.k), &Device::Cpu)?;
        let wts = ws
            .iter()
            .map(|w| Tensor::from_slice(w, (s.k, s.n), &Device::Cpu))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut i = 0;
        row.push(
            flop / time(runs, || {
                i = (i + 1) % copies;
                at.matmul(&wts[i])?;
                Ok(())
            })? / 1e9,
        );
        drop(wts);
        if odelt_nodes::model::blas::LINKED {
            let mut c = vec![0f32; s.m * s.n];
            row.push(
                flop / time(runs, || {
                    i = (i + 1) % copies;
                    odelt_nodes::model::blas::sgemm(s.m, s.n, s.k, &a, &ws[i], &mut c)?;
                    Ok(())
                })? / 1e9,
            );
        }
        // The portable packed layer is the same `gemm` call plus the bias pass: skip it, the candle row stands for it.
        for &(kernels, format, products) in &packed[1..] {
            let layers = ws
                .iter()
                .map(|w| PackedLinear::pack_with(w, &bias, s.k, s.n, format, kernels, products))
                .collect::<odelt_nodes::Result<Vec<_>>>()?;
            row.push(
                flop / time(runs, || {
                    i = (i + 1) % copies;
                    layers[i].forward(&a, s.m, Epilogue::Bias)?;
                    Ok(())
                })? / 1e9,
            );
        }
        rows.push(row);
    }
    Ok((names, rows))
}

fn short(p: Bf16Products) -> &'static str {
    match p {
        Bf16Products::Dot => "dot",
        Bf16Products::Widen => "widened",
        Bf16Products::Amx => "amx",
    }
}

/// Prints the table.
pub fn run(hidden: usize, tokens: usize, batch: usize, square: usize, runs: usize) -> Result<()> {
    let shapes = block_shapes(hidden, tokens, batch, square);
    println!(
        "GEMM throughput, GFLOP/s (median of {runs} bursts; cpu `{}`, {} threads, load average {}):",
        machine::cpu_model(),
        rayon::current_num_threads(),
        machine::loadavg()
    );
    let (f32_peak, bf16_peak, amx_peak, amx_loads) = peak::measure();
    let fmt = |p: Option<f64>| p.map_or("-".to_string(), |g| format!("{g:.1}"));
    println!(
        "arithmetic peak, GFLOP/s (register-only chains on every thread): f32 FMA {}, bf16 vdpbf16ps {}, \
         bf16 AMX {}",
        fmt(f32_peak),
        fmt(bf16_peak),
        fmt(amx_peak)
    );
    let tiles = peak::tiles();
    if !tiles.is_empty() {
        let cells: Vec<String> = tiles
            .iter()
            .map(|&(name, g)| match f32_peak {
                Some(p) if p > 0.0 => format!("{name} {g:.1} ({:.2} of the FMA chains)", g / p),
                _ => format!("{name} {g:.1}"),
            })
            .collect();
        println!(
            "f32 tile ceiling, GFLOP/s (8 x 48 tiles over an L2-resident 768-deep panel, random data, every \
             thread): {}",
            cells.join(", ")
        );
    }
    if let Some(gbs) = amx_loads {
        // What bounds the AMX layers: one 1 KB tile load per product at best (amx::rows32).
        let threads = rayon::current_num_threads().max(1) as f64;
        println!(
            "AMX tile loads from L1 on every thread: {gbs:.1} GB/s, one 1 KB tile every {:.1} ns per thread",
            threads * 1024.0 / gbs
        );
    }
    if CpuKernels::detect().has_bf16() {
        println!(
            "bf16 layers of the model here: {} (the first bf16 column)",
            Bf16Products::detect().name()
        );
    }
    let (names, rows) = measure(&shapes, runs)?;
    println!("| product | m x k x n | {} |", names.join(" | "));
    println!("|---|---|{}", "---|".repeat(names.len()));
    for (s, r) in shapes.iter().zip(&rows) {
        let cells: Vec<String> = r.iter().map(|g| format!("{g:.1}")).collect();
        println!(
            "| {} | {}x{}x{} | {} |",
            s.name,
            s.m,
            s.k,
            s.n,
            cells.join(" | ")
        );
    }
    Ok(())
}
