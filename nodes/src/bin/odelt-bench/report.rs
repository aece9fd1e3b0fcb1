//! The report: latency, reference matmul, per-stage profile and memory tables, then the one-line summary.

use anyhow::{Context, Result};

use crate::machine::loadavg;
use crate::measure::{Profile, Results};
use crate::BenchArgs;

pub fn print(a: &BenchArgs, res: &Results) -> Result<()> {
    println!();
    if !res.rows.is_empty() {
        latency_table(a, res);
    }
    let best = res.matmul();
    for m in &res.matmuls {
        let n = m.size;
        println!(
            "reference matmul ({}): {n}x{n} @ {n}x{n} {}, median {:.1} ms per product over {} bursts of {} -> {:.1} GFLOP/s{}",
            m.kernel,
            m.operands,
            m.median_s * 1e3,
            m.bursts,
            m.per_burst,
            m.gflops(),
            if std::ptr::eq(m, best) { " (the vs GEMM reference)" } else { "" }
        );
    }
    println!();
    if let Some(p) = &res.profile {
        profile_table(p, res.l_max);
    }
    let hwm = |l: usize| -> f64 {
        res.mem
            .get(&l)
            .and_then(|m| m.get("VmHWM"))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    if !res.mem.is_empty() {
        memory_table(a, res, &hwm);
    }

    let big = *a.batch.iter().max().context("no batch")?;
    let lat = |l: usize| {
        res.rows
            .iter()
            .find(|r| r.batch == big && r.length == l)
            .map_or(f64::NAN, |r| r.median_s)
    };
    let fwd_gflops = res
        .rows
        .iter()
        .find(|r| r.batch == big && r.length == res.l_max)
        .map_or(f64::NAN, |r| r.flops / r.median_s / 1e9);
    println!(
        "load average {} (end); total {:.0} s",
        loadavg(),
        res.started.elapsed().as_secs_f64()
    );
    println!(
        "summary: latency_l4_over_l12={:.3} memory_l4_over_l12={:.3} forward_gflops={:.1} matmul_gflops={:.1}",
        lat(res.l_min) / lat(res.l_max),
        hwm(res.l_min) / hwm(res.l_max),
        fwd_gflops,
        res.matmul().gflops()
    );
    Ok(())
}

fn latency_table(a: &BenchArgs, res: &Results) {
    let l_max = res.l_max;
    println!(
        "forward latency ({}, {} warm-up, median of N runs):",
        res.precision.name(),
        a.warmup
    );
    println!(
        "| l | batch | blocks | median ms | min ms | ms/image | GFLOP | GFLOP/s | vs GEMM | vs l={l_max} | CPU share |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &res.rows {
        let base = res
            .rows
            .iter()
            .find(|o| o.batch == r.batch && o.length == l_max)
            .map_or(f64::NAN, |o| r.median_s / o.median_s);
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} | {:.2} | {:.2} | {} |",
            r.length,
            r.batch,
            r.blocks,
            r.median_s * 1e3,
            r.min_s * 1e3,
            r.median_s * 1e3 / r.batch as f64,
            r.flops / 1e9,
            r.flops / r.median_s / 1e9,
            r.flops / r.median_s / 1e9 / res.matmul().gflops(),
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

fn profile_table(p: &Profile, l_max: usize) {
    let (b, total, stages) = (p.batch, p.total_s, &p.stages);
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

fn memory_table(a: &BenchArgs, res: &Results, hwm: &dyn Fn(usize) -> f64) {
    let (l_min, l_max) = (res.l_min, res.l_max);
    println!(
        "peak resident memory of a fresh process (VmHWM; open + load at length l + one forward at batch {}):",
        a.mem_batch
    );
    println!("| l | resident blocks | VmHWM MiB | above baseline MiB | RssAnon MiB (after forward) | RssFile MiB (after forward) | vs l={l_max} |");
    println!("|---|---|---|---|---|---|---|");
    let base = hwm(0);
    for (l, m) in &res.mem {
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

fn mib(kb: f64) -> f64 {
    kb / 1024.0
}
