//! The AutoencoderKL configuration (the fields of a diffusers `config.json` that shape the weights).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `scaling_factor` of the SD 1.x VAEs (sd-vae-ft-mse, sd-vae-ft-ema, the original kl-f8).
pub const SD_VAE_SCALING_FACTOR: f64 = 0.18215;

/// Shape and scaling of a KL autoencoder in the diffusers `AutoencoderKL` layout.
///
/// Deserialising fills every absent field from [`VaeConfig::sd_ft_mse`], so `{"latent_channels": 4}` is the SD
/// VAE and a diffusers `config.json` (extra keys ignored) reads directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    /// Image channels the encoder reads (3).
    pub in_channels: usize,
    /// Image channels the decoder writes (3).
    pub out_channels: usize,
    /// Channels of the latent space (4 for SD 1.x/2.x/XL).
    pub latent_channels: usize,
    /// Channels of each resolution level, finest first (`[128, 256, 512, 512]`): the encoder walks it forwards,
    /// the decoder backwards. `len - 1` is the number of 2x resamplings.
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder down block; decoder up blocks have one more.
    pub layers_per_block: usize,
    /// GroupNorm groups everywhere (32).
    pub norm_num_groups: usize,
    /// GroupNorm epsilon everywhere (1e-6).
    pub norm_eps: f64,
    /// Whether the mid blocks hold the single-head self-attention (true for SD VAEs).
    pub mid_block_add_attention: bool,
    /// Whether a 1x1 `quant_conv` follows the encoder.
    pub use_quant_conv: bool,
    /// Whether a 1x1 `post_quant_conv` precedes the decoder.
    pub use_post_quant_conv: bool,
    /// Factor between raw VAE latents and the diffusion model's latent space: `z_model = z_raw * scaling_factor`.
    pub scaling_factor: f64,
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self::sd_ft_mse()
    }
}

impl VaeConfig {
    /// `stabilityai/sd-vae-ft-mse` (the VAE of the ODE_t(ODE_l) reference code), 8x downsampling, 4 latent channels.
    pub fn sd_ft_mse() -> Self {
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            norm_num_groups: 32,
            norm_eps: 1e-6,
            mid_block_add_attention: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            scaling_factor: SD_VAE_SCALING_FACTOR,
        }
    }

    /// A tiny configuration for tests: channels `[32, 32]`, one layer per block, 8 groups (2x resampling).
    pub fn tiny() -> Self {
        VaeConfig {
            block_out_channels: vec![32, 32],
            layers_per_block: 1,
            norm_num_groups: 8,
            ..Self::sd_ft_mse()
        }
    }

    /// Spatial factor between images and latents (8 for SD VAEs).
    pub fn downscale_factor(&self) -> usize {
        1usize << self.block_out_channels.len().saturating_sub(1)
    }

    /// Raw VAE latents → the diffusion model's space (`* scaling_factor`). Layout is unchanged.
    pub fn to_model_space(&self, raw: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        Ok(raw.affine(self.scaling_factor, 0.0)?)
    }

    /// The diffusion model's space → raw VAE latents (`/ scaling_factor`), what [`super::VaeDecoder::decode`] takes.
    pub fn from_model_space(&self, scaled: &candle_core::Tensor) -> Result<candle_core::Tensor> {
        Ok(scaled.affine(1.0 / self.scaling_factor, 0.0)?)
    }

    /// Checks that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::config(format!("VAE: {m}")));
        if self.block_out_channels.is_empty() {
            return fail("block_out_channels is empty".into());
        }
        if self.block_out_channels.len() > 8 {
            return fail(format!(
                "{} resolution levels is more than this implementation supports (8)",
                self.block_out_channels.len()
            ));
        }
        if self.norm_num_groups == 0 {
            return fail("norm_num_groups must be positive".into());
        }
        for &c in &self.block_out_channels {
            if c == 0 || c % self.norm_num_groups != 0 {
                return fail(format!(
                    "block_out_channels {:?}: {c} is not a positive multiple of norm_num_groups {}",
                    self.block_out_channels, self.norm_num_groups
                ));
            }
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.latent_channels == 0 {
            return fail(format!(
                "in_channels {}, out_channels {} and latent_channels {} must be positive",
                self.in_channels, self.out_channels, self.latent_channels
            ));
        }
        if self.layers_per_block == 0 {
            return fail("layers_per_block must be at least 1".into());
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return fail(format!("norm_eps {} must be positive", self.norm_eps));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return fail(format!(
                "scaling_factor {} must be positive",
                self.scaling_factor
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_preset_is_valid_and_8x() {
        let c = VaeConfig::sd_ft_mse();
        c.validate().unwrap();
        assert_eq!(c.downscale_factor(), 8);
        assert_eq!(VaeConfig::tiny().downscale_factor(), 2);
    }

    #[test]
    fn partial_json_fills_from_sd_preset() {
        let c: VaeConfig =
            serde_json::from_str(r#"{"block_out_channels":[32,64],"_class_name":"AutoencoderKL"}"#)
                .unwrap();
        assert_eq!(c.block_out_channels, vec![32, 64]);
        assert_eq!(c.latent_channels, 4);
        assert_eq!(c.scaling_factor, SD_VAE_SCALING_FACTOR);
        let back: VaeConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn rejects_channels_not_divisible_by_groups() {
        let c = VaeConfig {
            block_out_channels: vec![30],
            ..VaeConfig::tiny()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("norm_num_groups"), "{e}");
    }
}
