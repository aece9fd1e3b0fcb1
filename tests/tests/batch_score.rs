//! An evaluation spread over shards: `odelt batch` samples, `odelt batch merge --npz` gathers, `odelt-model score`
//! scores the gathered images with the classifier `eval` uses (here on the tiny test model and synthetic data, so
//! only the plumbing and the counting are checked, not the quality).

use std::path::Path;
use std::process::{Command, Output};

use odelt_tests::*;
use serde_json::Value as Json;

fn shard(out: &Path, i: usize) -> Output {
    let f = fixture();
    Command::new(odelt_bin())
        .arg("batch")
        .arg(repo_root().join("examples/workflows/generate.json"))
        .args(["--plugins"])
        .arg(plugin_path())
        .arg("--models-dir")
        .arg(&f.models)
        .arg("--output-dir")
        .arg(out)
        .args(["--set", "4.steps=2", "--sweep", "4.seed=0..3"])
        .args(["--shard", &format!("{i}/2"), "--workers", "1", "-q"])
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .env_remove("ODELT_SHARD")
        .output()
        .expect("run odelt batch")
}

#[test]
fn two_shards_merged_into_an_npz_are_scored_by_odelt_model() {
    let d = fixture().root.join("batch-score");
    let _ = std::fs::remove_dir_all(&d);
    for i in 0..2 {
        assert_success(&shard(&d, i), "odelt batch shard");
    }
    let m = Command::new(odelt_bin())
        .args(["batch", "merge", "--npz"])
        .arg(&d)
        .output()
        .unwrap();
    assert_success(&m, "odelt batch merge --npz");
    let npz = d.join("merged/all.npz");
    assert!(npz.is_file(), "merge wrote {}", npz.display());

    let score = |extra: &[&str]| {
        let o = Command::new(artifact("odelt-model"))
            .args(["score", "--npz"])
            .arg(&npz)
            .args(["--synthetic", "200", "--classifier"])
            .arg(repo_root().join("models/classifier.safetensors"))
            .args(extra)
            .output()
            .unwrap();
        assert_success(&o, "odelt-model score");
        o
    };
    // 4 items × generate.json's 10 images (classes 0..9 in order).
    let o = score(&["--labels-cycle", "10", "--json"]);
    let r: Json = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["n"], 40, "{r}");
    assert!(
        r["fd"]
            .as_f64()
            .is_some_and(|fd| fd.is_finite() && fd >= 0.0),
        "{r}"
    );
    let acc = r["accuracy"].as_f64().unwrap();
    assert!(
        (0.0..=1.0).contains(&acc) && (acc * 40.0).fract() == 0.0,
        "{r}"
    );
    // Without labels: FD only, said in words by default.
    let o = score(&[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.starts_with("40 images from") && text.contains("no labels given"),
        "{text}"
    );
    // A wrong array name is a clear error.
    let o = Command::new(artifact("odelt-model"))
        .args(["score", "--npz"])
        .arg(&npz)
        .args(["--images", "nope", "--synthetic", "20"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no `nope` array"));
}
