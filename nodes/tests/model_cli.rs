//! End-to-end test of the `odelt-model` command on a tiny synthetic run: train, resume, export, grid and eval, and
//! the errors a user gets for a bad device or a missing model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn odelt_model(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_odelt-model"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("run odelt-model")
}

fn ok(out: &Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("odelt-model-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const CLASSIFIER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../models/classifier.safetensors"
);

const TINY: &[&str] = &[
    "--synthetic",
    "64",
    "--batch",
    "8",
    "--hidden",
    "16",
    "--heads",
    "2",
    "--depth",
    "4",
    "--depth-group",
    "2",
    "--depth-min",
    "2",
    "--warmup",
    "1",
    "--lr",
    "1e-3",
    "--log-every",
    "1",
];

fn log_rows(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("log.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[test]
fn train_resume_export_grid_eval() {
    let dir = fresh_dir("e2e");
    let run = dir.join("run");
    let export = dir.join("model.safetensors");
    let mut args = vec![
        "train",
        "--out",
        s(&run),
        "--export",
        s(&export),
        "--steps",
        "5",
        "--stop-at",
        "3",
    ];
    args.extend_from_slice(TINY);
    ok(
        &odelt_model(&args),
        "train (first leg, stops at step 3 of 5)",
    );
    assert!(run.join("state.safetensors").exists());
    assert!(export.exists());
    assert_eq!(log_rows(&run).len(), 3);

    // A second, uninterrupted run of 5 steps and a 3 + resume-to-5 run agree on every logged loss.
    let straight = dir.join("straight");
    let mut args = vec!["train", "--out", s(&straight), "--steps", "5"];
    args.extend_from_slice(TINY);
    ok(&odelt_model(&args), "train 5 steps");
    let args = vec![
        "train",
        "--out",
        s(&run),
        "--export",
        s(&export),
        "--resume",
        "--steps",
        "5",
        "--synthetic",
        "64",
    ];
    let text = ok(&odelt_model(&args), "resume");
    assert!(text.contains("resumed at step 3"), "{text}");
    let loss = |row: &String| row.split(',').take(6).skip(2).collect::<Vec<_>>().join(",");
    let a: Vec<String> = log_rows(&run).iter().map(loss).collect();
    let b: Vec<String> = log_rows(&straight).iter().map(loss).collect();
    assert_eq!(a, b, "resumed run diverged from the straight one");

    // A training state converts to a model file: its EMA weights are exactly the trainer's export at that step,
    // its raw weights are another set.
    let (ema, raw) = (dir.join("ema.safetensors"), dir.join("raw.safetensors"));
    let state = run.join("state.safetensors");
    ok(
        &odelt_model(&["convert", s(&state), s(&ema), "--weights", "params_ema"]),
        "convert ema",
    );
    ok(
        &odelt_model(&["convert", s(&state), s(&raw), "--weights", "params"]),
        "convert raw",
    );
    let tensors = |p: &Path| {
        let bytes = std::fs::read(p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut v: Vec<(String, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.data().to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        tensors(&ema),
        tensors(&export),
        "EMA conversion differs from the export"
    );
    assert_ne!(tensors(&raw), tensors(&export), "raw weights equal the EMA");

    // Fine-tuning starts from the exported model (its architecture, not the default flags: hidden 16, not 96),
    // here with a larger share of time-consistency rows.
    let ft = dir.join("ft");
    let text = ok(
        &odelt_model(&[
            "train",
            "--init",
            s(&export),
            "--out",
            s(&ft),
            "--steps",
            "2",
            "--batch",
            "8",
            "--bootstrap-every",
            "2",
            "--synthetic",
            "64",
            "--log-every",
            "1",
        ]),
        "fine-tune",
    );
    assert!(text.contains("fine-tuning from"), "{text}");
    let run_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ft.join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["config"]["hidden_size"], 16, "{run_json}");
    assert_eq!(run_json["options"]["objective"]["bootstrap_every"], 2);
    assert_eq!(log_rows(&ft).len(), 2);

    let grid = dir.join("grid.png");
    ok(
        &odelt_model(&[
            "grid",
            "--model",
            s(&export),
            "--out",
            s(&grid),
            "--steps",
            "2",
            "--rows",
            "2",
        ]),
        "grid",
    );
    let file = std::io::BufReader::new(std::fs::File::open(&grid).unwrap());
    let reader = png::Decoder::new(file).read_info().expect("grid is a PNG");
    let (w, h) = (reader.info().width, reader.info().height);
    assert!(w >= 10 * 28 && h >= 2 * 28, "{w}x{h}");

    let prefix = dir.join("eval-w1.5"); // a dot in the prefix must survive
    let text = ok(
        &odelt_model(&[
            "eval",
            "--synthetic",
            "64",
            "--model",
            s(&export),
            "--out",
            s(&prefix),
            "--steps",
            "1,2",
            "--n",
            "20",
            "--batch",
            "10",
            "--classifier",
            CLASSIFIER,
        ]),
        "eval",
    );
    assert!(text.contains("FD"), "{text}");
    let file = |ext: &str| dir.join(format!("eval-w1.5.{ext}"));
    for ext in ["md", "csv", "png", "json"] {
        assert!(file(ext).exists(), "eval wrote no eval-w1.5.{ext}");
    }
    assert!(!file("md").with_file_name("eval-w1.md").exists());
    let csv = std::fs::read_to_string(file("csv")).unwrap();
    // one row per (T, l): T in {1, 2}, l in {2, 4}
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");
    assert!(
        csv.lines().skip(1).all(|l| l.ends_with(",fp32,fused-f32")),
        "{csv}"
    );

    // --precision bf16: every output names the precision and the kernels that ran (the fused bf16 ones on an AVX-512
    // CPU, candle's reference bf16 ops elsewhere or with ODELT_CPU_KERNELS=portable).
    let has_bf16 = odelt_nodes::model::packed::CpuKernels::detect().has_bf16();
    for (portable, tag) in [
        (
            false,
            if has_bf16 {
                "fused-bf16"
            } else {
                "reference-bf16"
            },
        ),
        (true, "reference-bf16"),
    ] {
        let prefix = dir.join(format!("eval-bf16-{portable}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_odelt-model"));
        cmd.args([
            "eval",
            "--synthetic",
            "64",
            "--model",
            s(&export),
            "--out",
            s(&prefix),
            "--steps",
            "1",
            "--lengths",
            "4",
            "--n",
            "20",
            "--batch",
            "10",
            "--precision",
            "bf16",
            "--classifier",
            CLASSIFIER,
        ])
        .env("RAYON_NUM_THREADS", "1");
        if portable {
            cmd.env("ODELT_CPU_KERNELS", "portable");
        }
        let text = ok(&cmd.output().expect("run odelt-model"), "eval bf16");
        assert!(text.contains("precision bf16: "), "{text}");
        let read = |ext: &str| std::fs::read_to_string(prefix.with_extension(ext)).unwrap();
        let csv = read("csv");
        assert!(
            csv.lines().next().unwrap().ends_with(",precision,cpu_path"),
            "{csv}"
        );
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .ends_with(&format!(",bf16,{tag}")),
            "{csv}"
        );
        assert!(read("md").contains("Precision bf16: "), "{}", read("md"));
        let json: serde_json::Value = serde_json::from_str(&read("json")).unwrap();
        assert_eq!(json["precision"], "bf16");
        assert_eq!(json["cpu_path"], tag);
        let fd = csv.lines().nth(1).unwrap().split(',').nth(3).unwrap();
        assert!(fd.parse::<f64>().unwrap().is_finite(), "{csv}");
    }
    // `report` refuses to merge tables of two precisions.
    let out = odelt_model(&[
        "report",
        "--inputs",
        &format!(
            "{},{}",
            s(&file("json")),
            s(&dir.join("eval-bf16-true.json"))
        ),
        "--out",
        s(&dir.join("mixed")),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another precision"), "{err}");
    let out = odelt_model(&["eval", "--precision", "fp8", "--synthetic", "16"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fp8"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_device_and_missing_model_are_named() {
    let dir = fresh_dir("errors");
    let mut args = vec![
        "train",
        "--out",
        s(&dir),
        "--steps",
        "1",
        "--device",
        "tpu:0",
    ];
    args.extend_from_slice(TINY);
    let out = odelt_model(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tpu:0"), "{err}");

    let out = odelt_model(&[
        "train",
        "--init",
        s(&dir.join("absent-init.safetensors")),
        "--out",
        s(&dir),
        "--steps",
        "1",
        "--synthetic",
        "16",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("absent-init.safetensors"), "{err}");

    let missing = dir.join("nope.safetensors");
    let out = odelt_model(&[
        "grid",
        "--model",
        s(&missing),
        "--out",
        s(&dir.join("g.png")),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.safetensors"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
