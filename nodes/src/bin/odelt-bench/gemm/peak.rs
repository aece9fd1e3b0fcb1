//! The CPU's arithmetic peak as this build reaches it: independent chains of AVX-512 FMAs (f32) and `vdpbf16ps`
//! (bf16 pairs, f32 accumulation) on every rayon thread, no memory traffic. The ceiling the products of
//! `odelt-bench gemm` are read against.
//!
//! 16 chains per thread (more than latency x throughput of either instruction; 24 made the compiler spill them),
//! each thread timing its own best of three passes, the rates summed. The earlier 12 chains timed as one pass over
//! all threads read 10-20 % low: a bf16:f32 ratio of 1.84-1.90 on a CPU whose L1-resident bf16 tile runs at 2.0x
//! the f32 one, and 2.02-2.05 now.

use std::time::Instant;

/// GFLOP/s of f32 FMAs and bf16 dot products on all threads, where the CPU has them.
pub fn measure() -> (Option<f64>, Option<f64>) {
    #[cfg(target_arch = "x86_64")]
    {
        let f32_peak = std::arch::is_x86_feature_detected!("avx512f").then(|| run(false));
        let bf16_peak = std::arch::is_x86_feature_detected!("avx512bf16").then(|| run(true));
        (f32_peak, bf16_peak)
    }
    #[cfg(not(target_arch = "x86_64"))]
    (None, None)
}

#[cfg(target_arch = "x86_64")]
fn run(bf16: bool) -> f64 {
    const ITERS: usize = 5_000_000;
    // 16 chains of 16 lanes, 2 FLOP per lane (FMA) or 4 (a bf16 pair's two products and sums).
    let per = CHAINS as f64 * 16.0 * if bf16 { 4.0 } else { 2.0 };
    // Every thread at once: a warm-up (clocks up), then its best of three timed passes.
    rayon::broadcast(|_| {
        std::hint::black_box(chains(bf16, ITERS / 5));
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t0 = Instant::now();
            std::hint::black_box(chains(bf16, ITERS));
            best = best.min(t0.elapsed().as_secs_f64());
        }
        ITERS as f64 * per / best / 1e9
    })
    .into_iter()
    .sum()
}

/// Independent accumulators per thread.
const CHAINS: usize = 16;

#[cfg(target_arch = "x86_64")]
fn chains(bf16: bool, iters: usize) -> f32 {
    // SAFETY: `run` is only called after the feature checks of `measure`.
    unsafe {
        if bf16 {
            chains_bf16(iters)
        } else {
            chains_f32(iters)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains_f32(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    let x = _mm512_set1_ps(std::hint::black_box(0.999_9));
    let y = _mm512_set1_ps(std::hint::black_box(1e-4));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, x, y);
        }
    }
    acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn chains_bf16(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); CHAINS];
    let x: __m512bh = std::mem::transmute(_mm512_set1_epi16(std::hint::black_box(0x3f80)));
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_dpbf16_ps(*a, x, x);
        }
    }
    acc.iter().map(|a| _mm512_reduce_add_ps(*a)).sum()
}
