//! What validation can know of a linked input by following it upstream: a MODEL link back through depth selectors
//! to its loader (the checkpoint's configuration, read cheaply, and the active length), a LATENT link to the model
//! that makes it or the `.latent` file it comes from, a VAE link to its file. Each upstream node's literals are
//! read with that node's own input parser, so the interface is parsed one way everywhere.
//!
//! Where something cannot be known before running (a link the host did not describe, an upstream widget that is
//! itself linked, a large pickle never loaded), the answer is `None` and the check is skipped: the run-time checks
//! catch the rest.

use odelt_contract::{linked_input, literal_values, HostContext, Inputs, LinkedInput};
use odelt_nodes::config::DitConfig;
use odelt_nodes::pipeline::class;
use odelt_nodes::pipeline::latent_file::latent_shape;
use odelt_nodes::pipeline::model::inspect_config;
use odelt_nodes::pipeline::vae::vae_latent_channels;

use crate::{checkpoint_loader, depth_selector, latent_files, vae_loader};

/// How many nodes deep links are followed.
const MAX_DEPTH: usize = 16;

/// A MODEL link's configuration and active length.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub config: DitConfig,
    pub length: usize,
}

/// A LATENT link's channels and (when known) spatial size, and where that knowledge comes from (for messages).
#[derive(Debug, Clone, PartialEq)]
pub struct LatentInfo {
    pub channels: usize,
    pub size: Option<(usize, usize)>,
    pub source: String,
}

/// Runs `parse` (a node's input parser) over the literal inputs of an upstream node.
fn parse_upstream<T>(
    link: &LinkedInput<'_>,
    parse: impl FnOnce(&Inputs<'_>) -> Result<T, odelt_contract::NodeError>,
) -> Option<T> {
    let values = literal_values(link.inputs?);
    parse(&Inputs::new(&values)).ok()
}

/// Follows a MODEL link back to the loader.
pub fn model(host: &HostContext<'_>, link: LinkedInput<'_>) -> Option<ModelInfo> {
    model_at(host, link, MAX_DEPTH)
}

fn model_at(host: &HostContext<'_>, link: LinkedInput<'_>, depth: usize) -> Option<ModelInfo> {
    if depth == 0 {
        return None;
    }
    match link.class_type {
        class::LOADER => {
            let opts = parse_upstream(&link, checkpoint_loader::options)?;
            let root = checkpoint_loader::checkpoint_root(host, &opts.ckpt_name).ok()?;
            let config = inspect_config(&root, &opts).ok()??;
            Some(ModelInfo {
                length: config.depth,
                config,
            })
        }
        class::DEPTH => {
            let upstream = linked_input(link.inputs?, "model")?;
            let mut mi = model_at(host, upstream, depth - 1)?;
            let l = parse_upstream(&link, depth_selector::active_blocks)?;
            mi.length = depth_selector::length(l, mi.config.depth)?;
            Some(mi)
        }
        _ => None,
    }
}

/// Follows a LATENT link to a model (sampler, empty latent) or a `.latent` file.
pub fn latent(host: &HostContext<'_>, link: LinkedInput<'_>) -> Option<LatentInfo> {
    match link.class_type {
        class::SAMPLER | class::EMPTY_LATENT => {
            let mi = model_at(host, linked_input(link.inputs?, "model")?, MAX_DEPTH - 1)?;
            let c = mi.config.in_channels;
            Some(LatentInfo {
                channels: c,
                size: Some((mi.config.input_size, mi.config.input_size)),
                source: format!("the model's {c} channels"),
            })
        }
        class::ENCODE => {
            // The encoder makes latents for its model: channels known, size follows the picture.
            let mi = model_at(host, linked_input(link.inputs?, "model")?, MAX_DEPTH - 1)?;
            let c = mi.config.in_channels;
            Some(LatentInfo {
                channels: c,
                size: None,
                source: format!("ODEt Encode's {c} channels"),
            })
        }
        // The mask rides along; the latent is the one it was given (links nest at most as deep as the host
        // describes them, so this ends).
        class::SET_NOISE_MASK => latent(host, linked_input(link.inputs?, "samples")?),
        class::LOAD_LATENT => {
            let name = parse_upstream(&link, latent_files::latent_name)?;
            let path = latent_files::resolve(host, &name).ok()?;
            let s = latent_shape(&path).ok()?;
            (s.len() == 4).then(|| LatentInfo {
                channels: s[1],
                size: Some((s[2], s[3])),
                source: format!("the .latent file's {} channels", s[1]),
            })
        }
        _ => None,
    }
}

/// Follows a VAE link to its loader: the VAE's latent channels and its name.
pub fn vae_channels(host: &HostContext<'_>, link: LinkedInput<'_>) -> Option<(usize, String)> {
    if link.class_type != class::VAE_LOADER {
        return None;
    }
    let name = parse_upstream(&link, vae_loader::vae_name)?;
    let (_, path) = vae_loader::locate(host, &name).ok()?;
    Some((vae_latent_channels(&path).ok()??, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use odelt_contract::abi_stable::std_types::RStr;
    use serde_json::{json, Value};

    fn models_dir_with(tag: &str, cfg: &DitConfig) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("odelt-upstream-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let params = odelt_nodes::params::random_params(cfg, 0).unwrap();
        odelt_nodes::checkpoint::safetensors_format::save(
            &d.join("m.safetensors"),
            cfg,
            &params,
            &[],
        )
        .unwrap();
        d
    }

    fn loader() -> Value {
        json!({"$link": ["1", 0], "class_type": class::LOADER, "inputs": {
            "ckpt_name": "m.safetensors", "weights": "params", "preset": "auto", "num_heads": 0,
            "depth_group": 0, "depth_min": 0, "input_size": 0, "latent_scale": 0.0, "precision": "fp32"}})
    }

    #[test]
    fn latents_are_followed_through_the_noise_mask_and_the_encoder() {
        let cfg = DitConfig {
            input_size: 8,
            in_channels: 3,
            patch_size: 2,
            hidden_size: 16,
            depth: 4,
            num_heads: 2,
            mlp_hidden: 32,
            num_classes: 3,
            depth_group: 2,
            depth_min: 2,
            length_embedding: true,
            latent_scale: 1.0,
        };
        let dir = models_dir_with("mask", &cfg);
        let d = dir.display().to_string();
        let host = HostContext {
            models_dir: RStr::from_str(&d),
            ..HostContext::detached()
        };
        let empty = json!({"$link": ["3", 0], "class_type": class::EMPTY_LATENT,
                           "inputs": {"model": loader(), "batch_size": 2}});
        let masked = json!({"$link": ["5", 0], "class_type": class::SET_NOISE_MASK,
                            "inputs": {"samples": empty, "mask": {"$link": ["9", 1]}}});
        let li = latent(&host, LinkedInput::from_json(&masked).unwrap()).unwrap();
        assert_eq!((li.channels, li.size), (3, Some((8, 8))));
        let encoded = json!({"$link": ["4", 0], "class_type": class::ENCODE,
                             "inputs": {"pixels": {"$link": ["2", 0]}, "model": loader(), "mode": "mean", "seed": 0}});
        let li = latent(&host, LinkedInput::from_json(&encoded).unwrap()).unwrap();
        assert_eq!((li.channels, li.size), (3, None));
        // A mask over a link the host did not describe: unknown, so the check is skipped.
        let opaque = json!({"$link": ["5", 0], "class_type": class::SET_NOISE_MASK,
                            "inputs": {"samples": {"$link": ["3", 0]}}});
        assert!(latent(&host, LinkedInput::from_json(&opaque).unwrap()).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
