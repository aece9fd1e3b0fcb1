//! The `odelt` command: exit codes, first line of stderr, outputs.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::{json, Value};

fn odelt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_odelt"))
        .args(args)
        .env_remove("ODELT_PLUGIN_PATH")
        .output()
        .expect("run odelt")
}

fn first_stderr_line(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn write_wf(v: Value) -> std::path::PathBuf {
    let p = temp_dir("cli").join("wf.json");
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

fn arithmetic() -> Value {
    json!({"1": {"class_type": "IntConstant", "inputs": {"value": 2}},
           "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 3}},
           "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}}})
}

#[test]
fn run_prints_outputs_and_applies_overrides() {
    let plugin = test_plugin();
    let wf = write_wf(arithmetic());
    let out_dir = temp_dir("cli-out");
    let o = odelt(&[
        "run",
        wf.to_str().unwrap(),
        "--plugins",
        plugin.to_str().unwrap(),
        "--output-dir",
        out_dir.to_str().unwrap(),
        "--set",
        "1.value=10",
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The default output is a short summary for a person.
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], "node 3 text: 13");
    assert!(
        lines[1].starts_with("3 nodes ran in ") && lines[1].ends_with(" s, none cached"),
        "{text}"
    );

    // --json: the full result.
    let o = odelt(&[
        "run",
        wf.to_str().unwrap(),
        "--plugins",
        plugin.to_str().unwrap(),
        "--output-dir",
        out_dir.to_str().unwrap(),
        "--set",
        "1.value=10",
        "-q",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["outputs"]["3"]["text"], json!(["13"]));
    let keys: Vec<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        ["prompt_id", "outputs", "executed", "cached", "elapsed_ms"]
    );
    assert_eq!(report["executed"].as_array().unwrap().len(), 3);
}

/// The summary names the image files by folder, first ... last, and fits on a screen.
#[test]
fn run_summary_names_the_written_files() {
    let wf = write_wf(json!({
        "1": {"class_type": "GradientImage", "inputs": {"width": 8, "height": 8, "batch": 5}},
        "2": {"class_type": "TestSaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "img"}}
    }));
    let out_dir = temp_dir("cli-sum");
    let o = odelt(&[
        "run",
        wf.to_str().unwrap(),
        "--plugins",
        test_plugin().to_str().unwrap(),
        "--output-dir",
        out_dir.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(&format!("5 images in {}/ (img_", out_dir.display())),
        "{text}"
    );
    assert!(lines[0].contains(" ... "), "{text}");
    assert!(lines[1].starts_with("2 nodes ran in "), "{text}");
}

#[test]
fn validation_failure_exits_3_with_reason_first_then_node_errors() {
    let wf = write_wf(
        json!({"1": {"class_type": "Add", "inputs": {"a": 1}}, "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}}),
    );
    let o = odelt(&[
        "run",
        wf.to_str().unwrap(),
        "--plugins",
        test_plugin().to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(3));
    let first = first_stderr_line(&o);
    assert!(
        first.starts_with("error: workflow failed validation"),
        "{first}"
    );
    let rest: String = String::from_utf8_lossy(&o.stderr)
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n");
    let body: Value = serde_json::from_str(&rest).expect("node_errors JSON after the first line");
    assert_eq!(
        body["node_errors"]["1"]["errors"][0]["type"],
        "required_input_missing"
    );
}

#[test]
fn bad_json_node_error_and_plugin_errors_have_distinct_codes() {
    let plugin = test_plugin();
    let p = plugin.to_str().unwrap();
    let dir = temp_dir("cli-bad");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"1\": ").unwrap();
    let o = odelt(&["run", bad.to_str().unwrap(), "--plugins", p, "-q"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        first_stderr_line(&o).starts_with("error: cannot use workflow"),
        "{}",
        first_stderr_line(&o)
    );

    let o = odelt(&[
        "run",
        dir.join("absent.json").to_str().unwrap(),
        "--plugins",
        p,
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1));

    let wf = write_wf(
        json!({"1": {"class_type": "Panic", "inputs": {"message": "cli panic"}}, "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}}),
    );
    let o = odelt(&["run", wf.to_str().unwrap(), "--plugins", p, "-q"]);
    assert_eq!(o.status.code(), Some(4));
    let first = first_stderr_line(&o);
    assert!(
        first.starts_with("error: node 1 (Panic) failed") && first.contains("cli panic"),
        "{first}"
    );

    let o = odelt(&[
        "run",
        write_wf(arithmetic()).to_str().unwrap(),
        "--plugins",
        dir.join("libmissing.so").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        first_stderr_line(&o).contains("plugin not found"),
        "{}",
        first_stderr_line(&o)
    );

    let o = odelt(&[
        "run",
        write_wf(arithmetic()).to_str().unwrap(),
        "--plugins",
        lib_path("odelt_old_contract_plugin").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let first = first_stderr_line(&o);
    assert!(
        first.contains("0.0.1") && first.contains(odelt_contract::CONTRACT_VERSION),
        "{first}"
    );

    let o = odelt(&[
        "run",
        write_wf(arithmetic()).to_str().unwrap(),
        "--plugins",
        p,
        "--set",
        "nonsense",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(first_stderr_line(&o).starts_with("error: --set nonsense"));
}

#[test]
fn interrupted_run_exits_130() {
    // SIGINT to the child while a slow node runs.
    let wf = write_wf(
        json!({"1": {"class_type": "SlowCount", "inputs": {"steps": 500, "step_ms": 20}}, "2": {"class_type": "ShowNumber", "inputs": {"value": ["1", 0]}}}),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_odelt"))
        .args([
            "run",
            wf.to_str().unwrap(),
            "--plugins",
            test_plugin().to_str().unwrap(),
            "-q",
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    if !kill.map(|s| s.success()).unwrap_or(false) {
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("no `kill` command; skipping the signal part");
        return;
    }
    let started = std::time::Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        first_stderr_line(&o).starts_with("error: interrupted"),
        "{stderr}"
    );
}

#[test]
fn nodes_prints_object_info_and_help_has_examples() {
    let o = odelt(&["nodes", "--plugins", test_plugin().to_str().unwrap()]);
    assert!(o.status.success());
    let info: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        info["Add"]["python_module"],
        "custom_nodes.odelt_test_plugin"
    );
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["nodes", "--help"],
    ] {
        let o = odelt(&args);
        assert!(o.status.success());
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("Examples:"), "{args:?}: {text}");
    }
    let o = odelt(&["run"]);
    assert_eq!(o.status.code(), Some(2), "clap usage error");
}

/// `odelt nodes` output as (class name, python_module) pairs, and its stderr.
fn node_modules(o: &Output) -> (Vec<(String, String)>, String) {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "odelt nodes failed: {stderr}");
    let info: Value = serde_json::from_slice(&o.stdout).expect("odelt nodes prints JSON");
    let nodes = info
        .as_object()
        .expect("object_info is a JSON object")
        .iter()
        .map(|(k, v)| {
            let module = v["python_module"].as_str().unwrap_or_default().to_string();
            (k.clone(), module)
        })
        .collect();
    (nodes, stderr)
}

#[test]
fn target_release_odelt_finds_only_the_product_plugin() {
    // Building the test plugins (done here first, so that the check below follows it) must leave
    // target/release alone: `odelt` loads every plugin next to itself.
    fixtures_release_dir();
    for lib in FIXTURE_LIBS {
        let p = release_dir().join(dll_name(lib));
        assert!(
            !p.exists(),
            "a test plugin lies next to odelt: {}",
            p.display()
        );
    }
    let exe = release_dir().join(format!("odelt{}", std::env::consts::EXE_SUFFIX));
    let product = release_dir().join(dll_name("odelt_plugin"));
    for p in [&exe, &product] {
        assert!(
            p.is_file(),
            "{} is missing: build the workspace first with `cargo build --release --workspace`",
            p.display()
        );
    }
    let run = |extra: &[&std::ffi::OsStr]| {
        Command::new(&exe)
            .arg("nodes")
            .args(extra)
            .env_remove("ODELT_PLUGIN_PATH")
            .current_dir(temp_dir("cli-nodes"))
            .output()
            .expect("run target/release/odelt")
    };

    // The default search: the executable's directory.
    let (found, stderr) = node_modules(&run(&[]));
    let lower = stderr.to_lowercase();
    assert!(
        !lower.contains("warning") && !lower.contains("skipped"),
        "odelt nodes warned: {stderr}"
    );
    // What the product plugin alone provides.
    let (expected, _) = node_modules(&run(&["--plugins".as_ref(), product.as_os_str()]));
    let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&found),
        names(&expected),
        "the default search found other nodes than the product plugin's"
    );
    for class in ["ODEtODElCheckpointLoader", "ODEtSampler", "ODEtDecode"] {
        assert!(
            names(&found).iter().any(|n| n == class),
            "{class} missing from {:?}",
            names(&found)
        );
    }
    let module = &expected[0].1;
    assert!(
        found.iter().all(|(_, m)| m == module),
        "nodes from another module than {module}: {found:?}"
    );
}
