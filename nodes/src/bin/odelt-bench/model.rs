//! The model under test: its device, the random-weight checkpoint, loading, and the forward's inputs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use odelt_nodes::checkpoint::{self, safetensors_format, LoadOptions};
use odelt_nodes::params::random_params;
use odelt_nodes::util::XorShift;
use odelt_nodes::{Dit, DitConfig};

/// `cpu`, `cuda` or `cuda:N` (the library's device names).
pub fn device(spec: &str) -> Result<Device> {
    odelt_nodes::pipeline::device::device(spec).with_context(|| format!("--device {spec}"))
}

/// Waits for queued device work (a no-op on the CPU).
pub fn sync(device: &Device) -> Result<()> {
    device.synchronize()?;
    Ok(())
}

/// The architecture of a random-weight model: a library preset (`dit-b`, `dit-xl`) or `tiny` (the golden test
/// configuration), with `classes` classes.
pub fn config(name: &str, classes: usize) -> Result<DitConfig> {
    let mut cfg = match name.to_ascii_lowercase().as_str() {
        "tiny" => DitConfig::golden_tiny(),
        other => DitConfig::preset(other)
            .with_context(|| format!("unknown --model `{other}` (choose dit-b, dit-xl or tiny)"))?,
    };
    if classes == 0 {
        bail!("--classes must be at least 1");
    }
    cfg.num_classes = classes;
    Ok(cfg)
}

/// Writes a random-weight checkpoint of `cfg` (all blocks, [`random_params`] with seed 0) to `path`.
pub fn write_random_checkpoint(cfg: &DitConfig, path: &Path) -> Result<()> {
    safetensors_format::save(
        path,
        cfg,
        &random_params(cfg, 0)?,
        &[("odelt.source", "odelt-bench random weights".to_string())],
    )?;
    Ok(())
}

/// Removes the temporary checkpoint when dropped.
pub struct TempFile(pub Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Opens a checkpoint and loads the model in `dtype` (bf16 on an AVX-512 CPU: the fused path's bf16
/// weights).
pub fn open_model(
    path: &Path,
    device: &Device,
    length: Option<usize>,
    dtype: DType,
) -> Result<(DitConfig, Dit)> {
    let ck = checkpoint::open(path, &LoadOptions::default())
        .with_context(|| format!("opening checkpoint {}", path.display()))?;
    let cfg = ck.config.clone();
    let model = Dit::load(&cfg, &*ck.source, device, dtype, length)
        .with_context(|| format!("loading the model from {}", path.display()))?;
    Ok((cfg, model))
}

pub struct Inputs {
    t: Tensor,
    x: Tensor,
    dt_base: Tensor,
    y: Tensor,
}

pub fn inputs(cfg: &DitConfig, batch: usize, device: &Device) -> Result<Inputs> {
    let s = cfg.input_size;
    let n = batch * s * s * cfg.in_channels;
    let mut rng = XorShift::new(7);
    let x: Vec<f32> = (0..n).map(|_| rng.next_f32()).collect();
    let x = Tensor::from_vec(x, (batch, s, s, cfg.in_channels), device)?;
    let t = Tensor::from_vec(vec![0.5f32; batch], batch, device)?;
    let dt_base = Tensor::from_vec(vec![7f32; batch], batch, device)?;
    let y: Vec<u32> = (0..batch)
        .map(|i| (i % cfg.num_classes.max(1)) as u32)
        .collect();
    let y = Tensor::from_vec(y, batch, device)?;
    Ok(Inputs { t, x, dt_base, y })
}

pub fn forward(model: &Dit, inp: &Inputs) -> Result<Tensor> {
    Ok(model.forward(&inp.t, &inp.x, &inp.dt_base, &inp.y)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_tiny() {
        assert_eq!(config("dit-b", 1).unwrap().hidden_size, 768);
        assert_eq!(config("DiT-XL", 1000).unwrap().depth, 28);
        assert_eq!(config("tiny", 3).unwrap().num_classes, 3);
        assert!(config("dit-s", 10).is_err());
        assert!(config("tiny", 0).is_err());
    }

    #[test]
    fn device_names_are_the_library_ones() {
        assert!(device("cpu").unwrap().is_cpu());
        assert!(device("tpu").is_err());
        if !cfg!(feature = "cuda") {
            let e = format!("{:#}", device("cuda:0").unwrap_err());
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}
