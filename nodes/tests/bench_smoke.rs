//! Smoke test of the `odelt-bench` binary on the tiny model: latency table, memory children (re-spawned binary) and
//! the machine-readable summary line.

use std::process::Command;

fn summary_values(stdout: &str) -> Vec<(String, f64)> {
    let line = stdout
        .lines()
        .filter(|l| l.starts_with("summary: "))
        .collect::<Vec<_>>();
    assert_eq!(
        line.len(),
        1,
        "exactly one summary line expected:\n{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with(line[0]),
        "the summary must be the last line:\n{stdout}"
    );
    line[0]["summary: ".len()..]
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (k.to_string(), v.parse::<f64>().expect("a number"))
        })
        .collect()
}

#[test]
fn tiny_run_reports_every_measurement() {
    let tmp = std::env::temp_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_odelt-bench"))
        .args([
            "--model",
            "tiny",
            "--runs",
            "2",
            "--batch",
            "1,2",
            "--matmul-size",
            "128",
        ])
        .arg("--tmp-dir")
        .arg(&tmp)
        .output()
        .expect("run odelt-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "odelt-bench failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = summary_values(&stdout);
    let keys: Vec<&str> = v.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "latency_l4_over_l12",
            "memory_l4_over_l12",
            "forward_gflops",
            "matmul_gflops"
        ]
    );
    for (k, x) in &v {
        assert!(x.is_finite() && *x > 0.0, "{k}={x}");
    }
    // The tiny model has lengths 2 and 4; one latency row per (length, batch), one memory row per length + baseline.
    for row in [
        "| 2 | 1 | 2 |",
        "| 4 | 1 | 4 |",
        "| 2 | 2 | 2 |",
        "| 4 | 2 | 4 |",
    ] {
        assert!(stdout.contains(row), "missing latency row {row}:\n{stdout}");
    }
    assert!(stdout.contains("| baseline (nothing loaded) |"), "{stdout}");
    // The temporary checkpoint is removed.
    let pid_files = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("odelt-bench-{}", out_pid(&stdout)))
        })
        .count();
    assert_eq!(pid_files, 0, "temporary checkpoint left behind");
}

/// The pid in the `checkpoint: ... -> .../odelt-bench-<pid>.safetensors` line.
fn out_pid(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("checkpoint: "))
        .expect("checkpoint line");
    let name = line.rsplit('/').next().unwrap();
    name.trim_start_matches("odelt-bench-")
        .split('.')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn cuda_device_without_the_feature_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_odelt-bench"))
        .args(["--model", "tiny", "--device", "cuda:0"])
        .output()
        .expect("run odelt-bench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features cuda"), "{err}");
}
