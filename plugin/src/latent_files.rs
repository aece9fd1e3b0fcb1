//! ComfyUI `.latent` files: `LoadLatent` and `SaveLatent`.

use std::path::Path;

use odelt_contract::{
    types::LATENT, ExecContext, HostContext, InputSpec, Inputs, Node, NodeError, NodeInfo,
    NodeOutput, Validation, ValidationIssue,
};
use odelt_nodes::pipeline::class;
use odelt_nodes::pipeline::latent_file::{
    latent_shape, read_latent, resolve_latent_file, write_latent, LatentDirs,
};
use odelt_nodes::pipeline::png::{comfy_text_chunks, save_target};

use crate::convert::{array_of, dir_or, input_error, issue, node_error, tensor_of};
use crate::save_image::{filename_prefix, validate_prefix};

/// The node that reads a `.latent` file.
pub struct LoadLatent;

/// The node that writes a `.latent` file.
pub struct SaveLatent;

/// The `.latent` file LoadLatent reads.
pub fn latent_name(i: &Inputs<'_>) -> Result<String, NodeError> {
    i.string("latent").map(str::to_string)
}

/// Where LoadLatent reads `name`: under the host's input directory, or its output/temp directory for ComfyUI's
/// annotated names (`name [output]`); never outside them.
pub fn resolve(host: &HostContext<'_>, name: &str) -> odelt_nodes::Result<std::path::PathBuf> {
    let (input, output, temp) = (
        dir_or(host.input_dir, "input"),
        dir_or(host.output_dir, "output"),
        dir_or(host.temp_dir, "temp"),
    );
    resolve_latent_file(
        &LatentDirs {
            input: &input,
            output: &output,
            temp: &temp,
        },
        name,
    )
}

impl Node for LoadLatent {
    const CLASS: &'static str = class::LOAD_LATENT;
    const VALIDATES: bool = true;

    fn describe(_host: &HostContext<'_>) -> NodeInfo {
        NodeInfo::new(Self::CLASS)
            .display_name("Load Latent")
            .category("latent")
            .description("Reads a ComfyUI .latent file (safetensors with latent_tensor, NCHW) as a LATENT.")
            .required(
                "latent",
                InputSpec::string().default("")
                    .tooltip("The .latent file, relative to the input directory (e.g. x.latent or sub/x.latent); ComfyUI's annotation reads from the output directory, where Save Latent writes: latents/odelt_00001_.latent [output]. Absolute paths and .. are refused."),
            )
            .output_with_tooltip(LATENT, "LATENT", "The stored latent (old-format files are rescaled as ComfyUI does).")
    }

    fn run(inputs: &Inputs<'_>, ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let path =
            resolve(&ctx.host(), &latent_name(inputs)?).map_err(|e| input_error("latent", e))?;
        let lat = read_latent(&path).map_err(|e| input_error("latent", e))?;
        Ok(NodeOutput::new().with(tensor_of(&lat)?))
    }

    /// The file must exist and be a `.latent` file.
    fn validate(v: &Validation<'_>) -> Vec<ValidationIssue> {
        let Ok(name) = latent_name(&v.literals()) else {
            return vec![];
        };
        match resolve(v.host, &name).and_then(|p| latent_shape(&p)) {
            Ok(_) => vec![],
            Err(e) => vec![issue("latent", e)],
        }
    }
}

impl Node for SaveLatent {
    const CLASS: &'static str = class::SAVE_LATENT;
    const VALIDATES: bool = true;

    fn describe(_host: &HostContext<'_>) -> NodeInfo {
        NodeInfo::new(Self::CLASS)
            .display_name("Save Latent")
            .category("latent")
            .description("Writes the LATENT as a ComfyUI .latent file ({prefix}_{counter:05}_.latent) in the output directory, with the prompt in its metadata.")
            .required("samples", InputSpec::new(LATENT).tooltip("The latent to save."))
            .required(
                "filename_prefix",
                InputSpec::string().default("latents/odelt")
                    .tooltip("File name prefix; may contain sub-folders inside the output directory."),
            )
            .hidden("prompt", "PROMPT")
            .hidden("extra_pnginfo", "EXTRA_PNGINFO")
            .output_node()
    }

    fn run(inputs: &Inputs<'_>, ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let lat = array_of("samples", inputs.tensor("samples")?)?;
        let prefix = filename_prefix(inputs)?;
        let target = save_target(Path::new(ctx.output_dir.as_str()), &prefix, 0, 0)
            .map_err(|e| input_error("filename_prefix", e))?;
        let name = target.file_name(target.counter, 0, "latent");
        let meta = comfy_text_chunks(ctx.prompt(), ctx.extra_pnginfo());
        write_latent(&target.folder.join(&name), &lat, &meta).map_err(node_error)?;
        Ok(NodeOutput::new().with_ui(serde_json::json!({
            "latents": [{"filename": name, "subfolder": target.subfolder, "type": "output"}]
        })))
    }

    fn validate(v: &Validation<'_>) -> Vec<ValidationIssue> {
        validate_prefix(v)
    }
}
