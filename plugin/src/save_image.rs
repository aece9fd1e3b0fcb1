//! `SaveImage` and `PreviewImage`: IMAGE → PNG files (ComfyUI names, `prompt`/`workflow` text chunks).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use odelt_contract::{
    types::IMAGE, ExecContext, HostContext, InputSpec, Inputs, Node, NodeError, NodeInfo,
    NodeOutput, Validation, ValidationIssue,
};
use odelt_nodes::pipeline::class;
use odelt_nodes::pipeline::png::{comfy_text_chunks, save_images, save_target_shape};

use crate::convert::{issue, node_error};

/// The node that saves into the output directory.
pub struct SaveImage;

/// The node that saves previews into the temp directory.
pub struct PreviewImage;

/// The file name prefix (may hold sub-folders inside the output directory).
pub fn filename_prefix(i: &Inputs<'_>) -> Result<String, NodeError> {
    i.string("filename_prefix").map(str::to_string)
}

/// A prefix must stay inside the output directory (shared by SaveImage and SaveLatent).
pub fn validate_prefix(v: &Validation<'_>) -> Vec<ValidationIssue> {
    match filename_prefix(&v.literals()) {
        Ok(p) => match save_target_shape(&p) {
            Ok(_) => vec![],
            Err(e) => vec![issue("filename_prefix", e)],
        },
        Err(_) => vec![],
    }
}

impl Node for SaveImage {
    const CLASS: &'static str = class::SAVE_IMAGE;
    const VALIDATES: bool = true;

    fn describe(_host: &HostContext<'_>) -> NodeInfo {
        NodeInfo::new(Self::CLASS)
            .display_name("Save Image")
            .category("image")
            .description("Saves the images as PNG files in the output directory, named {prefix}_{counter:05}_.png, with the prompt (and the workflow, when given) embedded as text chunks.")
            .required("images", InputSpec::new(IMAGE).tooltip("The images to save."))
            .required(
                "filename_prefix",
                InputSpec::string().default("odelt")
                    .tooltip("File name prefix; may contain sub-folders (e.g. runs/fashion/img) inside the output directory, %width% and %height%, and %batch_num%."),
            )
            .hidden("prompt", "PROMPT")
            .hidden("extra_pnginfo", "EXTRA_PNGINFO")
            .output_node()
    }

    fn run(inputs: &Inputs<'_>, ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let prefix = filename_prefix(inputs)?;
        save(
            inputs,
            ctx,
            Path::new(ctx.output_dir.as_str()),
            &prefix,
            "output",
        )
    }

    fn validate(v: &Validation<'_>) -> Vec<ValidationIssue> {
        validate_prefix(v)
    }
}

impl Node for PreviewImage {
    const CLASS: &'static str = class::PREVIEW_IMAGE;

    fn describe(_host: &HostContext<'_>) -> NodeInfo {
        NodeInfo::new(Self::CLASS)
            .display_name("Preview Image")
            .category("image")
            .description("Shows the images: PNG files in the temp directory (with the prompt embedded), listed as type \"temp\".")
            .required("images", InputSpec::new(IMAGE).tooltip("The images to preview."))
            .hidden("prompt", "PROMPT")
            .hidden("extra_pnginfo", "EXTRA_PNGINFO")
            .output_node()
    }

    fn run(inputs: &Inputs<'_>, ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let prefix = format!("odelt_temp_{}", random_suffix());
        save(
            inputs,
            ctx,
            Path::new(ctx.temp_dir.as_str()),
            &prefix,
            "temp",
        )
    }
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
