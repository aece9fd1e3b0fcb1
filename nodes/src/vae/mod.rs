//! The Stable Diffusion KL autoencoder (`stabilityai/sd-vae-ft-mse`, diffusers `AutoencoderKL`) in candle-nn,
//! read from its `diffusion_pytorch_model.safetensors` (or a legacy-named / LDM single-file copy of it).
//!
//! # Who scales what
//!
//! | where | space | layout |
//! |---|---|---|
//! | LATENT values between nodes (ComfyUI-style `{"samples": ...}`) | **RAW** VAE latents | NCHW `[B, 4, h, w]` |
//! | [`VaeEncoder::encode`] output, [`VaeDecoder::decode`] input | RAW | NCHW |
//! | the DiT / sampler | scaled: `z_model = z_raw * scaling_factor` (0.18215) | NHWC `[B, h, w, 4]` |
//!
//! So the sampler side converts: `raw = z_model / scaling_factor` ([`VaeConfig::from_model_space`], or the
//! DiT's own `DitConfig::latent_scale`) and permutes NHWC→NCHW before `decode`; after `encode` it multiplies by
//! `scaling_factor` ([`VaeConfig::to_model_space`]) and permutes NCHW→NHWC. The VAE never scales.
//! This matches the reference code (`utils/stable_vae.py`): encode → `× 0.18215`, decode ← `/ 0.18215`.
//!
//! Images: decode returns NCHW in about [-1, 1] (unclamped); [`to_image_bhwc01`] gives the host's IMAGE
//! (`[B, H, W, C]` in [0, 1], clamped); [`from_image_bhwc01`] is its inverse for encoding.
//!
//! Cost: a full-size decode of a 32x32 latent is ~20 s on a 2-core CPU (see docs); use tiny configs in tests.

mod config;
mod decoder;
mod encoder;
mod layers;
mod random;
mod weights;

use candle_core::{DType, Tensor};

pub use config::{VaeConfig, SD_VAE_SCALING_FACTOR};
pub use decoder::VaeDecoder;
pub use encoder::{LatentDistribution, VaeEncoder};
pub use random::{random_vae_tensors, vae_param_shapes, write_random_vae};
pub use weights::KeyLayout;

use crate::error::{Error, Result};

/// The dtype to compute in: as asked, except bf16 on the CPU (candle's CPU matmul/conv has no bf16) → f32.
fn compute_dtype(device: &candle_core::Device, dtype: DType) -> DType {
    if device.is_cpu() && dtype == DType::BF16 {
        DType::F32
    } else {
        dtype
    }
}

/// NCHW images in [-1, 1] → `[B, H, W, C]` f32 in [0, 1] (`x / 2 + 0.5`, clamped), contiguous.
pub fn to_image_bhwc01(images_nchw: &Tensor) -> Result<Tensor> {
    if images_nchw.rank() != 4 {
        return Err(Error::invalid(format!(
            "expected NCHW images, got shape {:?}",
            images_nchw.dims()
        )));
    }
    Ok(images_nchw
        .to_dtype(DType::F32)?
        .affine(0.5, 0.5)?
        .clamp(0f32, 1f32)?
        .permute((0, 2, 3, 1))?
        .contiguous()?)
}

/// `[B, H, W, C]` images in [0, 1] → NCHW f32 in [-1, 1] (`2x - 1`), contiguous — the encoder's input.
pub fn from_image_bhwc01(images_bhwc: &Tensor) -> Result<Tensor> {
    if images_bhwc.rank() != 4 {
        return Err(Error::invalid(format!(
            "expected [B, H, W, C] images, got shape {:?}",
            images_bhwc.dims()
        )));
    }
    Ok(images_bhwc
        .to_dtype(DType::F32)?
        .affine(2.0, -1.0)?
        .permute((0, 3, 1, 2))?
        .contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn image_conversions_round_trip_and_clamp() {
        let x = Tensor::new(&[-1.5f32, -1.0, 0.0, 0.5, 1.0, 2.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 3, 1, 2))
            .unwrap();
        let img = to_image_bhwc01(&x).unwrap();
        assert_eq!(img.dims(), &[1, 1, 2, 3]);
        let v: Vec<f32> = img.flatten_all().unwrap().to_vec1().unwrap();
        // pixel (0,0) = channels (-1.5, 0.0, 1.0), pixel (0,1) = (-1.0, 0.5, 2.0)
        assert_eq!(v, vec![0.0, 0.5, 1.0, 0.0, 0.75, 1.0]);
        let back = from_image_bhwc01(&img).unwrap();
        let b: Vec<f32> = back.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(b, vec![-1.0, -1.0, 0.0, 0.5, 1.0, 1.0]);
    }
}
