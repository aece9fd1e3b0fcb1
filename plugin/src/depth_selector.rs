//! `ODElDepthSelector`: sets the active length l of a MODEL (a patch; no weights copied).

use odelt_contract::{
    ExecContext, Handle, HostContext, InputSpec, Inputs, Node, NodeError, NodeInfo, NodeOutput,
    Validation, ValidationIssue,
};
use odelt_nodes::pipeline::model::check_active_blocks;
use odelt_nodes::pipeline::{class, ModelHandle};

use crate::convert::{input_error, issue};
use crate::types::MODEL;
use crate::upstream;

/// The depth selector node.
pub struct DepthSelector;

/// The requested length (`0` = the model's full depth).
pub fn active_blocks(i: &Inputs<'_>) -> Result<i64, NodeError> {
    i.int("active_blocks")
}

/// The length a request selects on a model of `depth` blocks: `0` is the full depth; negative is no length.
pub fn length(active_blocks: i64, depth: usize) -> Option<usize> {
    match active_blocks {
        0 => Some(depth),
        l if l > 0 => usize::try_from(l).ok(),
        _ => None,
    }
}

impl Node for DepthSelector {
    const CLASS: &'static str = class::DEPTH;
    const VALIDATES: bool = true;

    fn describe(_host: &HostContext<'_>) -> NodeInfo {
        NodeInfo::new(Self::CLASS)
            .display_name("ODE_l Depth Selector")
            .category("odelt/model_patches")
            .description(
                "Sets the active length l (number of DiT blocks) the model samples with. Returns a new MODEL over \
                 the same weights; nothing is copied. Trained lengths: depth_min, depth_min + depth_group, ..., depth.",
            )
            .required("model", InputSpec::new(MODEL).tooltip("The model to patch."))
            .required(
                "active_blocks",
                InputSpec::int().default(0).min(0).max(4096).step(1)
                    .tooltip("Active length l: 0 = the model's full depth; otherwise one of depth_min + k·depth_group up to the depth (e.g. 4, 8, 12 for DiT-B; 12, 20, 28 for DiT-XL). Checked against the linked checkpoint before the run."),
            )
            .output_with_tooltip(MODEL, "MODEL", "The same model at the chosen length.")
    }

    fn run(inputs: &Inputs<'_>, _ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let m = inputs.handle_as::<ModelHandle>("model")?;
        let requested = active_blocks(inputs)?;
        let l = length(requested, m.config().depth).ok_or_else(|| {
            NodeError::invalid_input("active_blocks", format!("{requested} is negative"))
        })?;
        let patched = m
            .with_length(l)
            .map_err(|e| input_error("active_blocks", e))?;
        Ok(NodeOutput::new().with(Handle::new(MODEL, patched)))
    }

    /// `active_blocks` must be on the linked model's length grid.
    fn validate(v: &Validation<'_>) -> Vec<ValidationIssue> {
        let Ok(requested) = active_blocks(&v.literals()) else {
            return vec![];
        };
        if requested < 0 {
            return vec![issue("active_blocks", format!("{requested} is negative"))];
        }
        let Some(mi) = v.link("model").and_then(|l| upstream::model(v.host, l)) else {
            return vec![];
        };
        let l = length(requested, mi.config.depth).unwrap_or(mi.config.depth);
        match check_active_blocks(&mi.config, l) {
            Ok(()) => vec![],
            Err(e) => vec![issue("active_blocks", e)],
        }
    }
}
