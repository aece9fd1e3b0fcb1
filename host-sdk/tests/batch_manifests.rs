//! The cluster job files of examples/ and the shard-from-environment logic of `odelt batch`:
//! the Kubernetes manifest parsed as YAML into the Job fields it uses (unknown fields refused,
//! so a misspelt key fails), the Slurm script's directives, and `odelt batch --list` under a
//! Kubernetes Indexed Job's and a Slurm array's variables (no plugins needed).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Job {
    api_version: String,
    kind: String,
    metadata: Meta,
    spec: JobSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JobSpec {
    completions: u32,
    parallelism: u32,
    completion_mode: String,
    #[serde(default)]
    backoff_limit_per_index: Option<u32>,
    #[serde(default)]
    max_failed_indexes: Option<u32>,
    #[serde(default)]
    backoff_limit: Option<u32>,
    template: PodTemplate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PodTemplate {
    #[serde(default)]
    metadata: Option<Meta>,
    spec: PodSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodSpec {
    restart_policy: String,
    containers: Vec<Container>,
    volumes: Vec<Volume>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Container {
    name: String,
    image: String,
    #[serde(default)]
    working_dir: Option<String>,
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<EnvVar>,
    #[serde(default)]
    resources: Option<Resources>,
    volume_mounts: Vec<VolumeMount>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvVar {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resources {
    #[serde(default)]
    requests: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    limits: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct VolumeMount {
    name: String,
    mount_path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Volume {
    name: String,
    persistent_volume_claim: Claim,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Claim {
    claim_name: String,
}

#[test]
fn kubernetes_manifest_is_an_indexed_job_running_odelt_batch_on_a_shared_volume() {
    let path = repo().join("examples/kubernetes/odelt-batch-job.yaml");
    let text = std::fs::read_to_string(&path).expect("read the manifest");
    let job: Job =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(job.api_version, "batch/v1");
    assert_eq!(job.kind, "Job");
    assert!(job.metadata.name.is_some());
    assert!(!job.metadata.labels.is_empty());
    let s = &job.spec;
    assert_eq!(
        s.completion_mode, "Indexed",
        "JOB_COMPLETION_INDEX exists only in Indexed Jobs"
    );
    assert!(s.parallelism >= 1 && s.parallelism <= s.completions);
    assert!(s.backoff_limit_per_index.is_some() || s.backoff_limit.is_some());
    assert!(s.max_failed_indexes.is_none_or(|m| m <= s.completions));
    // backoffLimitPerIndex requires restartPolicy Never.
    assert_eq!(s.template.spec.restart_policy, "Never");
    assert!(s.template.metadata.is_some());
    let [c] = &s.template.spec.containers[..] else {
        panic!("one container expected");
    };
    assert!(!c.name.is_empty() && !c.image.is_empty());
    assert!(c.working_dir.is_some());
    assert_eq!(&c.command[..2], ["odelt", "batch"]);
    let completions = c
        .env
        .iter()
        .find(|e| e.name == "JOB_COMPLETIONS")
        .expect("JOB_COMPLETIONS is set (odelt reads the shard count from it)");
    assert_eq!(
        completions.value,
        s.completions.to_string(),
        "JOB_COMPLETIONS must equal spec.completions"
    );
    let arg = |flag: &str| {
        let i = c
            .args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{flag} missing"));
        c.args[i + 1].clone()
    };
    let out = arg("--output-dir");
    let [m] = &c.volume_mounts[..] else {
        panic!("one volume mount expected");
    };
    assert!(
        out.starts_with(&m.mount_path),
        "the output directory is on the shared volume"
    );
    let [v] = &s.template.spec.volumes[..] else {
        panic!("one volume expected");
    };
    assert_eq!(v.name, m.name);
    assert!(!v.persistent_volume_claim.claim_name.is_empty());
    let r = c.resources.as_ref().expect("resources");
    assert!(r.requests.contains_key("cpu") && r.limits.contains_key("memory"));
    assert!(c.args.iter().any(|a| a == "--sweep"));
}

#[test]
fn slurm_script_is_a_requeueable_array_running_odelt_batch() {
    let path = repo().join("examples/slurm/odelt-batch.sbatch");
    let text = std::fs::read_to_string(&path).expect("read the script");
    let directives: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#SBATCH "))
        .collect();
    assert!(directives.contains(&"--array=0-99%16"));
    assert!(directives.contains(&"--requeue"));
    assert!(
        text.contains("##SBATCH --gres=gpu:1"),
        "the GPU request is there, commented"
    );
    assert!(text.contains("batch \"$WORKFLOW\" --output-dir \"$OUT\""));
    let st = Command::new("bash")
        .arg("-n")
        .arg(&path)
        .status()
        .expect("bash");
    assert!(st.success(), "bash -n {}", path.display());
}

const SHARD_VARS: &[&str] = &[
    "ODELT_SHARD",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_COUNT",
    "JOB_COMPLETION_INDEX",
    "JOB_COMPLETIONS",
];

/// `odelt batch --list` of a 10-item sweep with `env` set: the listed item indices and stderr.
fn list(env: &[(&str, &str)], extra: &[&str]) -> (Vec<u64>, String, bool) {
    let dir = std::env::temp_dir().join(format!("odelt-batch-list-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wf = dir.join("wf.json");
    std::fs::write(
        &wf,
        r#"{"1": {"class_type": "IntConstant", "inputs": {"value": 0}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}"#,
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_odelt"));
    cmd.arg("batch")
        .arg(&wf)
        .args(["--sweep", "1.value=0..9", "--list"])
        .args(extra);
    for v in SHARD_VARS {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run odelt batch --list");
    let idx = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSONL");
            v["index"].as_u64().expect("index")
        })
        .collect();
    (
        idx,
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.success(),
    )
}

#[test]
fn the_shard_comes_from_kubernetes_or_slurm_variables() {
    let (idx, err, ok) = list(
        &[("JOB_COMPLETION_INDEX", "1"), ("JOB_COMPLETIONS", "3")],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(idx, [1, 4, 7]);
    assert!(
        err.contains("shard 1/3 (from Kubernetes Indexed Job)"),
        "{err}"
    );

    let (idx, err, ok) = list(
        &[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ],
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(idx, [3, 7]);
    assert!(err.contains("from Slurm array"), "{err}");

    // --shard wins over the environment; nothing set means the whole batch.
    let (idx, _, ok) = list(
        &[("JOB_COMPLETION_INDEX", "1"), ("JOB_COMPLETIONS", "3")],
        &["--shard", "0/5"],
    );
    assert!(ok);
    assert_eq!(idx, [0, 5]);
    let (idx, _, _) = list(&[], &[]);
    assert_eq!(idx, (0..10).collect::<Vec<_>>());

    // An index without its count is refused with the reason.
    let (_, err, ok) = list(&[("JOB_COMPLETION_INDEX", "1")], &[]);
    assert!(!ok);
    assert!(err.contains("JOB_COMPLETIONS"), "{err}");
}
