//! The CPU's arithmetic peak as this build reaches it: independent chains of AVX-512 FMAs (f32; AVX2 FMAs on CPUs
//! without AVX-512), `vdpbf16ps` (bf16 pairs, f32 accumulation) and, where present, AMX `tdpbf16ps` on every
//! rayon thread, no memory traffic. The ceiling the products of
//! `odelt-bench gemm` are read against.
//!
//! 16 chains per thread (more than latency x throughput of either instruction; 24 made the compiler spill them),
//! each thread timing its own best of three passes, the rates summed. The earlier 12 chains timed as one pass over
//! all threads read 10-20 % low: a bf16:f32 ratio of 1.84-1.90 on a CPU whose L1-resident bf16 tile runs at 2.0x
//! the f32 one, and 2.02-2.05 now.

use std::time::Instant;

use odelt_nodes::model::packed::{arithmetic_chains, tile_ceiling, CpuKernels};

/// GFLOP/s of the f32 tiles (AVX-512, AVX2) on L2-resident random operands on all threads, where the CPU runs
/// them: the packed products' ceiling ([`tile_ceiling`]). One tile is 590 K FLOP: 2000 take about 10 ms per core.
pub fn tiles() -> Vec<(&'static str, f64)> {
    #[cfg(target_arch = "x86_64")]
    {
        [
            ("avx512", CpuKernels::Avx512 { bf16: false }),
            ("avx2", CpuKernels::Avx2),
        ]
        .into_iter()
        .filter(|&(_, k)| tile_ceiling(k, 0).is_some())
        .map(|(name, k)| (name, run(2_000, |n| tile_ceiling(k, n))))
        .collect()
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

/// GFLOP/s of f32 FMAs, bf16 dot products and AMX bf16 tiles on all threads, where the CPU has them, and the GB/s
/// of AMX tile loads from L1.
pub fn measure() -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>) {
    #[cfg(target_arch = "x86_64")]
    {
        let f32_peak = arithmetic_chains(false, 1)
            .is_some()
            .then(|| run(5_000_000, |n| arithmetic_chains(false, n)));
        let bf16_peak = arithmetic_chains(true, 1)
            .is_some()
            .then(|| run(5_000_000, |n| arithmetic_chains(true, n)));
        // A round of the AMX probe is 12 tile products (196 K FLOP): 20 000 rounds take about 3 ms per core.
        let amx_peak = odelt_nodes::model::amx::available()
            .then(|| run(20_000, odelt_nodes::model::amx::chains));
        // A round of the load probe is 8 KB: 50 000 rounds take about 6 ms per core.
        let amx_loads = odelt_nodes::model::amx::available()
            .then(|| run(50_000, odelt_nodes::model::amx::loads));
        (f32_peak, bf16_peak, amx_peak, amx_loads)
    }
    #[cfg(not(target_arch = "x86_64"))]
    (None, None, None, None)
}

#[cfg(target_arch = "x86_64")]
fn run(iters: usize, chains: impl Fn(usize) -> Option<f64> + Sync) -> f64 {
    // Every thread at once: a warm-up (clocks up), then its best of three timed passes.
    rayon::broadcast(|_| {
        chains(iters / 5);
        let mut best = f64::MAX;
        let mut flop = 0.0;
        for _ in 0..3 {
            let t0 = Instant::now();
            flop = chains(iters).unwrap_or(0.0);
            best = best.min(t0.elapsed().as_secs_f64());
        }
        flop / best / 1e9
    })
    .into_iter()
    .sum()
}
