//! The SD VAE (AutoencoderKL) in candle: shapes, wiring, key-name variants, error messages, and numerical parity
//! with an independent NumPy reference (`data/vae_tiny_reference.py` → `data/vae_tiny.npz`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use odelt_nodes::vae::{
    random_vae_tensors, to_image_bhwc01, write_random_vae, KeyLayout, VaeConfig, VaeDecoder,
    VaeEncoder,
};

/// A fresh scratch directory per test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("odelt-vae-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny() -> VaeConfig {
    VaeConfig {
        block_out_channels: vec![32, 32],
        layers_per_block: 1,
        norm_num_groups: 8,
        ..VaeConfig::sd_ft_mse()
    }
}

fn latents(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
    // A cheap deterministic pattern (no RNG crate needed here).
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let v: Vec<f32> = (0..n)
        .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn save(path: &Path, tensors: &HashMap<String, Tensor>) {
    let mut v: Vec<(&String, &Tensor)> = tensors.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    safetensors::serialize_to_file(v.iter().map(|(n, t)| (n.as_str(), *t)), None, path).unwrap();
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn rel_l2(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).unwrap().sqr().unwrap().sum_all().unwrap();
    let n = b.sqr().unwrap().sum_all().unwrap();
    (d.to_scalar::<f32>().unwrap() as f64 / n.to_scalar::<f32>().unwrap() as f64).sqrt()
}

fn load_dec(path: &Path, cfg: &VaeConfig) -> VaeDecoder {
    VaeDecoder::load(path, cfg, &Device::Cpu, DType::F32).unwrap()
}

fn load_err(path: &Path, cfg: &VaeConfig) -> String {
    VaeDecoder::load(path, cfg, &Device::Cpu, DType::F32)
        .unwrap_err()
        .to_string()
}

#[test]
fn decode_shape_and_finite() {
    let dir = scratch("shape");
    let cfg = tiny();
    let p = dir.join("vae.safetensors");
    write_random_vae(&p, &cfg, 1).unwrap();
    let dec = load_dec(&p, &cfg);
    assert_eq!(dec.latent_channels(), 4);
    assert_eq!(dec.layout(), &KeyLayout::Diffusers { prefix: "".into() });
    let out = dec.decode(&latents((2, 4, 8, 8), 3)).unwrap();
    assert_eq!(out.dims(), &[2, 3, 16, 16]);
    assert_eq!(out.dtype(), DType::F32);
    let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
    let std = {
        let m = v.iter().sum::<f32>() / v.len() as f32;
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / v.len() as f32).sqrt()
    };
    assert!(std > 1e-3, "random VAE output is constant (std {std})");
    // The two samples differ (the batch is not collapsed).
    let d = max_abs_diff(&out.get(0).unwrap(), &out.get(1).unwrap());
    assert!(d > 1e-4);
    let img = to_image_bhwc01(&out).unwrap();
    assert_eq!(img.dims(), &[2, 16, 16, 3]);
    // Non-square latents keep H and W apart.
    assert_eq!(
        dec.decode(&latents((1, 4, 3, 5), 0)).unwrap().dims(),
        &[1, 3, 6, 10]
    );
}

#[test]
fn all_zero_weights_give_conv_out_bias() {
    let dir = scratch("zero");
    let cfg = tiny();
    let mut t = random_vae_tensors(&cfg, 2).unwrap();
    for v in t.values_mut() {
        *v = v.zeros_like().unwrap();
    }
    let bias = [0.25f32, -0.5, 0.75];
    t.insert(
        "decoder.conv_out.bias".into(),
        Tensor::new(&bias, &Device::Cpu).unwrap(),
    );
    let p = dir.join("vae.safetensors");
    save(&p, &t);
    let out = load_dec(&p, &cfg)
        .decode(&latents((2, 4, 8, 8), 5))
        .unwrap();
    assert_eq!(out.dims(), &[2, 3, 16, 16]);
    for b in 0..2 {
        for (c, &want) in bias.iter().enumerate() {
            let plane: Vec<f32> = out
                .get(b)
                .unwrap()
                .get(c)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(
                plane.iter().all(|&x| (x - want).abs() < 1e-6),
                "sample {b} channel {c}: expected {want}, got {:?}",
                &plane[..4]
            );
        }
    }
}

/// The legacy diffusers attention names, written by the test itself.
fn legacy_names(t: &HashMap<String, Tensor>, conv_shapes: bool) -> HashMap<String, Tensor> {
    t.iter()
        .map(|(k, v)| {
            let mut k = k.clone();
            let mut v = v.clone();
            for (new, old) in [
                (".to_q.", ".query."),
                (".to_k.", ".key."),
                (".to_v.", ".value."),
                (".to_out.0.", ".proj_attn."),
            ] {
                if k.contains(new) {
                    k = k.replace(new, old);
                    if conv_shapes && v.rank() == 2 {
                        let (o, i) = v.dims2().unwrap();
                        v = v.reshape((o, i, 1, 1)).unwrap();
                    }
                }
            }
            (k, v)
        })
        .collect()
}

/// The original LDM single-file names (as in ComfyUI's `vae-ft-mse-840000-ema-pruned.safetensors`), for a
/// two-level config, written out by hand.
fn ldm_names(t: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    let table = [
        (
            "decoder.up_blocks.0.upsamplers.0.",
            "decoder.up.1.upsample.",
        ),
        ("decoder.up_blocks.0.resnets.", "decoder.up.1.block."),
        ("decoder.up_blocks.1.resnets.", "decoder.up.0.block."),
        (
            "encoder.down_blocks.0.downsamplers.0.",
            "encoder.down.0.downsample.",
        ),
        ("encoder.down_blocks.0.resnets.", "encoder.down.0.block."),
        ("encoder.down_blocks.1.resnets.", "encoder.down.1.block."),
        ("mid_block.resnets.0.", "mid.block_1."),
        ("mid_block.resnets.1.", "mid.block_2."),
        ("mid_block.attentions.0.group_norm.", "mid.attn_1.norm."),
        ("mid_block.attentions.0.to_q.", "mid.attn_1.q."),
        ("mid_block.attentions.0.to_k.", "mid.attn_1.k."),
        ("mid_block.attentions.0.to_v.", "mid.attn_1.v."),
        ("mid_block.attentions.0.to_out.0.", "mid.attn_1.proj_out."),
        ("conv_norm_out.", "norm_out."),
        ("conv_shortcut.", "nin_shortcut."),
    ];
    t.iter()
        .map(|(k, v)| {
            let mut k = k.clone();
            for (a, b) in table {
                k = k.replace(a, b);
            }
            let v = if k.contains("attn_1.") && v.rank() == 2 {
                let (o, i) = v.dims2().unwrap();
                v.reshape((o, i, 1, 1)).unwrap()
            } else {
                v.clone()
            };
            (format!("{prefix}{k}"), v)
        })
        .collect()
}

#[test]
fn key_name_variants_give_identical_outputs() {
    let dir = scratch("variants");
    // Channel change across levels so that conv_shortcut / nin_shortcut are exercised.
    let cfg = VaeConfig {
        block_out_channels: vec![16, 32],
        layers_per_block: 1,
        norm_num_groups: 8,
        ..VaeConfig::sd_ft_mse()
    };
    let t = random_vae_tensors(&cfg, 7).unwrap();
    assert!(t.contains_key("decoder.up_blocks.1.resnets.0.conv_shortcut.weight"));
    let z = latents((1, 4, 4, 6), 11);
    let x = (latents((1, 3, 8, 12), 13) * 0.9).unwrap();

    let base = dir.join("current.safetensors");
    save(&base, &t);
    let reference = load_dec(&base, &cfg).decode(&z).unwrap();
    let enc_ref = VaeEncoder::load(&base, &cfg, &Device::Cpu, DType::F32)
        .unwrap()
        .encode(&x)
        .unwrap();

    let variants = [
        ("legacy-linear", legacy_names(&t, false)),
        ("legacy-conv", legacy_names(&t, true)),
        ("ldm", ldm_names(&t, "")),
        ("ldm-prefixed", ldm_names(&t, "first_stage_model.")),
    ];
    for (name, tensors) in variants {
        assert!(
            !tensors.keys().any(|k| k.contains("to_q")),
            "{name}: renaming left current names"
        );
        let p = dir.join(format!("{name}.safetensors"));
        save(&p, &tensors);
        let out = load_dec(&p, &cfg).decode(&z).unwrap();
        let d = max_abs_diff(&out, &reference);
        assert!(d < 1e-6, "{name}: decode differs by {d}");
        let enc = VaeEncoder::load(&p, &cfg, &Device::Cpu, DType::F32)
            .unwrap()
            .encode(&x)
            .unwrap();
        let d =
            max_abs_diff(&enc.mean, &enc_ref.mean).max(max_abs_diff(&enc.logvar, &enc_ref.logvar));
        assert!(d < 1e-6, "{name}: encode differs by {d}");
    }
    let ldm = load_dec(&dir.join("ldm-prefixed.safetensors"), &cfg);
    assert_eq!(
        ldm.layout(),
        &KeyLayout::Ldm {
            prefix: "first_stage_model.".into()
        }
    );
    // A different set of weights really changes the output (the comparison above can fail).
    let other = dir.join("other.safetensors");
    write_random_vae(&other, &cfg, 8).unwrap();
    assert!(max_abs_diff(&load_dec(&other, &cfg).decode(&z).unwrap(), &reference) > 1e-3);
}

#[test]
fn missing_key_is_named() {
    let dir = scratch("missing");
    let cfg = tiny();
    let mut t = random_vae_tensors(&cfg, 3).unwrap();
    let gone = "decoder.up_blocks.0.resnets.1.conv2.weight";
    assert!(t.remove(gone).is_some());
    let p = dir.join("vae.safetensors");
    save(&p, &t);
    let e = load_err(&p, &cfg);
    assert!(e.contains(gone) && e.contains("missing"), "{e}");
    assert!(
        e.contains("vae.safetensors"),
        "error should name the file: {e}"
    );

    // No attention at all: both the current and the legacy names are reported.
    let mut t = random_vae_tensors(&cfg, 3).unwrap();
    t.retain(|k, _| !k.contains("decoder.mid_block.attentions.0.to_"));
    let p = dir.join("noattn.safetensors");
    save(&p, &t);
    let e = load_err(&p, &cfg);
    assert!(
        e.contains("decoder.mid_block.attentions.0.to_q.weight")
            && e.contains("decoder.mid_block.attentions.0.query.weight"),
        "{e}"
    );
    // ... and such a file loads when the configuration says there is no attention.
    let no_attn = VaeConfig {
        mid_block_add_attention: false,
        ..cfg.clone()
    };
    load_dec(&p, &no_attn);
}

#[test]
fn wrong_vae_gives_clear_errors() {
    let dir = scratch("wrong");
    let cfg = tiny();
    // A 16-latent-channel VAE (SD3/Flux-like) loaded as a 4-channel one.
    let p16 = dir.join("vae16.safetensors");
    write_random_vae(
        &p16,
        &VaeConfig {
            latent_channels: 16,
            ..cfg.clone()
        },
        4,
    )
    .unwrap();
    let e = load_err(&p16, &cfg);
    assert!(
        e.contains("wrong VAE") && e.contains("16 latent channels"),
        "{e}"
    );

    // Wider blocks: the first mismatching tensor is named with both shapes.
    let pw = dir.join("wide.safetensors");
    write_random_vae(
        &pw,
        &VaeConfig {
            block_out_channels: vec![32, 64],
            ..cfg.clone()
        },
        4,
    )
    .unwrap();
    let e = load_err(&pw, &cfg);
    assert!(e.contains("wrong VAE") && e.contains("64"), "{e}");
    let e = load_err(
        &pw,
        &VaeConfig {
            block_out_channels: vec![16, 64],
            ..cfg.clone()
        },
    );
    assert!(
        e.contains("decoder.up_blocks.1.resnets.0.conv1.weight")
            && e.contains("has shape [32, 64, 3, 3]")
            && e.contains("expects [16, 64, 3, 3]"),
        "{e}"
    );

    // More levels in the file than in the config.
    let p3 = dir.join("three.safetensors");
    write_random_vae(
        &p3,
        &VaeConfig {
            block_out_channels: vec![32, 32, 32],
            ..cfg.clone()
        },
        4,
    )
    .unwrap();
    let e = load_err(&p3, &cfg);
    assert!(e.contains("more than 2 decoder levels"), "{e}");

    // Not a VAE at all.
    let pn = dir.join("notvae.safetensors");
    let mut t = HashMap::new();
    t.insert(
        "model.layers.0.weight".to_string(),
        Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
    );
    save(&pn, &t);
    let e = load_err(&pn, &cfg);
    assert!(
        e.contains("not an AutoencoderKL VAE") && e.contains("model.layers.0.weight"),
        "{e}"
    );
    // Not a file.
    let e = load_err(&dir.join("absent.safetensors"), &cfg);
    assert!(e.contains("absent.safetensors"), "{e}");
}

#[test]
fn decode_rejects_nhwc_latents_with_a_hint() {
    let dir = scratch("nhwc");
    let cfg = tiny();
    let p = dir.join("vae.safetensors");
    write_random_vae(&p, &cfg, 1).unwrap();
    let e = load_dec(&p, &cfg)
        .decode(&latents((1, 8, 8, 4), 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("NHWC"), "{e}");
}

#[test]
fn encoder_shapes_and_posterior_sampling() {
    let dir = scratch("encoder");
    let cfg = tiny();
    let p = dir.join("vae.safetensors");
    write_random_vae(&p, &cfg, 9).unwrap();
    let enc = VaeEncoder::load(&p, &cfg, &Device::Cpu, DType::F32).unwrap();
    let x = (latents((2, 3, 16, 12), 1) * 0.9).unwrap();
    let post = enc.encode(&x).unwrap();
    assert_eq!(post.mean.dims(), &[2, 4, 8, 6]);
    assert_eq!(post.logvar.dims(), &[2, 4, 8, 6]);
    let a = post.sample(1).unwrap();
    let b = post.sample(1).unwrap();
    let c = post.sample(2).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    assert!(max_abs_diff(&a, &c) > 1e-4);
    let zero = post.mean.zeros_like().unwrap();
    assert_eq!(
        max_abs_diff(&post.sample_with_noise(&zero).unwrap(), &post.mean),
        0.0
    );
    // Round trip through the decoder gives image-sized output.
    let dec = load_dec(&p, &cfg);
    assert_eq!(dec.decode(post.mode()).unwrap().dims(), &[2, 3, 16, 12]);
    // Sizes that are not multiples of the downscale factor are refused.
    assert!(enc.encode(&latents((1, 3, 15, 12), 0)).is_err());
}

#[test]
fn half_precision_decode_is_close_to_f32() {
    let dir = scratch("f16");
    let cfg = tiny();
    let p = dir.join("vae.safetensors");
    write_random_vae(&p, &cfg, 1).unwrap();
    let z = latents((1, 4, 8, 8), 3);
    let f32_out = load_dec(&p, &cfg).decode(&z).unwrap();
    for dtype in [DType::F16, DType::BF16] {
        let out = VaeDecoder::load(&p, &cfg, &Device::Cpu, dtype)
            .unwrap()
            .decode(&z)
            .unwrap();
        assert_eq!(out.dtype(), DType::F32);
        let dec = VaeDecoder::load(&p, &cfg, &Device::Cpu, dtype).unwrap();
        let want = if dtype == DType::BF16 {
            DType::F32
        } else {
            dtype
        };
        assert_eq!(dec.dtype(), want, "bf16 computes in f32 on the CPU");
        let r = rel_l2(&out, &f32_out);
        assert!(r < 3e-2, "{dtype:?}: rel L2 {r}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Numerical parity with the NumPy reference.

fn golden_cfg() -> VaeConfig {
    VaeConfig {
        block_out_channels: vec![8, 16],
        layers_per_block: 1,
        norm_num_groups: 4,
        ..VaeConfig::sd_ft_mse()
    }
}

fn golden() -> HashMap<String, Tensor> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vae_tiny.npz");
    Tensor::read_npz(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .into_iter()
        .collect()
}

#[test]
fn matches_numpy_reference() {
    let g = golden();
    let dir = scratch("golden");
    let weights: HashMap<String, Tensor> = g
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("w.").map(|n| (n.to_string(), v.clone())))
        .collect();
    let cfg = golden_cfg();
    // The reference holds exactly the tensors this configuration needs.
    let mut want: Vec<String> = odelt_nodes::vae::vae_param_shapes(&cfg)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let mut have: Vec<String> = weights.keys().cloned().collect();
    want.sort();
    have.sort();
    assert_eq!(want, have);

    let p = dir.join("vae.safetensors");
    save(&p, &weights);
    let dec = load_dec(&p, &cfg);
    let out = dec.decode(&g["z"]).unwrap();
    let r = rel_l2(&out, &g["decoded"]);
    let m = max_abs_diff(&out, &g["decoded"]);
    assert!(r < 1e-5 && m < 1e-4, "decode: rel L2 {r}, max abs {m}");

    let enc = VaeEncoder::load(&p, &cfg, &Device::Cpu, DType::F32).unwrap();
    let post = enc.encode(&g["x"]).unwrap();
    let r1 = rel_l2(&post.mean, &g["enc_mean"]);
    let r2 = rel_l2(&post.logvar, &g["enc_logvar"]);
    assert!(
        r1 < 1e-5 && r2 < 1e-5,
        "encode: rel L2 mean {r1}, logvar {r2}"
    );
}

/// Full-size SD VAE decode of a 32x32 latent (~20 s on 2 CPU cores). Uses `ODELT_VAE_PATH` (a real
/// sd-vae-ft-mse `diffusion_pytorch_model.safetensors`) when set, else random full-size weights.
#[test]
#[ignore = "slow: full-size VAE decode"]
fn full_size_decode_32x32() {
    let cfg = VaeConfig::sd_ft_mse();
    let path = match std::env::var_os("ODELT_VAE_PATH") {
        Some(p) => PathBuf::from(p),
        None => {
            let p = scratch("full").join("vae.safetensors");
            write_random_vae(&p, &cfg, 0).unwrap();
            p
        }
    };
    let device = if candle_core::utils::cuda_is_available() {
        Device::new_cuda(0).unwrap()
    } else {
        Device::Cpu
    };
    let dec = VaeDecoder::load(&path, &cfg, &device, DType::F32).unwrap();
    let z = latents((1, 4, 32, 32), 0);
    let t = std::time::Instant::now();
    let out = dec.decode(&z).unwrap();
    eprintln!("full-size decode on {device:?}: {:?}", t.elapsed());
    assert_eq!(out.dims(), &[1, 3, 256, 256]);
}
