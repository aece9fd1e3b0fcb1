//! Loading a trained model for sampling.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use odelt_nodes::checkpoint::{self, LoadOptions, SafetensorsCheckpoint};
use odelt_nodes::train::TrainOptions;
use odelt_nodes::Dit;

/// The model at its full depth in f32, and the training options stored with it (if any).
pub fn load_model(path: &Path, device: &Device) -> Result<(Dit, Option<TrainOptions>)> {
    load_model_as(path, device, DType::F32)
}

/// [`load_model`] in another precision (`Dit::load`'s dtype: on an AVX-512 CPU, bf16 packs the blocks' weights
/// for the fused kernels; elsewhere it runs candle's reference ops in that dtype).
pub fn load_model_as(
    path: &Path,
    device: &Device,
    dtype: DType,
) -> Result<(Dit, Option<TrainOptions>)> {
    let ck = checkpoint::open(path, &LoadOptions::default())
        .with_context(|| format!("opening model {}", path.display()))?;
    let model = Dit::load(&ck.config, &*ck.source, device, dtype, None)
        .with_context(|| format!("building the model from {}", path.display()))?;
    let opts = SafetensorsCheckpoint::open(path)
        .ok()
        .and_then(|s| s.metadata().get("odelt.training").cloned())
        .and_then(|j| serde_json::from_str::<TrainOptions>(&j).ok());
    Ok((model, opts))
}

/// The step code to force at every T: the finest code for models trained without the time-consistency term.
pub fn fixed_dt_base(opts: &Option<TrainOptions>) -> Option<f64> {
    opts.as_ref()
        .filter(|o| o.objective.bootstrap_every == 0)
        .map(|o| o.objective.log2_steps as f64)
}
