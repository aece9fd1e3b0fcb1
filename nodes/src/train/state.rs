//! Resumable training checkpoints: one safetensors file with the weights (`p/NAME`), their EMA (`ema/NAME`), the
//! AdamW moments (`m/NAME`, `v/NAME`) and, in the metadata, the model config, the options and the step count.
//! The per-step randomness is derived from (seed, step), so a resumed run continues bit-for-bit.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::config::DitConfig;
use crate::error::{Error, Result};

pub const KEY_CONFIG: &str = "odelt.config";
pub const KEY_OPTIONS: &str = "odelt.train_options";
pub const KEY_STEP: &str = "odelt.step";
pub const KEY_ADAM_T: &str = "odelt.adam_t";

/// What a training checkpoint holds.
#[derive(Debug)]
pub struct TrainState {
    pub config: DitConfig,
    pub options_json: String,
    pub step: u64,
    pub adam_t: u64,
    pub names: Vec<String>,
    pub params: Vec<Tensor>,
    pub ema: Vec<Tensor>,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

fn err(path: &Path, m: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: m.into(),
    }
}

/// Writes the state atomically (temporary file, then rename).
pub fn save(path: &Path, s: &TrainState) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert(
        KEY_CONFIG.to_string(),
        serde_json::to_string(&s.config).map_err(|e| err(path, e.to_string()))?,
    );
    meta.insert(KEY_OPTIONS.to_string(), s.options_json.clone());
    meta.insert(KEY_STEP.to_string(), s.step.to_string());
    meta.insert(KEY_ADAM_T.to_string(), s.adam_t.to_string());
    let mut items: Vec<(String, Tensor)> = Vec::new();
    for (prefix, tensors) in [("p", &s.params), ("ema", &s.ema), ("m", &s.m), ("v", &s.v)] {
        for (n, t) in s.names.iter().zip(tensors.iter()) {
            // a state trained on a GPU is written from host memory
            let t = t.to_device(&Device::Cpu)?.contiguous()?;
            items.push((format!("{prefix}/{n}"), t));
        }
    }
    let tmp = path.with_extension("tmp");
    safetensors::serialize_to_file(items.iter().map(|(n, t)| (n.as_str(), t)), Some(meta), &tmp)
        .map_err(|e| err(&tmp, format!("write failed: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// Whether `path` is a training state written by [`save`] (reads only the safetensors header).
pub fn is_state(path: &Path) -> bool {
    fn has_step(path: &Path) -> Option<bool> {
        use std::io::Read;
        let mut f = std::fs::File::open(path).ok()?;
        let mut n = [0u8; 8];
        f.read_exact(&mut n).ok()?;
        let n = usize::try_from(u64::from_le_bytes(n)).ok()?;
        if n > 100 << 20 {
            return None;
        }
        let mut header = vec![0u8; n];
        f.read_exact(&mut header).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
        Some(v.get("__metadata__")?.get(KEY_STEP).is_some())
    }
    has_step(path).unwrap_or(false)
}

/// Writes weights (`tensors`, in `names` order) in the project's model format: the config, the training options,
/// the step and which weights they are (`ema` or `params`) go into the metadata. Used for the trainer's exports
/// and for `odelt-model convert STATE MODEL` (either set of weights from a saved state).
#[allow(clippy::too_many_arguments)]
pub fn export_weights(
    path: &Path,
    cfg: &DitConfig,
    names: &[String],
    tensors: &[Tensor],
    options_json: &str,
    step: u64,
    ema: bool,
    extra: &[(&str, String)],
) -> Result<()> {
    let named: Vec<(String, Tensor)> = names.iter().cloned().zip(tensors.iter().cloned()).collect();
    let mut meta: Vec<(&str, String)> = vec![
        ("odelt.training", options_json.to_string()),
        ("odelt.trained_steps", step.to_string()),
        (
            "odelt.weights",
            if ema { "ema" } else { "params" }.to_string(),
        ),
    ];
    meta.extend(extra.iter().cloned());
    crate::checkpoint::safetensors_format::save(path, cfg, &named, &meta)
}

impl TrainState {
    /// Writes the EMA (`ema = true`) or the raw weights of this state as a model file (see [`export_weights`]).
    pub fn export(&self, path: &Path, ema: bool) -> Result<()> {
        let tensors = if ema { &self.ema } else { &self.params };
        export_weights(
            path,
            &self.config,
            &self.names,
            tensors,
            &self.options_json,
            self.step,
            ema,
            &[],
        )
    }
}

/// Reads a state written by [`save`]; `names` fixes the parameter order.
pub fn load(path: &Path, device: &Device) -> Result<TrainState> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| err(path, format!("not a safetensors file: {e}")))?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| err(path, "no metadata (not a training checkpoint)"))?;
    let get = |k: &str| {
        meta.get(k)
            .cloned()
            .ok_or_else(|| err(path, format!("metadata has no `{k}`")))
    };
    let config: DitConfig =
        serde_json::from_str(&get(KEY_CONFIG)?).map_err(|e| err(path, format!("config: {e}")))?;
    let step: u64 = get(KEY_STEP)?
        .parse()
        .map_err(|e| err(path, format!("step: {e}")))?;
    let adam_t: u64 = get(KEY_ADAM_T)?
        .parse()
        .map_err(|e| err(path, format!("adam_t: {e}")))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
    let names: Vec<String> = crate::params::param_specs(&config, config.depth)
        .into_iter()
        .map(|s| s.name)
        .collect();
    let take = |prefix: &str| -> Result<Vec<Tensor>> {
        names
            .iter()
            .map(|n| {
                tensors
                    .get(&format!("{prefix}/{n}"))
                    .cloned()
                    .ok_or_else(|| err(path, format!("missing tensor {prefix}/{n}")))
            })
            .collect()
    };
    Ok(TrainState {
        params: take("p")?,
        ema: take("ema")?,
        m: take("m")?,
        v: take("v")?,
        config,
        options_json: get(KEY_OPTIONS)?,
        step,
        adam_t,
        names,
    })
}
