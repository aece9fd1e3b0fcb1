//! Every AutoencoderKL tensor a configuration needs (canonical diffusers names and shapes), and a writer of
//! random VAE files in that layout for tests.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use super::config::VaeConfig;
use crate::error::{Error, Result};

fn resnet(out: &mut Vec<(String, Vec<usize>)>, p: &str, cin: usize, cout: usize) {
    out.push((format!("{p}.norm1.weight"), vec![cin]));
    out.push((format!("{p}.norm1.bias"), vec![cin]));
    conv(out, &format!("{p}.conv1"), cin, cout, 3);
    out.push((format!("{p}.norm2.weight"), vec![cout]));
    out.push((format!("{p}.norm2.bias"), vec![cout]));
    conv(out, &format!("{p}.conv2"), cout, cout, 3);
    if cin != cout {
        conv(out, &format!("{p}.conv_shortcut"), cin, cout, 1);
    }
}

fn conv(out: &mut Vec<(String, Vec<usize>)>, p: &str, cin: usize, cout: usize, k: usize) {
    out.push((format!("{p}.weight"), vec![cout, cin, k, k]));
    out.push((format!("{p}.bias"), vec![cout]));
}

fn mid(out: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize, cfg: &VaeConfig) {
    resnet(out, &format!("{p}.resnets.0"), c, c);
    if cfg.mid_block_add_attention {
        let a = format!("{p}.attentions.0");
        out.push((format!("{a}.group_norm.weight"), vec![c]));
        out.push((format!("{a}.group_norm.bias"), vec![c]));
        for proj in ["to_q", "to_k", "to_v", "to_out.0"] {
            out.push((format!("{a}.{proj}.weight"), vec![c, c]));
            out.push((format!("{a}.{proj}.bias"), vec![c]));
        }
    }
    resnet(out, &format!("{p}.resnets.1"), c, c);
}

/// Names (current diffusers layout, attention projections as linear `[C, C]`) and shapes of every tensor of the
/// AutoencoderKL described by `cfg`: encoder, `quant_conv`, `post_quant_conv`, decoder.
pub fn vae_param_shapes(cfg: &VaeConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let ch = &cfg.block_out_channels;
    let levels = ch.len();
    let (first, top) = (ch[0], ch[levels - 1]);
    let lc = cfg.latent_channels;
    // encoder
    conv(&mut out, "encoder.conv_in", cfg.in_channels, first, 3);
    let mut cin = first;
    for (i, &cout) in ch.iter().enumerate() {
        for j in 0..cfg.layers_per_block {
            let c = if j == 0 { cin } else { cout };
            resnet(
                &mut out,
                &format!("encoder.down_blocks.{i}.resnets.{j}"),
                c,
                cout,
            );
        }
        if i + 1 < levels {
            conv(
                &mut out,
                &format!("encoder.down_blocks.{i}.downsamplers.0.conv"),
                cout,
                cout,
                3,
            );
        }
        cin = cout;
    }
    mid(&mut out, "encoder.mid_block", top, cfg);
    out.push(("encoder.conv_norm_out.weight".into(), vec![top]));
    out.push(("encoder.conv_norm_out.bias".into(), vec![top]));
    conv(&mut out, "encoder.conv_out", top, 2 * lc, 3);
    if cfg.use_quant_conv {
        conv(&mut out, "quant_conv", 2 * lc, 2 * lc, 1);
    }
    // decoder
    if cfg.use_post_quant_conv {
        conv(&mut out, "post_quant_conv", lc, lc, 1);
    }
    conv(&mut out, "decoder.conv_in", lc, top, 3);
    mid(&mut out, "decoder.mid_block", top, cfg);
    let mut cin = top;
    for i in 0..levels {
        let cout = ch[levels - 1 - i];
        for j in 0..=cfg.layers_per_block {
            let c = if j == 0 { cin } else { cout };
            resnet(
                &mut out,
                &format!("decoder.up_blocks.{i}.resnets.{j}"),
                c,
                cout,
            );
        }
        if i + 1 < levels {
            conv(
                &mut out,
                &format!("decoder.up_blocks.{i}.upsamplers.0.conv"),
                cout,
                cout,
                3,
            );
        }
        cin = cout;
    }
    out.push(("decoder.conv_norm_out.weight".into(), vec![first]));
    out.push(("decoder.conv_norm_out.bias".into(), vec![first]));
    conv(&mut out, "decoder.conv_out", first, cfg.out_channels, 3);
    out
}

/// Random weights for `cfg` (f32, CPU), keyed by canonical name: convolutions and projections ~ N(0, 1/fan_in),
/// norm scales 1 + 0.1·N, biases 0.1·N — activations stay O(1) through the network.
pub fn random_vae_tensors(cfg: &VaeConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    cfg.validate()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = HashMap::new();
    for (name, shape) in vae_param_shapes(cfg) {
        let n: usize = shape.iter().product();
        let mut normal = || -> f32 { StandardNormal.sample(&mut rng) };
        let v: Vec<f32> = if name.ends_with(".bias") {
            (0..n).map(|_| 0.1 * normal()).collect()
        } else if shape.len() == 1 {
            (0..n).map(|_| 1.0 + 0.1 * normal()).collect()
        } else {
            let fan_in: usize = shape[1..].iter().product();
            let s = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| s * normal()).collect()
        };
        out.insert(name, Tensor::from_vec(v, shape, &Device::Cpu)?);
    }
    Ok(out)
}

/// Writes a random AutoencoderKL for `cfg` to `path` as safetensors in the diffusers layout (current attention
/// names, linear `[C, C]` projections), encoder and decoder — what `VaeDecoder::load` / `VaeEncoder::load`
/// read. Deterministic in `seed`. For tests (plugin end-to-end tests use tiny configs).
pub fn write_random_vae(path: &Path, cfg: &VaeConfig, seed: u64) -> Result<()> {
    let tensors = random_vae_tensors(cfg, seed)?;
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::serialize_to_file(
        sorted.iter().map(|(n, t)| (n.as_str(), *t)),
        Some(meta),
        path,
    )
    .map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        message: format!("writing the random VAE failed: {e}"),
    })?;
    Ok(())
}
