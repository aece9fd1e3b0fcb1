//! `ODEtDecode`: LATENT (+ VAE) → IMAGE.

use std::sync::Arc;

use odelt_contract::{
    types::{IMAGE, LATENT},
    ExecContext, HostContext, InputSpec, Inputs, Node, NodeError, NodeInfo, NodeOutput, Validation,
    ValidationIssue,
};
use odelt_nodes::pipeline::image::pixels_to_image;
use odelt_nodes::pipeline::{class, VaeHandle};

use crate::convert::{array_of, issue, node_error, tensor_of};
use crate::types::VAE;
use crate::upstream;

/// The decoder node.
pub struct Decode;

impl Node for Decode {
    const CLASS: &'static str = class::DECODE;
    const VALIDATES: bool = true;

    fn describe(_host: &HostContext<'_>) -> NodeInfo {
        NodeInfo::new(Self::CLASS)
            .display_name("ODEt Decode")
            .category("odelt/latent")
            .description(
                "Turns samples into an IMAGE ([B, H, W, 3] in 0..1): through the VAE for latent-space models, \
                 directly for pixel-space models (values in [-1, 1]; grey is repeated into RGB).",
            )
            .required("samples", InputSpec::new(LATENT).tooltip("Samples from the ODEt Sampler (raw NCHW latents)."))
            .optional(
                "vae",
                InputSpec::new(VAE).tooltip("The VAE for latent-space models (its latent channels must match the model's). Leave unconnected for pixel-space models."),
            )
            .output_with_tooltip(IMAGE, "IMAGE", "Images [B, H, W, 3], 0..1.")
            .device_bound()
    }

    fn run(inputs: &Inputs<'_>, ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let samples = array_of("samples", inputs.tensor("samples")?)?;
        let img = match inputs.get("vae") {
            Some(_) => {
                let vae = inputs.handle_as::<Arc<VaeHandle>>("vae")?;
                ctx.text("decoding through the VAE");
                vae.decode(&samples, ctx.device.as_str())
                    .map_err(node_error)?
            }
            None => {
                pixels_to_image(&samples).map_err(|e| NodeError::invalid_input("samples", e))?
            }
        };
        Ok(NodeOutput::new().with(tensor_of(&img)?))
    }

    /// The VAE's latent channels must match the samples' (the model's); latent-space samples need a VAE.
    fn validate(v: &Validation<'_>) -> Vec<ValidationIssue> {
        let Some(li) = v.link("samples").and_then(|l| upstream::latent(v.host, l)) else {
            return vec![];
        };
        if v.contains_key("vae") {
            return match v
                .link("vae")
                .and_then(|l| upstream::vae_channels(v.host, l))
            {
                Some((c, name)) if c != li.channels => vec![issue(
                    "vae",
                    format!(
                        "VAE {name:?} takes {c} latent channels but the samples have {} ({})",
                        li.channels, li.source
                    ),
                )],
                _ => vec![],
            };
        }
        if li.channels != 1 && li.channels != 3 {
            return vec![issue(
                "vae",
                format!(
                    "the samples have {} channels ({}): a latent-space model needs a VAE to decode",
                    li.channels, li.source
                ),
            )];
        }
        vec![]
    }
}
