//! `ODEtEncode`: IMAGE → LATENT for the model at hand (ComfyUI's VAEEncode, also for pixel-space models).
//!
//! Pixel-space models take the image directly (channels converted to the model's, values to [-1, 1]); latent
//! models go through the connected VAE's encoder (the posterior's mean, or a sample from `seed`). The LATENT is
//! raw, as everywhere ([`odelt_nodes::pipeline::encode`]). The image must have the model's size: ImageScale with
//! the model connected makes it so.

use std::sync::Arc;

use odelt_contract::{
    types::{IMAGE, LATENT},
    ExecContext, HostContext, InputSpec, Inputs, Node, NodeError, NodeInfo, NodeOutput, Validation,
    ValidationIssue,
};
use odelt_nodes::pipeline::encode::{
    encode_pixels, encode_with_vae, is_pixel_space, EncodeMode, ENCODE_MODES,
};
use odelt_nodes::pipeline::{class, ModelHandle, VaeHandle};

use crate::convert::{array_of, input_error, issue, node_error, tensor_of};
use crate::types::{MODEL, VAE};
use crate::upstream;

/// The encoder node.
pub struct Encode;

/// The posterior mode: `mean`, or `sample` with the seed.
pub fn mode(i: &Inputs<'_>) -> Result<EncodeMode, NodeError> {
    match i.string("mode")? {
        "mean" => Ok(EncodeMode::Mean),
        "sample" => Ok(EncodeMode::Sample(i.u64("seed")?)),
        o => Err(NodeError::invalid_input(
            "mode",
            format!("unknown mode {o:?} (one of {})", ENCODE_MODES.join(", ")),
        )),
    }
}

impl Node for Encode {
    const CLASS: &'static str = class::ENCODE;
    const VALIDATES: bool = true;

    fn describe(_host: &HostContext<'_>) -> NodeInfo {
        NodeInfo::new(Self::CLASS)
            .display_name("ODEt Encode")
            .category("odelt/latent")
            .description(
                "Turns an IMAGE into the model's LATENT (raw NCHW), the start of img2img and inpainting: pixel-space \
                 models take the picture directly (grey/RGB converted to the model's channels, 0..1 to [-1, 1]); \
                 latent models go through the VAE's encoder. The image must have the model's size (ImageScale).",
            )
            .required("pixels", InputSpec::new(IMAGE).tooltip("The picture [B, H, W, C] in 0..1, at the model's size."))
            .required("model", InputSpec::new(MODEL).tooltip("The model the latent is for (its channels and size)."))
            .required(
                "mode",
                InputSpec::combo(ENCODE_MODES).default("mean")
                    .tooltip("VAE only: mean = the posterior's mean (ComfyUI's VAEEncode); sample = mean + std·noise from seed."),
            )
            .required(
                "seed",
                InputSpec::int().default(0).min(0).max(u64::MAX).step(1)
                    .tooltip("The posterior noise's seed for mode = sample (unused otherwise)."),
            )
            .optional("vae", InputSpec::new(VAE).tooltip("The VAE of a latent-space model. Leave unconnected for pixel-space models."))
            .output_with_tooltip(LATENT, "LATENT", "Raw NCHW latents, e.g. for the ODEt Sampler at denoise < 1.")
            .device_bound()
    }

    fn run(inputs: &Inputs<'_>, ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let img = array_of("pixels", inputs.tensor("pixels")?)?;
        let m = inputs.handle_as::<ModelHandle>("model")?;
        let mode = mode(inputs)?;
        let z = match inputs.get("vae") {
            Some(_) => {
                let vae = inputs.handle_as::<Arc<VaeHandle>>("vae")?;
                ctx.text("encoding through the VAE");
                encode_with_vae(&img, vae, Some(m.config()), mode, ctx.device.as_str())
                    .map_err(node_error)?
            }
            None => encode_pixels(&img, m.config()).map_err(|e| input_error("pixels", e))?,
        };
        Ok(NodeOutput::new().with(tensor_of(&z)?))
    }

    /// A latent-space model needs a VAE, and the VAE's latent channels must be the model's.
    fn validate(v: &Validation<'_>) -> Vec<ValidationIssue> {
        let Some(mi) = v.link("model").and_then(|l| upstream::model(v.host, l)) else {
            return vec![];
        };
        let c = mi.config.in_channels;
        if v.contains_key("vae") {
            return match v
                .link("vae")
                .and_then(|l| upstream::vae_channels(v.host, l))
            {
                Some((vc, name)) if vc != c => vec![issue(
                    "vae",
                    format!("VAE {name:?} makes {vc} latent channels but the model takes {c}"),
                )],
                _ => vec![],
            };
        }
        if !is_pixel_space(&mi.config) {
            return vec![issue(
                "vae",
                format!("the model works in a {c}-channel latent space: connect a VAE to encode images for it"),
            )];
        }
        vec![]
    }
}
