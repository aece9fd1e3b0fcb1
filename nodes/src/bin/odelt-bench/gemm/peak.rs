//! The CPU's arithmetic peak as this build reaches it: independent chains of AVX-512 FMAs (f32; AVX2 FMAs on CPUs
//! without AVX-512) and `vdpbf16ps` (bf16 pairs, f32 accumulation) on every rayon thread, no memory traffic. The ceiling the products of
//! `odelt-bench gemm` are read against.
//!
//! 16 chains per thread (more than latency x throughput of either instruction; 24 made the compiler spill them),
//! each thread timing its own best of three passes, the rates summed. The earlier 12 chains timed as one pass over
//! all threads read 10-20 % low: a bf16:f32 ratio of 1.84-1.90 on a CPU whose L1-resident bf16 tile runs at 2.0x
//! the f32 one, and 2.02-2.05 now.

use std::time::Instant;

use odelt_nodes::model::packed::arithmetic_chains;

/// GFLOP/s of f32 FMAs and bf16 dot products on all threads, where the CPU has them.
pub fn measure() -> (Option<f64>, Option<f64>) {
    #[cfg(target_arch = "x86_64")]
    {
        let f32_peak = arithmetic_chains(false, 1).is_some().then(|| run(false));
        let bf16_peak = arithmetic_chains(true, 1).is_some().then(|| run(true));
        (f32_peak, bf16_peak)
    }
    #[cfg(not(target_arch = "x86_64"))]
    (None, None)
}

#[cfg(target_arch = "x86_64")]
fn run(bf16: bool) -> f64 {
    const ITERS: usize = 5_000_000;
    // Every thread at once: a warm-up (clocks up), then its best of three timed passes.
    rayon::broadcast(|_| {
        arithmetic_chains(bf16, ITERS / 5);
        let mut best = f64::MAX;
        let mut flop = 0.0;
        for _ in 0..3 {
            let t0 = Instant::now();
            flop = arithmetic_chains(bf16, ITERS).unwrap_or(0.0);
            best = best.min(t0.elapsed().as_secs_f64());
        }
        flop / best / 1e9
    })
    .into_iter()
    .sum()
}
