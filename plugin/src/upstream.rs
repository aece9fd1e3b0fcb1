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
