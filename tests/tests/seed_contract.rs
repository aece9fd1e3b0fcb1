//! The seed contract end to end: `odelt-model grid --seed S` and the example workflow `generate.json` (the
//! sampler node with seed S) draw the same samples from the same checkpoint, because both go through
//! `odelt_nodes::sample::sample_seeded` with sample i on noise stream i of the seed.
//!
//! The grid writes its raw samples with `--latent` (NCHW, the sampler node's LATENT), and the test compares them
//! bit for bit with the sampler node's output as the host recorded it.
//!
//! Needs `cargo build --release -p odelt-plugin -p odelt-host -p odelt-nodes` (the plugin and `odelt-model`).

use std::path::Path;
use std::process::Command;

use odelt_host::Workflow;
use odelt_nodes::pipeline::latent_file::read_latent;
use odelt_tests::*;
use serde_json::json;

fn set(wf: &mut Workflow, node: &str, input: &str, v: serde_json::Value) {
    wf.set(node, input, v).expect("node exists");
}

/// Runs `odelt-model grid` on the fixture's fashion-like model and returns the samples it wrote (NCHW).
fn grid_latent(dir: &Path, args: &[&str]) -> (Vec<usize>, Vec<f32>) {
    let model = fixture().models.join(names::FASHION);
    let out = dir.join("grid.png");
    let latent = dir.join("grid.latent");
    let o = Command::new(artifact(&format!(
        "odelt-model{}",
        std::env::consts::EXE_SUFFIX
    )))
    .arg("grid")
    .arg("--model")
    .arg(&model)
    .arg("--out")
    .arg(&out)
    .arg("--latent")
    .arg(&latent)
    .args(args)
    .output()
    .expect("run odelt-model grid");
    assert!(
        o.status.success(),
        "odelt-model grid {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.exists(), "the grid PNG is written too");
    let a = read_latent(&latent).expect("grid wrote a .latent file");
    (a.shape, a.data)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn grid_and_sampler_node_draw_the_same_samples_for_a_seed() {
    let f = fixture();
    let dir = f.root.join("seed-contract");
    std::fs::create_dir_all(&dir).unwrap();

    // generate.json as shipped: seed 42, 8 Euler steps, cfg 1, full length, one sample per class 0..9.
    let mut wf = example("generate.json");
    set(&mut wf, "6", "filename_prefix", json!("t_seed_contract/a"));
    let o = run_ok(&f.executor(), &wf);
    let (shape, node) = tensor_output(&o, "4", 0);
    assert_eq!(shape, vec![10, 1, 28, 28]);
    let (gshape, grid) = grid_latent(&dir, &["--seed", "42", "--steps", "8", "--rows", "1"]);
    assert_eq!(gshape, shape);
    assert_eq!(
        bits(&grid),
        bits(&node),
        "grid --seed 42 and generate.json (seed 42) differ"
    );

    // Another seed, length, step count, guidance and two rows (a batch of 20, labels 0..9 twice).
    set(&mut wf, "2", "active_blocks", json!(2));
    set(&mut wf, "3", "batch_size", json!(20));
    set(&mut wf, "4", "seed", json!(7));
    set(&mut wf, "4", "steps", json!(2));
    set(&mut wf, "4", "cfg", json!(1.5));
    let labels: Vec<String> = (0..20).map(|i| (i % 10).to_string()).collect();
    set(&mut wf, "4", "class_labels", json!(labels.join(",")));
    set(&mut wf, "6", "filename_prefix", json!("t_seed_contract/b"));
    let o = run_ok(&f.executor(), &wf);
    let (shape, node2) = tensor_output(&o, "4", 0);
    assert_eq!(shape, vec![20, 1, 28, 28]);
    let (_, grid2) = grid_latent(
        &dir,
        &[
            "--seed",
            "7",
            "--steps",
            "2",
            "--rows",
            "2",
            "--length",
            "2",
            "--guidance",
            "1.5",
        ],
    );
    assert_eq!(
        bits(&grid2),
        bits(&node2),
        "grid --seed 7 --length 2 --steps 2 --guidance 1.5 --rows 2 and the node differ"
    );
    // A seed really is the noise: the first case's samples are not the second's.
    assert_ne!(bits(&node2[..node.len()]), bits(&node));
}
