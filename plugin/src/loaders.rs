//! Loader nodes: the checkpoint loader, the depth selector (a MODEL patch) and the VAE loader.

use odelt_contract::{ExecContext, Handle, InputSpec, Inputs, NodeInfo, NodeOutput, NodeRegistry};
use odelt_nodes::pipeline::models_dir::{self, models_dir_or_default};
use odelt_nodes::pipeline::{
    class, validate, LoadedCheckpoint, LoaderOptions, ModelHandle, Precision, VaeHandle,
};

use crate::convert::{input_error, issues, node_error};

const CATEGORY: &str = "odelt/loaders";

pub fn register(r: &mut NodeRegistry) {
    let models = models_dir::default_models_dir();
    let ckpts = models_dir::list_checkpoints(&models);
    let vaes = models_dir::list_vaes(&models);

    r.node_with_validation(
        NodeInfo::new(class::LOADER)
            .display_name("Load ODE_t(ODE_l) Checkpoint")
            .category(CATEGORY)
            .description(
                "Opens an ODE_t(ODE_l) DiT checkpoint (the project's .safetensors or an official .pkl) from the \
                 models directory. Weights are read lazily: a model sampled at a short length only loads the blocks \
                 that length needs.",
            )
            .required(
                "ckpt_name",
                InputSpec::combo(ckpts)
                    .tooltip("Checkpoint file under the models directory (or its checkpoints/ folder): the project's .safetensors or an official .pkl."),
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
                    .tooltip("Compute precision of the DiT blocks: fp32 (exact), bf16 or fp16 (faster and smaller on GPUs)."),
            )
            .output_with_tooltip("MODEL", "MODEL", "The model at its full depth; connect an ODE_l Depth Selector to sample at another length."),
        |inputs: &Inputs, ctx: &ExecContext| {
            let dir = models_dir_or_default(ctx.models_dir.as_str());
            let opts = LoaderOptions {
                ckpt_name: inputs.string("ckpt_name")?.to_string(),
                weights: inputs
                    .string("weights")?
                    .parse()
                    .map_err(|e| input_error("weights", e))?,
                overrides: LoaderOptions::overrides_from_widgets(
                    inputs.string("preset")?,
                    inputs.int("num_heads")?,
                    inputs.int("depth_group")?,
                    inputs.int("depth_min")?,
                    inputs.int("input_size")?,
                    inputs.float("latent_scale")?,
                ),
                precision: inputs
                    .string("precision")?
                    .parse()
                    .map_err(|e| input_error("precision", e))?,
            };
            ctx.text(&format!("opening {}", opts.ckpt_name));
            let ck = LoadedCheckpoint::open(&dir, &opts).map_err(node_error)?;
            let handle = ModelHandle::new(ck, opts.precision);
            Ok(NodeOutput::new().with(Handle::new("MODEL", handle)))
        },
        |m| issues(validate::checkpoint_loader(m)),
    );

    r.node_with_validation(
        NodeInfo::new(class::DEPTH)
            .display_name("ODE_l Depth Selector")
            .category("odelt/model_patches")
            .description(
                "Sets the active length l (number of DiT blocks) the model samples with. Returns a new MODEL over \
                 the same weights; nothing is copied. Trained lengths: depth_min, depth_min + depth_group, ..., depth.",
            )
            .required("model", InputSpec::new("MODEL").tooltip("The model to patch."))
            .required(
                "active_blocks",
                InputSpec::int().default(0).min(0).max(4096).step(1)
                    .tooltip("Active length l: 0 = the model's full depth; otherwise one of depth_min + k·depth_group up to the depth (e.g. 4, 8, 12 for DiT-B; 12, 20, 28 for DiT-XL). Checked against the linked checkpoint before the run."),
            )
            .output_with_tooltip("MODEL", "MODEL", "The same model at the chosen length."),
        |inputs, _ctx| {
            let m = inputs.handle_as::<ModelHandle>("model")?;
            let l = inputs.int("active_blocks")?;
            let l = if l <= 0 { m.config().depth } else { l as usize };
            let patched = m.with_length(l).map_err(|e| input_error("active_blocks", e))?;
            Ok(NodeOutput::new().with(Handle::new("MODEL", patched)))
        },
        |m| issues(validate::depth_selector(m)),
    );

    r.node_with_validation(
        NodeInfo::new(class::VAE_LOADER)
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
            .output_with_tooltip("VAE", "VAE", "The VAE, for ODEt Decode."),
        |inputs, ctx| {
            let dir = models_dir_or_default(ctx.models_dir.as_str());
            let vae = VaeHandle::open(&dir, inputs.string("vae_name")?)
                .map_err(|e| input_error("vae_name", e))?;
            Ok(NodeOutput::new().with(Handle::new("VAE", vae)))
        },
        |m| issues(validate::vae_loader(m)),
    );
}
