//! ComfyUI `.latent` files: LoadLatent and SaveLatent.

use std::path::Path;

use odelt_contract::{InputSpec, NodeInfo, NodeOutput, NodeRegistry};
use odelt_nodes::pipeline::class;
use odelt_nodes::pipeline::latent_file::{read_latent, write_latent};
use odelt_nodes::pipeline::png::{comfy_text_chunks, save_target};
use odelt_nodes::pipeline::validate::{self, resolve_latent_file};

use crate::convert::{array_of, input_error, issues, node_error, tensor_of};

pub fn register(r: &mut NodeRegistry) {
    r.node_with_validation(
        NodeInfo::new(class::LOAD_LATENT)
            .display_name("Load Latent")
            .category("latent")
            .description("Reads a ComfyUI .latent file (safetensors with latent_tensor, NCHW) as a LATENT.")
            .required(
                "latent",
                InputSpec::string().default("")
                    .tooltip("The .latent file: a path relative to the output directory (where Save Latent writes, e.g. latents/odelt_00001_.latent) or to $ODELT_INPUT_DIR, or an absolute path."),
            )
            .output_with_tooltip("LATENT", "LATENT", "The stored latent (old-format files are rescaled as ComfyUI does)."),
        |inputs, ctx| {
            let name = inputs.string("latent")?;
            let out = non_empty(ctx.output_dir.as_str());
            let path = resolve_latent_file(out.map(Path::new), name).map_err(|e| input_error("latent", e))?;
            let lat = read_latent(&path).map_err(|e| input_error("latent", e))?;
            Ok(NodeOutput::new().with(tensor_of(&lat)?))
        },
        |m| issues(validate::load_latent(m)),
    );

    r.node_with_validation(
        NodeInfo::new(class::SAVE_LATENT)
            .display_name("Save Latent")
            .category("latent")
            .description("Writes the LATENT as a ComfyUI .latent file ({prefix}_{counter:05}_.latent) in the output directory, with the prompt in its metadata.")
            .required("samples", InputSpec::new("LATENT").tooltip("The latent to save."))
            .required(
                "filename_prefix",
                InputSpec::string().default("latents/odelt")
                    .tooltip("File name prefix; may contain sub-folders inside the output directory."),
            )
            .hidden("prompt", "PROMPT")
            .hidden("extra_pnginfo", "EXTRA_PNGINFO")
            .output_node(),
        |inputs, ctx| {
            let lat = array_of("samples", inputs.tensor("samples")?)?;
            let prefix = inputs.string("filename_prefix")?;
            let target = save_target(Path::new(ctx.output_dir.as_str()), prefix, 0, 0)
                .map_err(|e| input_error("filename_prefix", e))?;
            let name = target.file_name(target.counter, 0, "latent");
            let meta = comfy_text_chunks(ctx.prompt(), ctx.extra_pnginfo());
            write_latent(&target.folder.join(&name), &lat, &meta).map_err(node_error)?;
            Ok(NodeOutput::new().with_ui(serde_json::json!({
                "latents": [{"filename": name, "subfolder": target.subfolder, "type": "output"}]
            })))
        },
        |m| issues(validate::save_prefix(m)),
    );
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}
