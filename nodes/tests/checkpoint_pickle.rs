//! The official pickle checkpoints through [`checkpoint::open`]: configuration from shapes plus overrides, the
//! golden velocity from `tiny.pkl`, the conventional path from `tiny-sm.pkl`, and `params_ema` on request.

mod golden_common;

use candle_core::{DType, Tensor};
use golden_common::{data_dir, device, rel_l2, Golden};
use odelt_nodes::checkpoint::{self, ConfigOverrides, LoadOptions, WeightsSlot};
use odelt_nodes::{Dit, DitConfig};

fn tiny_overrides() -> ConfigOverrides {
    ConfigOverrides {
        preset: Some("custom".into()),
        num_heads: Some(4),
        depth_group: Some(2),
        depth_min: Some(2),
        input_size: Some(8),
        latent_scale: Some(1.0),
    }
}

fn v(model: &Dit, g: &Golden, t: f32, d: f32) -> Tensor {
    let x = g.get("in/x0_nhwc");
    let b = x.dim(0).unwrap();
    model
        .forward(
            &Tensor::full(t, b, &device()).unwrap(),
            &x,
            &Tensor::full(d, b, &device()).unwrap(),
            &g.get("in/labels"),
        )
        .unwrap()
}

#[test]
fn official_pickle_reproduces_golden_velocities() {
    let g = Golden::open();
    let opts = LoadOptions {
        overrides: tiny_overrides(),
        ..Default::default()
    };
    let ck = checkpoint::open(&data_dir().join("tiny.pkl"), &opts).unwrap();
    assert_eq!(ck.format, checkpoint::Format::OfficialPickle);
    assert_eq!(ck.config, DitConfig::golden_tiny());
    for l in [2usize, 4] {
        let m = Dit::load(&ck.config, &*ck.source, &device(), DType::F32, Some(l)).unwrap();
        let err = rel_l2(
            &v(&m, &g, 0.75, 7.0),
            &g.get(&format!("out/v_l{l}_t0.75_d7")),
        );
        assert!(err < 1e-4, "l={l}: {err}");
    }
}

#[test]
fn params_ema_is_a_different_tree() {
    let g = Golden::open();
    let opts = LoadOptions {
        weights: WeightsSlot::ParamsEma,
        overrides: tiny_overrides(),
    };
    let ck = checkpoint::open(&data_dir().join("tiny.pkl"), &opts).unwrap();
    let m = Dit::load(&ck.config, &*ck.source, &device(), DType::F32, None).unwrap();
    let err = rel_l2(&v(&m, &g, 0.75, 7.0), &g.get("out/v_l4_t0.75_d7"));
    assert!(
        err > 1e-3,
        "params_ema should differ from params (rel {err})"
    );
}

#[test]
fn shortcut_models_pickle_runs_the_conventional_path() {
    let g = Golden::open();
    let opts = LoadOptions {
        overrides: tiny_overrides(),
        ..Default::default()
    };
    let ck = checkpoint::open(&data_dir().join("tiny-sm.pkl"), &opts).unwrap();
    assert!(!ck.config.length_embedding);
    let m = Dit::load(&ck.config, &*ck.source, &device(), DType::F32, None).unwrap();
    assert!(
        m.with_length(2).is_err(),
        "no length embedding: only the full depth runs"
    );
    let err = rel_l2(&v(&m, &g, 0.5, 3.0), &g.get("out/v_conventional_t0.5_d3"));
    assert!(err < 1e-4, "{err}");
}

#[test]
fn pickle_without_overrides_names_what_is_missing() {
    let err = checkpoint::open(&data_dir().join("tiny.pkl"), &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("num_heads"), "{err}");
}

#[test]
fn convert_pickle_to_safetensors_keeps_outputs() {
    let g = Golden::open();
    let dir = std::env::temp_dir().join(format!("odelt-convert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dst = dir.join("tiny.safetensors");
    let opts = LoadOptions {
        overrides: tiny_overrides(),
        ..Default::default()
    };
    let cfg =
        checkpoint::convert_to_safetensors(&data_dir().join("tiny.pkl"), &dst, &opts).unwrap();
    assert_eq!(cfg, DitConfig::golden_tiny());
    // The converted file needs no overrides: the configuration travels in its metadata.
    let ck = checkpoint::open(&dst, &LoadOptions::default()).unwrap();
    assert_eq!(ck.config, cfg);
    let m = Dit::load(&ck.config, &*ck.source, &device(), DType::F32, Some(2)).unwrap();
    let err = rel_l2(&v(&m, &g, 0.25, 2.0), &g.get("out/v_l2_t0.25_d2"));
    assert!(err < 1e-4, "{err}");
}
