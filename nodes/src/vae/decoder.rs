//! The AutoencoderKL decoder: RAW latents `[B, latent_channels, h, w]` → images `[B, out_channels, h·f, w·f]`
//! in about [-1, 1] (`f` = [`VaeConfig::downscale_factor`]).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, GroupNorm};

use super::config::VaeConfig;
use super::layers::{MidBlock, ResnetBlock, Upsample};
use super::weights::{KeyLayout, VaeWeights};
use crate::error::{Error, Result};

struct UpBlock {
    resnets: Vec<ResnetBlock>,
    upsample: Option<Upsample>,
}

/// The decoder half of an AutoencoderKL (with `post_quant_conv`), loaded from a safetensors file.
pub struct VaeDecoder {
    cfg: VaeConfig,
    layout: KeyLayout,
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid: MidBlock,
    up_blocks: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    device: Device,
    dtype: DType,
}

impl std::fmt::Debug for VaeDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaeDecoder")
            .field("config", &self.cfg)
            .field("layout", &self.layout)
            .field("device", &self.device)
            .field("dtype", &self.dtype)
            .finish()
    }
}

impl VaeDecoder {
    /// Loads the decoder weights of the VAE at `path` (memory-mapped; encoder weights are not read) to compute in
    /// `dtype` on `device` (bf16 on the CPU computes in f32: candle's CPU matmul has no bf16). Errors name
    /// the missing key or the mismatching shape, and say when the file is not a VAE at all.
    pub fn load(path: &Path, cfg: &VaeConfig, device: &Device, dtype: DType) -> Result<Self> {
        cfg.validate()?;
        let dtype = super::compute_dtype(device, dtype);
        let levels = cfg.block_out_channels.len();
        let w = VaeWeights::open(path, levels, device, dtype)?;
        check_decoder_shape(&w, cfg)?;
        let top = cfg.block_out_channels[levels - 1];
        let lc = cfg.latent_channels;
        let post_quant_conv = if cfg.use_post_quant_conv {
            Some(w.conv("post_quant_conv", lc, lc, 1, 1, 0)?)
        } else {
            None
        };
        let conv_in = w.conv("decoder.conv_in", lc, top, 3, 1, 1)?;
        let mid = MidBlock::load(&w, "decoder.mid_block", top, cfg)?;
        let mut up_blocks = Vec::with_capacity(levels);
        let mut cin = top;
        for i in 0..levels {
            let cout = cfg.block_out_channels[levels - 1 - i];
            let mut resnets = Vec::with_capacity(cfg.layers_per_block + 1);
            for j in 0..=cfg.layers_per_block {
                let c = if j == 0 { cin } else { cout };
                resnets.push(ResnetBlock::load(
                    &w,
                    &format!("decoder.up_blocks.{i}.resnets.{j}"),
                    c,
                    cout,
                    cfg,
                )?);
            }
            let upsample = if i + 1 < levels {
                Some(Upsample::load(
                    &w,
                    &format!("decoder.up_blocks.{i}.upsamplers.0"),
                    cout,
                )?)
            } else {
                None
            };
            up_blocks.push(UpBlock { resnets, upsample });
            cin = cout;
        }
        let bottom = cfg.block_out_channels[0];
        let norm_out = w.group_norm(
            "decoder.conv_norm_out",
            cfg.norm_num_groups,
            bottom,
            cfg.norm_eps,
        )?;
        let conv_out = w.conv("decoder.conv_out", bottom, cfg.out_channels, 3, 1, 1)?;
        Ok(VaeDecoder {
            cfg: cfg.clone(),
            layout: w.layout().clone(),
            post_quant_conv,
            conv_in,
            mid,
            up_blocks,
            norm_out,
            conv_out,
            device: device.clone(),
            dtype,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.cfg
    }

    /// Channels of the latents [`Self::decode`] takes.
    pub fn latent_channels(&self) -> usize {
        self.cfg.latent_channels
    }

    /// The key naming the weights were read with.
    pub fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype the decoder computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Decodes **RAW** VAE latents (NCHW `[B, latent_channels, h, w]`, any float dtype/device — i.e. a
    /// ComfyUI-style LATENT, *not* multiplied by `scaling_factor`; divide DiT-space latents by it first, see
    /// [`VaeConfig::from_model_space`]) into f32 NCHW images `[B, out_channels, h·f, w·f]` in about [-1, 1]
    /// (not clamped; see [`super::to_image_bhwc01`]).
    pub fn decode(&self, latents_nchw_raw: &Tensor) -> Result<Tensor> {
        let dims = latents_nchw_raw.dims();
        let lc = self.cfg.latent_channels;
        if dims.len() != 4 || dims[1] != lc {
            let hint = if dims.len() == 4 && dims[3] == lc {
                " (it looks NHWC: permute(0, 3, 1, 2) first)"
            } else {
                ""
            };
            return Err(Error::invalid(format!(
                "VAE decode expects NCHW latents [B, {lc}, h, w], got {dims:?}{hint}"
            )));
        }
        let mut x = latents_nchw_raw
            .to_device(&self.device)?
            .to_dtype(self.dtype)?;
        if let Some(c) = &self.post_quant_conv {
            x = c.forward(&x)?;
        }
        x = self.conv_in.forward(&x)?;
        x = self.mid.forward(&x)?;
        for block in &self.up_blocks {
            for r in &block.resnets {
                x = r.forward(&x)?;
            }
            if let Some(u) = &block.upsample {
                x = u.forward(&x)?;
            }
        }
        x = self.norm_out.forward(&x)?.silu()?;
        x = self.conv_out.forward(&x)?;
        Ok(x.to_dtype(DType::F32)?)
    }
}

/// Catches a VAE of another shape up front, with a message about the VAE rather than about one tensor: latent
/// channel count (e.g. a 16-channel SD3/Flux VAE), the number of levels and of resnets per level.
fn check_decoder_shape(w: &VaeWeights, cfg: &VaeConfig) -> Result<()> {
    let levels = cfg.block_out_channels.len();
    let fail = |m: String| {
        Err(Error::Checkpoint {
            path: w.path().to_path_buf(),
            message: m,
        })
    };
    let top = cfg.block_out_channels[levels - 1];
    if let Some(s) = w.shape_of("decoder.conv_in.weight") {
        if s.len() == 4 && (s[1] != cfg.latent_channels || s[0] != top) {
            return fail(format!(
                "wrong VAE for this configuration: its decoder takes {} latent channels into {} channels \
                 (`decoder.conv_in.weight` {s:?}), the configuration says latent_channels {} and \
                 block_out_channels {:?}",
                s[1], s[0], cfg.latent_channels, cfg.block_out_channels
            ));
        }
    }
    if w.shape_of(&format!(
        "decoder.up_blocks.{levels}.resnets.0.norm1.weight"
    ))
    .is_some()
    {
        return fail(format!(
            "wrong VAE for this configuration: the file has more than {levels} decoder levels \
             (block_out_channels {:?})",
            cfg.block_out_channels
        ));
    }
    let extra = cfg.layers_per_block + 1;
    if w.shape_of(&format!("decoder.up_blocks.0.resnets.{extra}.norm1.weight"))
        .is_some()
    {
        return fail(format!(
            "wrong VAE for this configuration: decoder up blocks hold more than {extra} resnets \
             (layers_per_block {})",
            cfg.layers_per_block
        ));
    }
    Ok(())
}
