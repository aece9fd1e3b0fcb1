//! Problems are reported with the node id before anything runs: nothing is executed, no file is written.

use odelt_host::{RunError, Workflow};
use odelt_tests::*;
use serde_json::{json, Value as Json};

/// Runs `wf` expecting a validation failure; returns the node errors (and checks nothing ran).
fn node_errors(wf: &Workflow) -> serde_json::Map<String, Json> {
    let f = fixture();
    let (r, events) = run(&f.executor(), wf, None);
    match r {
        Err(RunError::Validation(v)) => {
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e.kind, odelt_host::EventKind::Executing { .. })),
                "a node ran although validation failed"
            );
            v.node_errors
        }
        Err(e) => panic!("expected a validation failure before anything ran, got: {e}"),
        Ok(_) => panic!("expected a validation failure, but the workflow ran"),
    }
}

fn errors_text(errors: &serde_json::Map<String, Json>, node: &str) -> String {
    errors
        .get(node)
        .unwrap_or_else(|| panic!("no error for node {node}: {}", Json::Object(errors.clone())))
        .to_string()
}

fn generate() -> Workflow {
    let mut wf = example("generate.json");
    wf.set("6", "filename_prefix", json!("t_validation/never"))
        .unwrap();
    wf
}

#[test]
fn zero_steps_is_refused_on_the_sampler() {
    let mut wf = generate();
    wf.set("4", "steps", json!(0)).unwrap();
    let e = node_errors(&wf);
    assert!(errors_text(&e, "4").contains("steps"));
}

#[test]
fn missing_checkpoint_is_refused_on_the_loader() {
    let mut wf = generate();
    wf.set("1", "ckpt_name", json!("no-such-model.safetensors"))
        .unwrap();
    let e = node_errors(&wf);
    assert!(errors_text(&e, "1").contains("no-such-model"));
}

#[test]
fn names_escaping_the_models_dir_are_refused() {
    let f = fixture();
    let outside = f.root.join("outside.safetensors");
    std::fs::copy(f.models.join(names::FASHION), &outside).unwrap();
    for name in [
        "../outside.safetensors".to_string(),
        outside.display().to_string(),
    ] {
        let mut wf = generate();
        wf.set("1", "ckpt_name", json!(name)).unwrap();
        let e = node_errors(&wf);
        assert!(e.contains_key("1"), "{name}: {}", Json::Object(e.clone()));
    }
}

#[test]
fn bad_class_labels_are_refused() {
    let mut wf = generate();
    wf.set("4", "class_labels", json!("1,two,3")).unwrap();
    let e = node_errors(&wf);
    assert!(errors_text(&e, "4").contains("class_labels"));
}

#[test]
fn filename_prefix_escaping_the_output_dir_is_refused() {
    let mut wf = generate();
    wf.set("6", "filename_prefix", json!("../../elsewhere/img"))
        .unwrap();
    let e = node_errors(&wf);
    assert!(errors_text(&e, "6").contains("filename_prefix"));
}

// ---- checks that follow links to the upstream loader (the host passes linked inputs as
// {"$link", "class_type", "inputs"} objects to node validation) ----

#[test]
fn active_blocks_off_the_grid_or_beyond_the_depth_is_refused_on_the_selector() {
    for (l, what) in [
        (3, "off the model's length grid"),
        (8, "beyond the model's depth"),
    ] {
        let mut wf = generate();
        wf.set("2", "active_blocks", json!(l)).unwrap();
        let e = node_errors(&wf);
        let t = errors_text(&e, "2");
        assert!(t.contains("active_blocks") && t.contains(what), "{l}: {t}");
    }
}

#[test]
fn class_label_beyond_the_models_classes_is_refused() {
    let mut wf = generate();
    wf.set("4", "class_labels", json!("")).unwrap();
    wf.set("4", "class_label", json!(10)).unwrap();
    let e = node_errors(&wf);
    assert!(errors_text(&e, "4").contains("class_label"));
}

#[test]
fn vae_with_other_latent_channels_is_refused_on_the_decoder() {
    let mut wf = example("decode_with_vae.json");
    for (k, v) in pickle_loader_inputs() {
        wf.set("1", k, v).unwrap();
    }
    wf.set("2", "active_blocks", json!(2)).unwrap();
    wf.set("4", "class_labels", json!("1,2,3,4")).unwrap();
    wf.set("5", "vae_name", json!(names::VAE16)).unwrap();
    wf.set("7", "filename_prefix", json!("t_validation/never"))
        .unwrap();
    let e = node_errors(&wf);
    let t = errors_text(&e, "6");
    assert!(t.contains("16") && t.contains("latent channels"), "{t}");
}

#[test]
fn latent_model_without_vae_is_refused_on_the_decoder() {
    let mut wf = example("decode_with_vae.json");
    for (k, v) in pickle_loader_inputs() {
        wf.set("1", k, v).unwrap();
    }
    wf.set("2", "active_blocks", json!(2)).unwrap();
    wf.set("4", "class_labels", json!("1,2,3,4")).unwrap();
    wf.set("7", "filename_prefix", json!("t_validation/never"))
        .unwrap();
    let mut nodes = wf.to_json();
    nodes["6"]["inputs"].as_object_mut().unwrap().remove("vae");
    let wf = Workflow::from_json(nodes).unwrap();
    let e = node_errors(&wf);
    assert!(errors_text(&e, "6").contains("needs a VAE"));
}
