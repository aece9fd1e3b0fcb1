//! `VAELoader`: opens a KL autoencoder from the models directory → VAE.

use std::path::PathBuf;

use odelt_contract::{
    ExecContext, Handle, HostContext, InputSpec, Inputs, Node, NodeError, NodeInfo, NodeOutput,
    Validation, ValidationIssue,
};
use odelt_nodes::pipeline::models_dir::{list_vaes_with, locate_vae, VAE_KIND};
use odelt_nodes::pipeline::vae::vae_latent_channels;
use odelt_nodes::pipeline::{class, VaeHandle};

use crate::convert::{dir_or, input_error, issue};
use crate::types::VAE;

/// The VAE loader node.
pub struct VaeLoader;

/// The folder that holds VAE `name` (the models directory, else the first extra VAE folder that has it) and the
/// file.
pub fn locate(host: &HostContext<'_>, name: &str) -> odelt_nodes::Result<(PathBuf, PathBuf)> {
    locate_vae(
        &dir_or(host.models_dir, "models"),
        &host.extra_model_dirs(VAE_KIND),
        name,
    )
}

/// The VAE file's name under the models directory.
pub fn vae_name(i: &Inputs<'_>) -> Result<String, NodeError> {
    i.string("vae_name").map(str::to_string)
}

impl Node for VaeLoader {
    const CLASS: &'static str = class::VAE_LOADER;
    const VALIDATES: bool = true;

    fn describe(host: &HostContext<'_>) -> NodeInfo {
        let vaes = list_vaes_with(
            &dir_or(host.models_dir, "models"),
            &host.extra_model_dirs(VAE_KIND),
        );
        NodeInfo::new(Self::CLASS)
            .display_name("Load VAE")
            .category("loaders")
            .description(
                "Opens a KL autoencoder (the SD VAE ft-MSE, diffusers or single-file safetensors layout) from the \
                 models directory or its vae/ folder. A sidecar <name>.json (diffusers config.json keys) describes \
                 other shapes. The decoder is built on first use.",
            )
            .required(
                "vae_name",
                InputSpec::combo(vaes)
                    .tooltip("VAE .safetensors file under the models directory or its vae/ folder (e.g. the sd-vae-ft-mse diffusion_pytorch_model.safetensors)."),
            )
            .output_with_tooltip(VAE, "VAE", "The VAE, for ODEt Decode.")
    }

    fn run(inputs: &Inputs<'_>, ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let name = vae_name(inputs)?;
        let (root, _) = locate(&ctx.host(), &name).map_err(|e| input_error("vae_name", e))?;
        let vae = VaeHandle::open(&root, &name).map_err(|e| input_error("vae_name", e))?;
        Ok(NodeOutput::new().with(Handle::new(VAE, vae)))
    }

    /// The name must resolve inside the models directory to a readable VAE file.
    fn validate(v: &Validation<'_>) -> Vec<ValidationIssue> {
        let Ok(name) = vae_name(&v.literals()) else {
            return vec![];
        };
        match locate(v.host, &name).and_then(|(_, p)| vae_latent_channels(&p)) {
            Ok(_) => vec![],
            Err(e) => vec![issue("vae_name", e)],
        }
    }
}
