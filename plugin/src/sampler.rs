//! `ODEtSampler`: integrates ODE_t from noise to data with the model at its active length.

use odelt_contract::{
    types::LATENT, ExecContext, HostContext, InputSpec, Inputs, Node, NodeError, NodeInfo,
    NodeOutput, Validation, ValidationIssue,
};
use odelt_nodes::pipeline::sampler::{
    check_class_label, parse_class_labels, run_sampler_masked, Progress,
};
use odelt_nodes::pipeline::{class, ModelHandle, SamplerSettings};
use odelt_nodes::solver::{SolverKind, SOLVER_NAMES};

use crate::convert::{array_of, input_error, issue, node_error, tensor_of};
use crate::types::MODEL;
use crate::{noise_mask, upstream};

/// The sampler node.
pub struct Sampler;

/// The sampler's widget inputs, parsed once for validation and execution.
pub fn settings(i: &Inputs<'_>) -> Result<SamplerSettings, NodeError> {
    let steps = i.int("steps")?;
    Ok(SamplerSettings {
        seed: i.u64("seed")?,
        steps: usize::try_from(steps)
            .ok()
            .filter(|&s| s >= 1)
            .ok_or_else(|| {
                NodeError::invalid_input("steps", format!("steps must be at least 1 (got {steps})"))
            })?,
        solver: i
            .string("solver")?
            .parse()
            .map_err(|e| input_error("solver", e))?,
        tolerance: i.float("tolerance")?,
        cfg: i.float("cfg")?,
        class_label: i.int("class_label")?,
        class_labels: i
            .opt_string("class_labels")?
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        denoise: i.float("denoise")?,
        add_noise: i.bool("add_noise")?,
    })
}

impl Node for Sampler {
    const CLASS: &'static str = class::SAMPLER;
    const VALIDATES: bool = true;

    fn describe(_host: &HostContext<'_>) -> NodeInfo {
        NodeInfo::new(Self::CLASS)
            .display_name("ODEt Sampler")
            .category("odelt/sampling")
            .description(
                "Integrates the flow ODE over time (ODE_t) from noise (t = 0) to data (t = 1) with the model at its \
                 active length. LATENT in and out are raw (VAE-space) NCHW latents; the model's latent scale is \
                 applied on the way in and out. Reports progress per velocity evaluation with a preview.",
            )
            .required("model", InputSpec::new(MODEL).tooltip("The model (set its length with ODE_l Depth Selector)."))
            .required(
                "latent_image",
                InputSpec::new(LATENT).tooltip("Gives the batch size and shape; its values are the img2img source when denoise < 1, or the starting point itself when add_noise is off. With a noise mask (Set Latent Noise Mask) only the masked region is sampled; the rest follows the source's flow path and ends at the source."),
            )
            .required(
                "seed",
                InputSpec::int().default(0).min(0).max(u64::MAX).step(1)
                    .option("control_after_generate", true)
                    .tooltip(SEED_CONTRACT),
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
            .output_with_tooltip(LATENT, "LATENT", "The samples at t = 1, raw (VAE-space) NCHW latents.")
            .device_bound()
    }

    fn run(inputs: &Inputs<'_>, ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let m = inputs.handle_as::<ModelHandle>("model")?;
        let latent_buf = inputs.tensor_arc("latent_image")?;
        let latent = array_of("latent_image", &latent_buf)?;
        let mask = noise_mask::mask_of(&latent_buf);
        if mask.is_none()
            && noise_mask::linked_to_noise_mask(
                ctx.prompt_json.as_str(),
                ctx.node_id.as_str(),
                "latent_image",
            )
        {
            return Err(NodeError::invalid_input(
                "latent_image",
                "the LATENT comes from Set Latent Noise Mask but its noise mask did not arrive with it (the host \
                 copied the latent on its way); refusing to sample the whole picture",
            ));
        }
        let settings = settings(inputs)?;
        ctx.text(&format!("sampling at length {}", m.length));
        let mut on_progress = |p: Progress<'_>| p.report(ctx);
        if mask.is_some() {
            ctx.text("sampling inside the noise mask");
        }
        let out = run_sampler_masked(
            m,
            ctx.device.as_str(),
            &latent,
            mask.as_deref(),
            &settings,
            &mut on_progress,
        )
        .map_err(node_error)?;
        Ok(NodeOutput::new().with(tensor_of(&out)?))
    }

    /// Steps, tolerance, labels against the model's classes, the latent's shape against the model.
    fn validate(v: &Validation<'_>) -> Vec<ValidationIssue> {
        let mut out = Vec::new();
        // A widget that is linked is unknown until the run (and the host has checked the literals' ranges).
        let Ok(s) = settings(&v.literals()) else {
            return out;
        };
        if s.solver == SolverKind::Dopri5 && !(s.tolerance > 0.0 && s.tolerance.is_finite()) {
            out.push(issue(
                "tolerance",
                format!("dopri5 needs a tolerance > 0 (got {})", s.tolerance),
            ));
        }
        let labels = match s.class_labels.as_deref().map(parse_class_labels) {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                out.push(issue("class_labels", e));
                vec![]
            }
            None => vec![],
        };
        let Some(mi) = v.link("model").and_then(|l| upstream::model(v.host, l)) else {
            return out;
        };
        let nc = mi.config.num_classes;
        if let Err(e) = check_class_label(s.class_label, nc) {
            out.push(issue("class_label", e));
        }
        if let Some(e) = labels.iter().find_map(|&l| check_class_label(l, nc).err()) {
            out.push(issue("class_labels", e));
        }
        if let Some(li) = v
            .link("latent_image")
            .and_then(|l| upstream::latent(v.host, l))
        {
            let side = mi.config.input_size;
            if li.channels != mi.config.in_channels || li.size.is_some_and(|sz| sz != (side, side))
            {
                let size = li
                    .size
                    .map_or("size unknown".into(), |(h, w)| format!("{h}x{w}"));
                out.push(issue(
                    "latent_image",
                    format!(
                        "the latent ({}, {size}) does not fit the model, which takes [B, {}, {side}, {side}]",
                        li.source, mi.config.in_channels
                    ),
                ));
            }
        }
        out
    }
}

/// The seed's contract, shown as its tooltip.
pub const SEED_CONTRACT: &str = "Noise seed. Sample i of the batch starts from noise stream i of this seed, so its noise is the same at any batch size and any active length, and this seed gives the same samples as `odelt-model grid --seed` and the evaluation.";
