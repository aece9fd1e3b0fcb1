//! The plugin's node list as the host (and `odelt nodes`) sees it: every node of the issue, with its inputs and a
//! tooltip on every input, and checkpoint/VAE choices read from the models directory.

use std::process::Command;

use odelt_tests::{fixture, names, odelt_bin};
use serde_json::Value as Json;

/// (class, required inputs, optional inputs, outputs)
type NodeShape = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

const EXPECTED: &[NodeShape] = &[
    (
        "ODEtODElCheckpointLoader",
        &[
            "ckpt_name",
            "weights",
            "preset",
            "num_heads",
            "depth_group",
            "depth_min",
            "input_size",
            "latent_scale",
            "precision",
        ],
        &[],
        &["MODEL"],
    ),
    (
        "ODElDepthSelector",
        &["model", "active_blocks"],
        &[],
        &["MODEL"],
    ),
    (
        "ODEtEmptyLatent",
        &["model", "batch_size"],
        &[],
        &["LATENT"],
    ),
    (
        "ODEtSampler",
        &[
            "model",
            "latent_image",
            "seed",
            "steps",
            "solver",
            "tolerance",
            "cfg",
            "class_label",
            "denoise",
            "add_noise",
        ],
        &["class_labels"],
        &["LATENT"],
    ),
    ("VAELoader", &["vae_name"], &[], &["VAE"]),
    ("ODEtDecode", &["samples"], &["vae"], &["IMAGE"]),
    ("SaveImage", &["images", "filename_prefix"], &[], &[]),
    ("PreviewImage", &["images"], &[], &[]),
    ("LoadLatent", &["latent"], &[], &["LATENT"]),
    ("SaveLatent", &["samples", "filename_prefix"], &[], &[]),
];

fn check_object_info(info: &Json) {
    for (class, req, opt, outs) in EXPECTED {
        let n = info
            .get(*class)
            .unwrap_or_else(|| panic!("node {class} is not listed"));
        let required: Vec<&str> = n["input_order"]["required"]
            .as_array()
            .map(|a| a.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        assert_eq!(&required, req, "{class}: required inputs");
        let optional: Vec<&str> = n["input_order"]["optional"]
            .as_array()
            .map(|a| a.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        assert_eq!(&optional, opt, "{class}: optional inputs");
        for (section, names) in [("required", *req), ("optional", *opt)] {
            for input in names {
                let tip = n["input"][section][input][1]["tooltip"]
                    .as_str()
                    .unwrap_or("");
                assert!(
                    tip.len() > 10,
                    "{class}.{input} has no useful tooltip: {tip:?}"
                );
            }
        }
        let out: Vec<&str> = n["output"]
            .as_array()
            .map(|a| a.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        assert_eq!(&out, outs, "{class}: outputs");
        assert!(
            !n["description"].as_str().unwrap_or("").is_empty(),
            "{class}: description"
        );
    }
    for class in ["SaveImage", "PreviewImage", "SaveLatent"] {
        assert_eq!(
            info[class]["output_node"],
            Json::Bool(true),
            "{class} is an output node"
        );
    }
    assert_eq!(
        info["ODEtSampler"]["odelt"]["device_bound"],
        Json::Bool(true)
    );
    let seed = &info["ODEtSampler"]["input"]["required"]["seed"][1];
    assert_eq!(seed["max"], serde_json::json!(u64::MAX));
    assert_eq!(seed["control_after_generate"], Json::Bool(true));
    let solvers = &info["ODEtSampler"]["input"]["required"]["solver"][0];
    assert_eq!(solvers, &serde_json::json!(["euler", "heun", "dopri5"]));
    let ckpts = info["ODEtODElCheckpointLoader"]["input"]["required"]["ckpt_name"][0]
        .as_array()
        .expect("ckpt_name is a combo");
    for want in [names::GOLDEN_ST, names::GOLDEN_PKL, names::FASHION] {
        assert!(
            ckpts.iter().any(|c| c == want),
            "{want} missing from {ckpts:?}"
        );
    }
    assert!(
        !ckpts
            .iter()
            .any(|c| c.as_str().is_some_and(|s| s.starts_with("vae/"))),
        "VAEs are not checkpoints: {ckpts:?}"
    );
    let vaes = info["VAELoader"]["input"]["required"]["vae_name"][0]
        .as_array()
        .expect("vae_name is a combo");
    assert!(vaes.iter().any(|c| c == names::VAE), "{vaes:?}");
}

#[test]
fn host_lists_every_node_with_inputs_and_tooltips() {
    let f = fixture();
    check_object_info(&f.plugins.object_info());
}

#[test]
fn odelt_nodes_command_lists_every_node() {
    let f = fixture();
    let out = Command::new(odelt_bin())
        .arg("nodes")
        .arg("--plugins")
        .arg(odelt_tests::plugin_path())
        .env("ODELT_MODELS_DIR", &f.models)
        .output()
        .expect("run odelt nodes");
    assert!(
        out.status.success(),
        "odelt nodes failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Json = serde_json::from_slice(&out.stdout).expect("odelt nodes prints JSON");
    check_object_info(&info);
}
