//! Plugin loading: good plugins, refused files, side-by-side plugins, duplicates.

mod common;

use std::sync::Arc;

use common::*;
use odelt_host::{
    CancelToken, Executor, ExecutorConfig, LoadError, NullSink, PluginSearch, PluginSet, RunError,
    RunOptions,
};
use serde_json::json;

#[test]
fn loads_the_test_plugin_and_describes_its_nodes() {
    let set = plugins();
    let p = &set.plugins()[0];
    assert_eq!(p.name(), "odelt-test-plugin");
    assert_eq!(p.contract_version(), odelt_contract::CONTRACT_VERSION);
    let info = set.object_info();
    for n in [
        "IntConstant",
        "Add",
        "Multiply",
        "Panic",
        "SlowCount",
        "GradientImage",
        "ShowNumber",
        "TestSaveImage",
        "MakeCounter",
    ] {
        let d = &info[n];
        assert_eq!(d["name"], n);
        for field in [
            "display_name",
            "category",
            "description",
            "python_module",
            "output_node",
            "input",
            "input_order",
            "output",
            "output_is_list",
            "output_name",
        ] {
            assert!(d.get(field).is_some(), "{n} lacks {field}");
        }
    }
    assert_eq!(info["ShowNumber"]["output_node"], true);
    assert_eq!(
        info["Bounded"]["input"]["required"]["count"],
        json!(["INT", {"default": 1, "min": 0, "max": 10}])
    );
    assert_eq!(
        info["Bounded"]["input"]["required"]["mode"][0],
        json!(["add", "mul"])
    );
    assert_eq!(
        info["Bounded"]["input_order"]["optional"],
        json!(["label", "seed"])
    );
    assert_eq!(
        info["Bounded"]["input"]["optional"]["seed"][1]["max"],
        json!(u64::MAX)
    );
    assert_eq!(info["DeviceWork"]["odelt"]["device_bound"], true);
    assert_eq!(info["EvenOnly"]["odelt"]["validates_inputs"], true);
}

#[test]
fn missing_file_is_refused() {
    let err = PluginSet::new()
        .load_file(&temp_dir("missing").join("libnope.so"))
        .unwrap_err();
    assert!(matches!(err, LoadError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("libnope.so"));
}

#[test]
fn garbage_file_is_refused() {
    let dir = temp_dir("garbage");
    let f = dir.join("libgarbage.so");
    std::fs::write(&f, b"this is not an ELF file at all\0\x01\x02").unwrap();
    let err = PluginSet::new().load_file(&f).unwrap_err();
    assert!(matches!(err, LoadError::NotAPlugin { .. }), "{err}");
    assert!(err.to_string().contains("not an odelt plugin"), "{err}");
}

#[test]
fn shared_library_without_root_module_is_refused() {
    // Any shared library that is not an odelt plugin: a proc-macro dylib from the build.
    let deps = release_dir().join("deps");
    let lib = std::fs::read_dir(&deps)
        .expect("target/release/deps")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("libserde_derive") && name.ends_with(std::env::consts::DLL_SUFFIX)
        })
        .expect("a proc-macro shared library in target/release/deps");
    let err = PluginSet::new().load_file(&lib).unwrap_err();
    match &err {
        LoadError::NotAPlugin { reason, .. } => assert!(reason.contains("root module"), "{err}"),
        other => panic!("expected NotAPlugin, got {other}"),
    }
}

#[test]
fn incompatible_contract_is_refused_naming_both_versions() {
    let old = lib_path("odelt_old_contract_plugin");
    let err = PluginSet::new().load_file(&old).unwrap_err();
    match &err {
        LoadError::Incompatible {
            host_version,
            plugin_version,
            ..
        } => {
            assert_eq!(host_version, odelt_contract::CONTRACT_VERSION);
            assert_eq!(plugin_version, "0.0.1");
        }
        other => panic!("expected Incompatible, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("0.0.1") && msg.contains(odelt_contract::CONTRACT_VERSION),
        "{msg}"
    );
}

#[test]
fn two_plugins_side_by_side_exchange_tensors_but_not_handle_internals() {
    let mut set = PluginSet::new();
    set.load_file(&test_plugin()).unwrap();
    set.load_file(&lib_path("odelt_test_plugin_b")).unwrap();
    assert_eq!(set.plugins().len(), 2);
    assert!(set.node("Add").is_some() && set.node("Negate").is_some());
    let exec = Executor::new(
        Arc::new(set),
        ExecutorConfig {
            workers: 2,
            ..ExecutorConfig::default()
        },
    );
    let p = prompt(json!({
        "1": {"class_type": "GradientImage", "inputs": {"width": 5, "height": 3, "batch": 2}},
        "2": {"class_type": "ImagePixels", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "Negate", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "ShowNumber", "inputs": {"value": ["3", 0]}}
    }));
    let out = exec
        .run(&p, &RunOptions::default(), &NullSink, &CancelToken::new())
        .unwrap();
    assert_eq!(out.output("4").unwrap().ui_text(), ["-30"]);
    // A handle made by plugin A reaches plugin B, which cannot look inside it.
    let p = prompt(json!({
        "1": {"class_type": "MakeCounter", "inputs": {"start": 1}},
        "2": {"class_type": "PeekCounter", "inputs": {"counter": ["1", 0]}},
        "3": {"class_type": "ShowNumber", "inputs": {"value": ["2", 0]}}
    }));
    match exec.run(&p, &RunOptions::default(), &NullSink, &CancelToken::new()) {
        Err(RunError::Node {
            node_id, message, ..
        }) => {
            assert_eq!(node_id, "2");
            assert!(message.contains("COUNTER"), "{message}");
        }
        other => panic!("expected a node error, got {other:?}"),
    }
}

#[test]
fn duplicate_node_names_across_plugins_are_refused() {
    let dir = temp_dir("dup");
    let copy = dir.join(format!(
        "{}odelt_test_plugin_copy{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    std::fs::copy(test_plugin(), &copy).unwrap();
    let mut set = PluginSet::new();
    set.load_file(&test_plugin()).unwrap();
    let err = set.load_file(&copy).unwrap_err();
    match &err {
        LoadError::DuplicateNode {
            node,
            first,
            second,
        } => {
            assert!(set.node(node).is_some());
            assert_eq!(first, &test_plugin());
            assert_eq!(second, &copy);
        }
        other => panic!("expected DuplicateNode, got {other}"),
    }
    // The refused plugin added nothing; the first still works.
    assert_eq!(set.plugins().len(), 1);
    // Loading the same file twice is not a duplicate.
    set.load_file(&test_plugin()).unwrap();
    assert_eq!(set.plugins().len(), 1);
}

#[test]
fn directory_scan_loads_plugins_and_skips_the_rest_with_warnings() {
    let dir = temp_dir("scan");
    let name = |n: &str| {
        format!(
            "{}{n}{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        )
    };
    std::fs::copy(lib_path("odelt_test_plugin_b"), dir.join(name("b"))).unwrap();
    std::fs::copy(lib_path("odelt_old_contract_plugin"), dir.join(name("old"))).unwrap();
    std::fs::write(dir.join(name("junk")), b"junk").unwrap();
    std::fs::write(dir.join("README.txt"), b"not a library").unwrap();
    let set = PluginSearch {
        explicit: vec![dir.clone()],
        ..Default::default()
    }
    .load()
    .unwrap();
    assert_eq!(set.plugins().len(), 1);
    assert!(set.node("Negate").is_some());
    assert_eq!(set.warnings().len(), 1, "{:?}", set.warnings());
    assert!(set.warnings()[0].contains("0.0.1"), "{:?}", set.warnings());
    // An explicit path that does not exist is an error.
    let err = PluginSearch {
        explicit: vec![dir.join("nope")],
        ..Default::default()
    }
    .load()
    .unwrap_err();
    assert!(matches!(err, LoadError::NotFound(_)));
}

#[test]
fn plugin_path_environment_entries_are_searched() {
    let search = PluginSearch {
        explicit: vec![],
        exe_dir: false,
        env_path: Some(format!(
            "{}::{}",
            test_plugin().display(),
            temp_dir("absent").join("x").display()
        )),
    };
    assert_eq!(search.paths().len(), 2);
    let set = search.load().unwrap();
    assert_eq!(set.plugins().len(), 1);
    assert!(set.warnings().iter().any(|w| w.contains("does not exist")));
}
