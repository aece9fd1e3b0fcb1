//! Decoding to IMAGE and writing PNG files (SaveImage, PreviewImage).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use odelt_contract::{
    ExecContext, InputSpec, Inputs, NodeError, NodeInfo, NodeOutput, NodeRegistry,
};
use odelt_nodes::pipeline::image::pixels_to_image;
use odelt_nodes::pipeline::png::{comfy_text_chunks, save_images};
use odelt_nodes::pipeline::{class, validate, VaeHandle};

use crate::convert::{array_of, issues, node_error, tensor_of};

pub fn register(r: &mut NodeRegistry) {
    r.node_with_validation(
        NodeInfo::new(class::DECODE)
            .display_name("ODEt Decode")
            .category("odelt/latent")
            .description(
                "Turns samples into an IMAGE ([B, H, W, 3] in 0..1): through the VAE for latent-space models, \
                 directly for pixel-space models (values in [-1, 1]; grey is repeated into RGB).",
            )
            .required("samples", InputSpec::new("LATENT").tooltip("Samples from the ODEt Sampler (raw NCHW latents)."))
            .optional(
                "vae",
                InputSpec::new("VAE").tooltip("The VAE for latent-space models (its latent channels must match the model's). Leave unconnected for pixel-space models."),
            )
            .output_with_tooltip("IMAGE", "IMAGE", "Images [B, H, W, 3], 0..1.")
            .device_bound(),
        |inputs, ctx| {
            let samples = array_of("samples", inputs.tensor("samples")?)?;
            let img = match inputs.get("vae") {
                Some(_) => {
                    let vae = inputs.handle_as::<Arc<VaeHandle>>("vae")?;
                    ctx.text("decoding through the VAE");
                    vae.decode(&samples, ctx.device.as_str()).map_err(node_error)?
                }
                None => pixels_to_image(&samples).map_err(|e| NodeError::invalid_input("samples", e))?,
            };
            Ok(NodeOutput::new().with(tensor_of(&img)?))
        },
        |m| issues(validate::decode(m)),
    );

    r.node_with_validation(
        NodeInfo::new(class::SAVE_IMAGE)
            .display_name("Save Image")
            .category("image")
            .description("Saves the images as PNG files in the output directory, named {prefix}_{counter:05}_.png, with the prompt (and the workflow, when given) embedded as text chunks.")
            .required("images", InputSpec::new("IMAGE").tooltip("The images to save."))
            .required(
                "filename_prefix",
                InputSpec::string().default("odelt")
                    .tooltip("File name prefix; may contain sub-folders (e.g. runs/fashion/img) inside the output directory, %width% and %height%, and %batch_num%."),
            )
            .hidden("prompt", "PROMPT")
            .hidden("extra_pnginfo", "EXTRA_PNGINFO")
            .output_node(),
        |inputs, ctx| save(inputs, ctx, Path::new(ctx.output_dir.as_str()), inputs.string("filename_prefix")?, "output"),
        |m| issues(validate::save_prefix(m)),
    );

    r.node(
        NodeInfo::new(class::PREVIEW_IMAGE)
            .display_name("Preview Image")
            .category("image")
            .description("Shows the images: PNG files in the temp directory (with the prompt embedded), listed as type \"temp\".")
            .required("images", InputSpec::new("IMAGE").tooltip("The images to preview."))
            .hidden("prompt", "PROMPT")
            .hidden("extra_pnginfo", "EXTRA_PNGINFO")
            .output_node(),
        |inputs, ctx| {
            let prefix = format!("odelt_temp_{}", random_suffix());
            save(inputs, ctx, Path::new(ctx.temp_dir.as_str()), &prefix, "temp")
        },
    );
}

/// Five lowercase letters, different for every call (ComfyUI's PreviewImage adds such a suffix).
fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ (COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15))
        ^ u64::from(std::process::id());
    (0..5)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

fn save(
    inputs: &Inputs,
    ctx: &ExecContext,
    dir: &Path,
    prefix: &str,
    kind: &str,
) -> Result<NodeOutput, NodeError> {
    let images = inputs.tensor("images")?;
    let vals = images
        .f32_values()
        .map_err(|e| NodeError::invalid_input("images", e.message))?;
    let texts = comfy_text_chunks(ctx.prompt(), ctx.extra_pnginfo());
    let saved = save_images(dir, prefix, &images.dims(), &vals, &texts).map_err(node_error)?;
    let list: Vec<(&str, &str, &str)> = saved
        .iter()
        .map(|s| (s.filename.as_str(), s.subfolder.as_str(), kind))
        .collect();
    Ok(NodeOutput::new().with_ui_images(list))
}
