//! The example workflows and the golden velocity, run through the host SDK on small checkpoints made by the
//! fixture (the project's safetensors format and the official pickle layout).

use candle_core::Tensor;
use odelt_host::{EventKind, Workflow};
use odelt_nodes::pipeline::latent_file::{read_latent, write_latent};
use odelt_nodes::pipeline::Array;
use odelt_tests::*;
use serde_json::json;

fn set(wf: &mut Workflow, node: &str, input: &str, v: serde_json::Value) {
    wf.set(node, input, v).expect("node exists");
}

#[test]
fn generate_example_makes_one_png_per_sample_with_the_prompt() {
    let f = fixture();
    let mut wf = example("generate.json");
    set(&mut wf, "6", "filename_prefix", json!("t_generate/img"));
    let exec = f.executor();
    let extra = json!({"workflow": {"nodes": [], "note": "ui graph"}});
    let (r, events) = run(&exec, &wf, Some(extra));
    let o = r.expect("generate.json runs");

    let (shape, latent) = tensor_output(&o, "4", 0);
    assert_eq!(
        shape,
        vec![10, 1, 28, 28],
        "sampler output is NCHW of the model's size"
    );
    assert!(latent.iter().all(|v| v.is_finite()));
    let (shape, img) = tensor_output(&o, "5", 0);
    assert_eq!(shape, vec![10, 28, 28, 3], "IMAGE is [B, H, W, 3]");
    assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));

    let files = ui_images(&o, "6", "images");
    assert_eq!(files.len(), 10);
    assert_eq!(files[0].0, "img_00001_.png");
    assert_eq!(files[9].0, "img_00010_.png");
    for (name, sub, kind) in &files {
        assert_eq!((sub.as_str(), kind.as_str()), ("t_generate", "output"));
        let (w, h, texts) = png_info(&f.output.join(sub).join(name));
        assert_eq!((w, h), (28, 28));
        let prompt = texts
            .iter()
            .find(|(k, _)| k == "prompt")
            .expect("prompt chunk");
        let p: serde_json::Value = serde_json::from_str(&prompt.1).expect("prompt chunk is JSON");
        assert_eq!(p["4"]["class_type"], "ODEtSampler");
        assert_eq!(p["4"]["inputs"]["seed"], 42);
        let wfc = texts
            .iter()
            .find(|(k, _)| k == "workflow")
            .expect("workflow chunk");
        assert!(wfc.1.contains("ui graph"));
    }

    // Progress: one event per velocity evaluation of the sampler (8 Euler steps), with previews.
    let progress: Vec<(u64, u64, bool)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Progress {
                node_id,
                value,
                max,
                preview,
            } if node_id == "4" => Some((*value, *max, preview.is_some())),
            _ => None,
        })
        .collect();
    assert_eq!(progress.len(), 8, "{progress:?}");
    assert_eq!(progress.last(), Some(&(8, 8, true)));

    // A second run counts on: the next files are 11..20.
    let exec2 = f.executor();
    let o2 = run_ok(&exec2, &wf);
    assert_eq!(ui_images(&o2, "6", "images")[0].0, "img_00011_.png");
    // Same seed, same model: the same samples.
    assert_eq!(tensor_output(&o2, "4", 0).1, latent);
}

#[test]
fn same_seed_at_every_length() {
    let f = fixture();
    let mut wf = example("same_seed_every_length.json");
    for (node, l) in [("13", 2), ("23", 4), ("33", 6)] {
        set(
            &mut wf,
            node,
            "filename_prefix",
            json!(format!("t_lengths/l{l}")),
        );
    }
    let exec = f.executor();
    let o = run_ok(&exec, &wf);
    let outs: Vec<Vec<f32>> = ["11", "21", "31"]
        .iter()
        .map(|id| {
            let (shape, v) = tensor_output(&o, id, 0);
            assert_eq!(shape, vec![10, 1, 28, 28]);
            v
        })
        .collect();
    assert_ne!(outs[0], outs[1], "length 2 and 4 give different samples");
    assert_ne!(outs[1], outs[2], "length 4 and 6 give different samples");
    for node in ["13", "23", "33"] {
        assert_eq!(ui_images(&o, node, "images").len(), 10);
    }
    // Length 6 is the full depth: the same as sampling the loader's MODEL directly.
    let mut direct = wf.clone();
    direct.link("31", "model", "1", 0).expect("relink");
    let o2 = run_ok(&f.executor(), &direct);
    assert_eq!(tensor_output(&o2, "31", 0).1, outs[2]);
}

#[test]
fn img2img_via_denoise() {
    let f = fixture();
    let mut wf = example("img2img_denoise.json");
    set(&mut wf, "6", "filename_prefix", json!("t_img2img/source"));
    set(&mut wf, "8", "filename_prefix", json!("t_img2img/result"));
    let o = run_ok(&f.executor(), &wf);
    let (shape, source) = tensor_output(&o, "3", 0);
    assert_eq!(shape, vec![4, 1, 28, 28]);
    let (shape, result) = tensor_output(&o, "4", 0);
    assert_eq!(shape, vec![4, 1, 28, 28]);
    assert_ne!(source, result);
    assert_eq!(tensor_output(&o, "7", 0).0, vec![4, 28, 28, 3]);

    // denoise 0 starts (and ends) at t = 1: the source comes back unchanged.
    set(&mut wf, "4", "denoise", json!(0.0));
    let o = run_ok(&f.executor(), &wf);
    assert_eq!(tensor_output(&o, "4", 0).1, tensor_output(&o, "3", 0).1);
}

#[test]
fn decode_with_vae_example_on_a_tiny_pickle_and_vae() {
    let f = fixture();
    let mut wf = example("decode_with_vae.json");
    for (k, v) in pickle_loader_inputs() {
        set(&mut wf, "1", k, v);
    }
    set(&mut wf, "2", "active_blocks", json!(2));
    set(&mut wf, "4", "class_labels", json!("1,2,3,-1"));
    set(&mut wf, "4", "steps", json!(2));
    set(&mut wf, "5", "vae_name", json!(names::VAE));
    set(&mut wf, "7", "filename_prefix", json!("t_vae/img"));
    let o = run_ok(&f.executor(), &wf);
    assert_eq!(tensor_output(&o, "4", 0).0, vec![4, 4, 8, 8]);
    let (shape, img) = tensor_output(&o, "6", 0);
    assert_eq!(
        shape,
        vec![4, 16, 16, 3],
        "the tiny VAE upsamples 2x into RGB"
    );
    assert!(img.iter().all(|v| (0.0..=1.0).contains(v)));
    let files = ui_images(&o, "7", "images");
    assert_eq!(files.len(), 4);
    let (w, h, _) = png_info(&f.output.join(&files[0].1).join(&files[0].0));
    assert_eq!((w, h), (16, 16));
}

/// LoadLatent (x0 of the golden inputs) → sampler (add_noise off, one Euler step from t = 0, cfg 1, the golden
/// labels per sample) → SaveLatent gives x1 = x0 + v(0, x0, dt_base = 0): the golden velocity.
fn golden_velocity(loader: Vec<(&'static str, serde_json::Value)>, tag: &str) {
    let f = fixture();
    let g = Golden::open();
    let x0 = g.get("in/x0_nhwc");
    let x0_nchw =
        Array::from_tensor(&x0.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap()).unwrap();
    // LoadLatent reads from the host's input directory only.
    let inputs = f.root.join("inputs");
    let src_name = format!("x0_{tag}.latent");
    write_latent(&inputs.join(&src_name), &x0_nchw, &[]).expect("write x0 latent");
    let exec = odelt_host::Executor::new(
        f.plugins.clone(),
        odelt_host::ExecutorConfig {
            input_dir: inputs,
            ..f.executor().config().clone()
        },
    );
    let labels: Vec<String> = g
        .labels()
        .iter()
        .map(|&l| if l >= 10 { "-1".into() } else { l.to_string() })
        .collect();

    for l in [2usize, 4] {
        let mut wf = Workflow::new();
        let ld = wf.add("ODEtODElCheckpointLoader", &loader);
        let ds = wf.add(
            "ODElDepthSelector",
            &[
                ("model", Workflow::link_value(&ld, 0)),
                ("active_blocks", json!(l)),
            ],
        );
        let ll = wf.add("LoadLatent", &[("latent", json!(src_name))]);
        let mut si = sampler_inputs(123, 1, 1.0, false);
        si.push(("model", Workflow::link_value(&ds, 0)));
        si.push(("latent_image", Workflow::link_value(&ll, 0)));
        si.push(("class_labels", json!(labels.join(","))));
        let sm = wf.add("ODEtSampler", &si);
        let sv = wf.add(
            "SaveLatent",
            &[
                ("samples", Workflow::link_value(&sm, 0)),
                ("filename_prefix", json!(format!("t_golden/{tag}_l{l}"))),
            ],
        );
        let o = run_ok(&exec, &wf);
        let files = ui_images(&o, &sv, "latents");
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].0,
            "{tag}_l{l}_00001_.latent"
                .replace("{tag}", tag)
                .replace("{l}", &l.to_string())
        );
        let x1 =
            read_latent(&f.output.join(&files[0].1).join(&files[0].0)).expect("read saved latent");
        assert_eq!(x1.shape, x0_nchw.shape);
        let v: Vec<f32> = x1
            .data
            .iter()
            .zip(&x0_nchw.data)
            .map(|(a, b)| a - b)
            .collect();
        let want: Tensor = g.get(&format!("out/v_l{l}_t0.0_d0"));
        let want =
            Array::from_tensor(&want.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap()).unwrap();
        let err = rel_l2(&v, &want.data);
        assert!(err < 1e-5, "{tag} l={l}: relative error {err}");
        // The sampler's own output equals the saved file.
        assert_eq!(tensor_output(&o, &sm, 0).1, x1.data);
    }
}

#[test]
fn golden_velocity_through_safetensors_checkpoint() {
    golden_velocity(loader_inputs(names::GOLDEN_ST), "st");
}

#[test]
fn golden_velocity_through_official_pickle() {
    golden_velocity(pickle_loader_inputs(), "pkl");
}

#[test]
fn preview_image_writes_temp_files() {
    let f = fixture();
    let mut wf = example("generate.json");
    set(&mut wf, "3", "batch_size", json!(2));
    set(&mut wf, "4", "class_labels", json!("3,4"));
    set(&mut wf, "4", "steps", json!(1));
    let mut nodes = wf.to_json();
    nodes["6"] = json!({"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}});
    let wf = Workflow::from_json(nodes).expect("workflow");
    let o = run_ok(&f.executor(), &wf);
    let files = ui_images(&o, "6", "images");
    assert_eq!(files.len(), 2);
    for (name, sub, kind) in files {
        assert_eq!(kind, "temp");
        assert!(
            name.starts_with("odelt_temp_") && name.ends_with("_.png"),
            "{name}"
        );
        assert!(f.temp.join(sub).join(name).is_file());
    }
}

#[test]
fn cancel_stops_the_sampler_between_evaluations() {
    use odelt_host::{CancelToken, Event, RunError, RunOptions};
    let f = fixture();
    let mut wf = example("generate.json");
    set(&mut wf, "4", "steps", json!(50));
    set(&mut wf, "6", "filename_prefix", json!("t_cancel/never"));
    let exec = f.executor();
    let cancel = CancelToken::new();
    let seen = std::sync::Mutex::new(Vec::new());
    let token = cancel.clone();
    let sink = |e: &Event| {
        if let EventKind::Progress { node_id, value, .. } = &e.kind {
            seen.lock().unwrap().push((node_id.clone(), *value));
            if *value == 3 {
                token.cancel();
            }
        }
    };
    let r = exec.run(
        &wf.to_prompt().unwrap(),
        &RunOptions::default(),
        &sink,
        &cancel,
    );
    match r {
        Err(RunError::Interrupted { node_id, .. }) => assert_eq!(node_id.as_deref(), Some("4")),
        Err(e) => panic!("expected an interruption, got {e}"),
        Ok(_) => panic!("the run was not interrupted"),
    }
    let seen = seen.into_inner().unwrap();
    assert_eq!(
        seen.last(),
        Some(&("4".to_string(), 3)),
        "stopped right after the 3rd evaluation: {seen:?}"
    );
    assert!(!f.output.join("t_cancel").exists(), "nothing was saved");
}

#[test]
fn free_drops_models_and_the_next_run_rebuilds_them() {
    let f = fixture();
    let mut wf = example("generate.json");
    set(&mut wf, "3", "batch_size", json!(2));
    set(&mut wf, "4", "class_labels", json!("0,1"));
    set(&mut wf, "4", "steps", json!(2));
    set(&mut wf, "6", "filename_prefix", json!("t_free/img"));
    let exec = f.executor();
    let a = tensor_output(&run_ok(&exec, &wf), "4", 0).1;
    exec.free(true, true);
    let b = tensor_output(&run_ok(&exec, &wf), "4", 0).1;
    assert_eq!(a, b);
}
