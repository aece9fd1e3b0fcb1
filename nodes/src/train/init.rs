//! Initial parameters for training from scratch, following each parameter's official init (spec §1.4):
//! xavier-uniform kernels, N(0, 0.02) timestep kernels and embedding tables, zero biases and a zero final layer.

use candle_core::{Device, Tensor};
use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::config::DitConfig;
use crate::error::Result;
use crate::params::{param_specs, Init};

/// Every parameter of `cfg` (all blocks), in spec order, as f32 tensors on `device`.
pub fn init_params<R: Rng>(
    cfg: &DitConfig,
    rng: &mut R,
    device: &Device,
) -> Result<Vec<(String, Tensor)>> {
    cfg.validate()?;
    let mut out = Vec::new();
    for spec in param_specs(cfg, cfg.depth) {
        let n: usize = spec.shape.iter().product();
        let data: Vec<f32> = match spec.init {
            Init::Zeros => vec![0.0; n],
            Init::Normal(std) => {
                let d = Normal::new(0.0f64, std)
                    .map_err(|e| crate::Error::invalid(format!("init {}: {e}", spec.name)))?;
                (0..n).map(|_| d.sample(rng) as f32).collect()
            }
            Init::XavierUniform { fan_in, fan_out } => {
                let a = (6.0 / (fan_in + fan_out) as f64).sqrt();
                (0..n).map(|_| rng.random_range(-a..a) as f32).collect()
            }
        };
        out.push((spec.name, Tensor::from_vec(data, spec.shape, device)?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn init_follows_specs() {
        let cfg = DitConfig::golden_tiny();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let p = init_params(&cfg, &mut rng, &Device::Cpu).unwrap();
        let get = |n: &str| p.iter().find(|(k, _)| k == n).unwrap().1.clone();
        let fin = get("FinalLayer_0/Dense_1/kernel");
        assert_eq!(
            fin.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        let k = get("DiTBlock_0/Dense_1/kernel")
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let a = (6.0f32 / 128.0).sqrt();
        assert!(k.iter().all(|v| v.abs() <= a));
        assert!(k.iter().any(|v| v.abs() > a * 0.5));
        let e = get("LabelEmbedder_0/Embed_0/embedding")
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let std = (e.iter().map(|v| v * v).sum::<f32>() / e.len() as f32).sqrt();
        assert!((std - 0.02).abs() < 0.005, "{std}");
    }
}
