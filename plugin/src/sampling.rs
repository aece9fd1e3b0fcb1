//! Latent creation and the ODE_t sampler.

use odelt_contract::{InputSpec, NodeError, NodeInfo, NodeOutput, NodeRegistry, PreviewImage};
use odelt_nodes::pipeline::sampler::{empty_latent, Progress};
use odelt_nodes::pipeline::{class, run_sampler, validate, ModelHandle, SamplerSettings};
use odelt_nodes::solver::SOLVER_NAMES;

use crate::convert::{array_of, input_error, issues, node_error, tensor_of};

pub fn register(r: &mut NodeRegistry) {
    r.node(
        NodeInfo::new(class::EMPTY_LATENT)
            .display_name("ODEt Empty Latent")
            .category("odelt/latent")
            .description("A zero LATENT of the model's native size ([B, C, S, S]: 4x32x32 for the official 256 px models, 1x28x28 for the Fashion-MNIST pixel model).")
            .required("model", InputSpec::new("MODEL").tooltip("The model whose input size and channels the latent takes."))
            .required(
                "batch_size",
                InputSpec::int().default(1).min(1).max(4096).step(1)
                    .tooltip("Number of samples in the batch."),
            )
            .output_with_tooltip("LATENT", "LATENT", "Zeros, NCHW, in raw (VAE) latent space."),
        |inputs, _ctx| {
            let m = inputs.handle_as::<ModelHandle>("model")?;
            let b = inputs.int("batch_size")?;
            let b = usize::try_from(b).map_err(|_| NodeError::invalid_input("batch_size", "must be at least 1"))?;
            let lat = empty_latent(m.config(), b).map_err(|e| input_error("batch_size", e))?;
            Ok(NodeOutput::new().with(tensor_of(&lat)?))
        },
    );

    r.node_with_validation(
        NodeInfo::new(class::SAMPLER)
            .display_name("ODEt Sampler")
            .category("odelt/sampling")
            .description(
                "Integrates the flow ODE over time (ODE_t) from noise (t = 0) to data (t = 1) with the model at its \
                 active length. LATENT in and out are raw (VAE-space) NCHW latents; the model's latent scale is \
                 applied on the way in and out. Reports progress per velocity evaluation with a preview.",
            )
            .required("model", InputSpec::new("MODEL").tooltip("The model (set its length with ODE_l Depth Selector)."))
            .required(
                "latent_image",
                InputSpec::new("LATENT").tooltip("Gives the batch size and shape; its values are the img2img source when denoise < 1, or the starting point itself when add_noise is off."),
            )
            .required(
                "seed",
                InputSpec::int().default(0).min(0).max(u64::MAX).step(1)
                    .option("control_after_generate", true)
                    .tooltip("Noise seed. Every sample has its own stream, so sample i does not depend on the batch size, and the same seed gives the same noise at every length."),
            )
            .required(
                "steps",
                InputSpec::int().default(8).min(1).max(10000).step(1)
                    .tooltip("Steps of the Euler or Heun solver over [1 - denoise, 1] (Heun costs 2 evaluations per step). Ignored by dopri5."),
            )
            .required(
                "solver",
                InputSpec::combo(SOLVER_NAMES)
                    .default("euler")
                    .tooltip("euler: the official fixed-step sampler; heun: 2nd-order fixed step; dopri5: adaptive Dormand-Prince 5(4) as the official adaptive sampler (uses tolerance)."),
            )
            .required(
                "tolerance",
                InputSpec::float().default(0.001).min(0.0000001).max(1.0).step(0.0001)
                    .tooltip("Relative and absolute tolerance of dopri5 (smaller = more evaluations, more accurate). Ignored by euler and heun."),
            )
            .required(
                "cfg",
                InputSpec::float().default(1.0).min(0.0).max(100.0).step(0.1).option("round", 0.01)
                    .tooltip("Classifier-free guidance w as in the paper: 0 = unconditional (labels ignored), 1 = conditional (one pass), other values = v_null + w·(v_label − v_null) (two passes)."),
            )
            .required(
                "class_label",
                InputSpec::int().default(-1).min(-1).max(1_000_000).step(1)
                    .tooltip("Class of every sample; -1 = unconditional (the null label). Must be below the model's number of classes."),
            )
            .required(
                "denoise",
                InputSpec::float().default(1.0).min(0.0).max(1.0).step(0.01)
                    .tooltip("1 = start from pure noise. Below 1: start at t = 1 - denoise from latent_image (mixed with noise when add_noise is on), i.e. img2img strength."),
            )
            .required(
                "add_noise",
                InputSpec::boolean().default(true)
                    .tooltip("On: mix seeded noise into latent_image ((1 - t)·noise + t·latent). Off: latent_image is the starting point x at t = 1 - denoise as it is (e.g. your own noise at denoise 1)."),
            )
            .optional(
                "class_labels",
                InputSpec::string().default("")
                    .tooltip("Optional per-sample classes, e.g. \"3,7,-1\": one per sample (or one for all); overrides class_label when not empty."),
            )
            .output_with_tooltip("LATENT", "LATENT", "The samples at t = 1, raw (VAE-space) NCHW latents.")
            .device_bound(),
        |inputs, ctx| {
            let m = inputs.handle_as::<ModelHandle>("model")?;
            let latent = array_of("latent_image", inputs.tensor("latent_image")?)?;
            let steps = inputs.int("steps")?;
            let settings = SamplerSettings {
                seed: inputs.u64("seed")?,
                steps: usize::try_from(steps)
                    .map_err(|_| NodeError::invalid_input("steps", "must be at least 1"))?,
                solver: inputs
                    .string("solver")?
                    .parse()
                    .map_err(|e| input_error("solver", e))?,
                tolerance: inputs.float("tolerance")?,
                cfg: inputs.float("cfg")?,
                class_label: inputs.int("class_label")?,
                class_labels: inputs.opt_string("class_labels")?.map(str::to_string),
                denoise: inputs.float("denoise")?,
                add_noise: inputs.bool("add_noise")?,
            };
            ctx.text(&format!("sampling at length {}", m.length));
            let mut on_progress = |p: Progress<'_>| {
                let r = match p.preview {
                    Some(img) => ctx.progress_with_preview(
                        p.value,
                        p.max,
                        PreviewImage::rgb8(img.width, img.height, &img.data),
                    ),
                    None => ctx.progress(p.value, p.max),
                };
                r.is_ok()
            };
            let out = run_sampler(m, ctx.device.as_str(), &latent, &settings, &mut on_progress)
                .map_err(node_error)?;
            Ok(NodeOutput::new().with(tensor_of(&out)?))
        },
        |m| issues(validate::sampler(m)),
    );
}
