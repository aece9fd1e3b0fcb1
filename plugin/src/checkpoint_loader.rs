//! `ODEtODElCheckpointLoader`: opens a checkpoint from the models directory → MODEL.

use std::path::PathBuf;

use odelt_contract::{
    ExecContext, Handle, HostContext, InputSpec, Inputs, Node, NodeError, NodeInfo, NodeOutput,
    Validation, ValidationIssue,
};
use odelt_nodes::pipeline::model::inspect_config;
use odelt_nodes::pipeline::models_dir::{
    list_checkpoints_with, locate_checkpoint, CHECKPOINTS_KIND,
};
use odelt_nodes::pipeline::{class, LoadedCheckpoint, LoaderOptions, ModelHandle, Precision};

use crate::convert::{dir_or, input_error, issue, node_error};
use crate::types::MODEL;

/// The checkpoint loader node.
pub struct CheckpointLoader;

/// The folder that holds checkpoint `name`: the host's models directory, else the first of its extra checkpoint
/// folders that has it (open the checkpoint with it as the models directory).
pub fn checkpoint_root(host: &HostContext<'_>, name: &str) -> odelt_nodes::Result<PathBuf> {
    let extra = host.extra_model_dirs(CHECKPOINTS_KIND);
    locate_checkpoint(&dir_or(host.models_dir, "models"), &extra, name).map(|(root, _)| root)
}

/// The loader's inputs, parsed once for validation and execution (`0` widgets mean "from the checkpoint or
/// preset").
pub fn options(i: &Inputs<'_>) -> Result<LoaderOptions, NodeError> {
    Ok(LoaderOptions {
        ckpt_name: i.string("ckpt_name")?.to_string(),
        weights: i
            .string("weights")?
            .parse()
            .map_err(|e| input_error("weights", e))?,
        overrides: LoaderOptions::overrides_from_widgets(
            i.string("preset")?,
            i.int("num_heads")?,
            i.int("depth_group")?,
            i.int("depth_min")?,
            i.int("input_size")?,
            i.float("latent_scale")?,
        ),
        precision: i
            .string("precision")?
            .parse()
            .map_err(|e| input_error("precision", e))?,
    })
}

impl Node for CheckpointLoader {
    const CLASS: &'static str = class::LOADER;
    const VALIDATES: bool = true;

    fn describe(host: &HostContext<'_>) -> NodeInfo {
        let ckpts = list_checkpoints_with(
            &dir_or(host.models_dir, "models"),
            &host.extra_model_dirs(CHECKPOINTS_KIND),
        );
        NodeInfo::new(Self::CLASS)
            .display_name("Load ODE_t(ODE_l) Checkpoint")
            .category("odelt/loaders")
            .description(
                "Opens an ODE_t(ODE_l) DiT checkpoint (the project's .safetensors or an official .pkl) from the \
                 models directory. Weights are read lazily: a model sampled at a short length only loads the blocks \
                 that length needs.",
            )
            .required(
                "ckpt_name",
                InputSpec::combo(ckpts)
                    .tooltip("Checkpoint file under the models directory (or its checkpoints/ folder, or an extra checkpoint folder of extra_model_paths.yaml): the project's .safetensors or an official .pkl. Symbolic links in these folders are followed."),
            )
            .required(
                "weights",
                InputSpec::combo(["params", "params_ema"])
                    .default("params")
                    .tooltip("Parameter tree of an official .pkl to use: params (what the official evaluation samples with) or params_ema. Ignored for .safetensors files."),
            )
            .required(
                "preset",
                InputSpec::combo(["auto", "dit-b", "dit-xl", "custom"])
                    .default("auto")
                    .tooltip("Architecture preset for what the file does not record (heads, length grid, input size, latent scale). auto: the configuration stored in a .safetensors file, else DiT-B/DiT-XL recognised by width and depth; custom: give the values below."),
            )
            .required(
                "num_heads",
                InputSpec::int().default(0).min(0).max(1024).step(1)
                    .tooltip("Attention heads. 0 = from the checkpoint or preset."),
            )
            .required(
                "depth_group",
                InputSpec::int().default(0).min(0).max(1024).step(1)
                    .tooltip("Blocks per Euler step of the length ODE (4 for DiT-B, 8 for DiT-XL). 0 = from the checkpoint or preset."),
            )
            .required(
                "depth_min",
                InputSpec::int().default(0).min(0).max(1024).step(1)
                    .tooltip("Shortest trained length (4 for DiT-B, 12 for DiT-XL). 0 = from the checkpoint or preset."),
            )
            .required(
                "input_size",
                InputSpec::int().default(0).min(0).max(4096).step(1)
                    .tooltip("Side of the model's square input: latent cells for latent-space models (32 for the official 256 px models), pixels for pixel-space models. 0 = from the checkpoint or preset."),
            )
            .required(
                "latent_scale",
                InputSpec::float().default(0.0).min(0.0).max(100.0).step(0.00001)
                    .tooltip("Factor between raw VAE latents (LATENT) and the model's space. 0 = auto: stored in the checkpoint, else 0.18215 for SD-VAE latent models (4 channels) and 1 for pixel-space models."),
            )
            .required(
                "precision",
                InputSpec::combo(Precision::CHOICES)
                    .default("fp32")
                    .tooltip("Compute precision of the DiT blocks: fp32 (exact); bf16 (bf16 weights and matmuls with f32 accumulation: half the memory, and faster on GPUs and on CPUs whose AVX512-BF16 dot products are fast; on other AVX-512 CPUs about f32's speed); fp16 (GPUs)."),
            )
            .output_with_tooltip(MODEL, "MODEL", "The model at its full depth; connect an ODE_l Depth Selector to sample at another length.")
    }

    fn run(inputs: &Inputs<'_>, ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let opts = options(inputs)?;
        ctx.text(&format!("opening {}", opts.ckpt_name));
        let root = checkpoint_root(&ctx.host(), &opts.ckpt_name).map_err(node_error)?;
        let ck = LoadedCheckpoint::open(&root, &opts).map_err(node_error)?;
        let handle = ModelHandle::new(ck, opts.precision);
        Ok(NodeOutput::new().with(Handle::new(MODEL, handle)))
    }

    /// The name must resolve inside the models directory, and the checkpoint to a configuration with the given
    /// preset and overrides.
    fn validate(v: &Validation<'_>) -> Vec<ValidationIssue> {
        let lits = v.literals();
        let Ok(name) = lits.string("ckpt_name") else {
            return vec![];
        };
        let models = match checkpoint_root(v.host, name) {
            Ok(root) => root,
            Err(e) => return vec![issue("ckpt_name", e)],
        };
        let Ok(opts) = options(&lits) else {
            return vec![];
        };
        match inspect_config(&models, &opts) {
            Ok(_) => vec![],
            Err(e) => vec![issue("ckpt_name", e)],
        }
    }
}
