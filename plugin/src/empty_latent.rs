//! `ODEtEmptyLatent`: a zero LATENT of the model's native size.

use odelt_contract::{
    types::LATENT, ExecContext, HostContext, InputSpec, Inputs, Node, NodeError, NodeInfo,
    NodeOutput,
};
use odelt_nodes::pipeline::sampler::empty_latent;
use odelt_nodes::pipeline::{class, ModelHandle};

use crate::convert::{input_error, tensor_of};
use crate::types::MODEL;

/// The empty latent node.
pub struct EmptyLatent;

/// The batch size (at least 1).
pub fn batch_size(i: &Inputs<'_>) -> Result<usize, NodeError> {
    let b = i.int("batch_size")?;
    usize::try_from(b)
        .ok()
        .filter(|&b| b >= 1)
        .ok_or_else(|| NodeError::invalid_input("batch_size", "must be at least 1"))
}

impl Node for EmptyLatent {
    const CLASS: &'static str = class::EMPTY_LATENT;

    fn describe(_host: &HostContext<'_>) -> NodeInfo {
        NodeInfo::new(Self::CLASS)
            .display_name("ODEt Empty Latent")
            .category("odelt/latent")
            .description("A zero LATENT of the model's native size ([B, C, S, S]: 4x32x32 for the official 256 px models, 1x28x28 for the Fashion-MNIST pixel model).")
            .required("model", InputSpec::new(MODEL).tooltip("The model whose input size and channels the latent takes."))
            .required(
                "batch_size",
                InputSpec::int().default(1).min(1).max(4096).step(1)
                    .tooltip("Number of samples in the batch."),
            )
            .output_with_tooltip(LATENT, "LATENT", "Zeros, NCHW, in raw (VAE) latent space.")
    }

    fn run(inputs: &Inputs<'_>, _ctx: &ExecContext<'_>) -> Result<NodeOutput, NodeError> {
        let m = inputs.handle_as::<ModelHandle>("model")?;
        let lat = empty_latent(m.config(), batch_size(inputs)?)
            .map_err(|e| input_error("batch_size", e))?;
        Ok(NodeOutput::new().with(tensor_of(&lat)?))
    }
}
