//! `odelt-bench gemm` and `odelt-bench --precision bf16` on tiny sizes: the per-product kernel table and the bf16
//! forward with its reference matmuls.

use std::process::Command;

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_odelt-bench"))
        .args(args)
        .arg("--tmp-dir")
        .arg(std::env::temp_dir())
        .output()
        .expect("run odelt-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "odelt-bench {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn gemm_table_has_every_block_product() {
    let out = Command::new(env!("CARGO_BIN_EXE_odelt-bench"))
        .args([
            "gemm", "--hidden", "64", "--tokens", "16", "--batch", "2", "--square", "96", "--runs",
            "1",
        ])
        .output()
        .expect("run odelt-bench gemm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "| adaLN | 2x64x384 |",
        "| qkv | 32x64x192 |",
        "| mlp out | 32x256x64 |",
        "| square | 96x96x96 |",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row}:\n{stdout}"));
        // One GFLOP/s cell per kernel, each a positive number.
        let cells: Vec<f64> = line
            .split('|')
            .skip(3)
            .filter(|c| !c.trim().is_empty())
            .map(|c| c.trim().parse().unwrap())
            .collect();
        assert!(
            !cells.is_empty() && cells.iter().all(|g| *g > 0.0),
            "{line}"
        );
    }
    assert!(stdout.contains("candle matmul (gemm crate)"), "{stdout}");
}

#[test]
fn bf16_forward_reports_its_precision_and_reference() {
    let stdout = run(&[
        "--model",
        "tiny",
        "--runs",
        "1",
        "--batch",
        "1",
        "--matmul-size",
        "96",
        "--no-memory",
        "--precision",
        "bf16",
    ]);
    assert!(stdout.contains("forward latency (bf16,"), "{stdout}");
    assert!(stdout.contains("precision bf16: "), "{stdout}");
    // Any AVX-512 CPU multiplies bf16 weights (with `vdpbf16ps` or widened to f32).
    let bf16_cpu = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::env::var("ODELT_CPU_KERNELS").is_err();
    let reference = ["bf16 x bf16 -> f32", "bf16 weights x f32 -> f32"]
        .map(|ops| format!("(odelt packed bf16): 96x96 @ 96x96 {ops}"));
    assert_eq!(
        reference.iter().any(|r| stdout.contains(r.as_str()))
            && stdout.contains("(the vs GEMM reference)"),
        bf16_cpu,
        "{stdout}"
    );
}
