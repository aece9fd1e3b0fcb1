//! The AutoencoderKL encoder (with `quant_conv`): images NCHW in [-1, 1] → the diagonal Gaussian posterior over
//! RAW latents.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, GroupNorm};
use rand::SeedableRng;

use super::config::VaeConfig;
use super::layers::{Downsample, MidBlock, ResnetBlock};
use super::weights::{KeyLayout, VaeWeights};
use crate::error::{Error, Result};

struct DownBlock {
    resnets: Vec<ResnetBlock>,
    downsample: Option<Downsample>,
}

/// The encoder half of an AutoencoderKL, loaded from a safetensors file.
pub struct VaeEncoder {
    cfg: VaeConfig,
    layout: KeyLayout,
    conv_in: Conv2d,
    down_blocks: Vec<DownBlock>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
    device: Device,
    dtype: DType,
}

impl std::fmt::Debug for VaeEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaeEncoder")
            .field("config", &self.cfg)
            .field("layout", &self.layout)
            .field("device", &self.device)
            .field("dtype", &self.dtype)
            .finish()
    }
}

/// The encoder's posterior `N(mean, exp(logvar))` over RAW latents (f32 NCHW `[B, latent_channels, h, w]`).
#[derive(Debug, Clone)]
pub struct LatentDistribution {
    pub mean: Tensor,
    /// Clamped to [-30, 20] like diffusers.
    pub logvar: Tensor,
}

impl LatentDistribution {
    /// The mean (deterministic encoding).
    pub fn mode(&self) -> &Tensor {
        &self.mean
    }

    /// `exp(logvar / 2)`.
    pub fn std(&self) -> Result<Tensor> {
        Ok((&self.logvar * 0.5)?.exp()?)
    }

    /// `mean + std * noise` with caller-provided standard-normal `noise` of the mean's shape.
    pub fn sample_with_noise(&self, noise: &Tensor) -> Result<Tensor> {
        if noise.dims() != self.mean.dims() {
            return Err(Error::invalid(format!(
                "posterior noise has shape {:?}, expected {:?}",
                noise.dims(),
                self.mean.dims()
            )));
        }
        let noise = noise
            .to_device(self.mean.device())?
            .to_dtype(self.mean.dtype())?;
        Ok((&self.mean + (self.std()? * noise)?)?)
    }

    /// A posterior sample with noise drawn on the CPU from `seed` (same result on every device). The reference
    /// code samples (not the mean) when encoding training data.
    pub fn sample(&self, seed: u64) -> Result<Tensor> {
        let n = self.mean.elem_count();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let v: Vec<f32> = (0..n)
            .map(|_| rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng))
            .collect();
        let noise = Tensor::from_vec(v, self.mean.dims(), &Device::Cpu)?;
        self.sample_with_noise(&noise)
    }
}

impl VaeEncoder {
    /// Loads the encoder weights (and `quant_conv`) of the VAE at `path` (dtype handling as
    /// [`super::VaeDecoder::load`]).
    pub fn load(path: &Path, cfg: &VaeConfig, device: &Device, dtype: DType) -> Result<Self> {
        cfg.validate()?;
        let dtype = super::compute_dtype(device, dtype);
        let levels = cfg.block_out_channels.len();
        let w = VaeWeights::open(path, levels, device, dtype)?;
        let first = cfg.block_out_channels[0];
        let top = cfg.block_out_channels[levels - 1];
        let conv_in = w.conv("encoder.conv_in", cfg.in_channels, first, 3, 1, 1)?;
        let mut down_blocks = Vec::with_capacity(levels);
        let mut cin = first;
        for i in 0..levels {
            let cout = cfg.block_out_channels[i];
            let mut resnets = Vec::with_capacity(cfg.layers_per_block);
            for j in 0..cfg.layers_per_block {
                let c = if j == 0 { cin } else { cout };
                resnets.push(ResnetBlock::load(
                    &w,
                    &format!("encoder.down_blocks.{i}.resnets.{j}"),
                    c,
                    cout,
                    cfg,
                )?);
            }
            let downsample = if i + 1 < levels {
                Some(Downsample::load(
                    &w,
                    &format!("encoder.down_blocks.{i}.downsamplers.0"),
                    cout,
                )?)
            } else {
                None
            };
            down_blocks.push(DownBlock {
                resnets,
                downsample,
            });
            cin = cout;
        }
        let mid = MidBlock::load(&w, "encoder.mid_block", top, cfg)?;
        let norm_out = w.group_norm(
            "encoder.conv_norm_out",
            cfg.norm_num_groups,
            top,
            cfg.norm_eps,
        )?;
        let two_lc = 2 * cfg.latent_channels;
        let conv_out = w.conv("encoder.conv_out", top, two_lc, 3, 1, 1)?;
        let quant_conv = if cfg.use_quant_conv {
            Some(w.conv("quant_conv", two_lc, two_lc, 1, 1, 0)?)
        } else {
            None
        };
        Ok(VaeEncoder {
            cfg: cfg.clone(),
            layout: w.layout().clone(),
            conv_in,
            down_blocks,
            mid,
            norm_out,
            conv_out,
            quant_conv,
            device: device.clone(),
            dtype,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    /// The dtype the encoder computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Encodes NCHW images `[B, in_channels, H, W]` in [-1, 1] (H, W multiples of the downscale factor) into the
    /// posterior over RAW latents `[B, latent_channels, H/f, W/f]`. Multiply a sample by `scaling_factor`
    /// ([`VaeConfig::to_model_space`]) before handing it to the DiT.
    pub fn encode(&self, images_nchw: &Tensor) -> Result<LatentDistribution> {
        let dims = images_nchw.dims();
        let f = self.cfg.downscale_factor();
        let ic = self.cfg.in_channels;
        if dims.len() != 4 || dims[1] != ic {
            return Err(Error::invalid(format!(
                "VAE encode expects NCHW images [B, {ic}, H, W] in [-1, 1], got {dims:?}"
            )));
        }
        if !dims[2].is_multiple_of(f) || !dims[3].is_multiple_of(f) || dims[2] == 0 || dims[3] == 0
        {
            return Err(Error::invalid(format!(
                "VAE encode: image size {}x{} is not a positive multiple of {f}; crop or resize first",
                dims[2], dims[3]
            )));
        }
        let mut x = images_nchw.to_device(&self.device)?.to_dtype(self.dtype)?;
        x = self.conv_in.forward(&x)?;
        for block in &self.down_blocks {
            for r in &block.resnets {
                x = r.forward(&x)?;
            }
            if let Some(d) = &block.downsample {
                x = d.forward(&x)?;
            }
        }
        x = self.mid.forward(&x)?;
        x = self.norm_out.forward(&x)?.silu()?;
        x = self.conv_out.forward(&x)?;
        if let Some(q) = &self.quant_conv {
            x = q.forward(&x)?;
        }
        let x = x.to_dtype(DType::F32)?;
        let lc = self.cfg.latent_channels;
        let mean = x.narrow(1, 0, lc)?.contiguous()?;
        let logvar = x.narrow(1, lc, lc)?.clamp(-30f32, 20f32)?.contiguous()?;
        Ok(LatentDistribution { mean, logvar })
    }
}
