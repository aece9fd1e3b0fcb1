//! The AutoencoderKL building blocks (diffusers semantics): resnet, single-head mid attention, mid block, 2x
//! nearest upsampling + conv, 2x strided-conv downsampling.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Conv2d, GroupNorm, Linear};

use super::config::VaeConfig;
use super::weights::VaeWeights;
use crate::error::Result;

/// `norm1 → SiLU → conv1(3x3) → norm2 → SiLU → conv2(3x3)`, plus the input (through a 1x1 `conv_shortcut` when
/// the channel count changes).
pub(crate) struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    pub(crate) fn load(
        w: &VaeWeights,
        prefix: &str,
        cin: usize,
        cout: usize,
        cfg: &VaeConfig,
    ) -> Result<Self> {
        let (g, eps) = (cfg.norm_num_groups, cfg.norm_eps);
        Ok(ResnetBlock {
            norm1: w.group_norm(&format!("{prefix}.norm1"), g, cin, eps)?,
            conv1: w.conv(&format!("{prefix}.conv1"), cin, cout, 3, 1, 1)?,
            norm2: w.group_norm(&format!("{prefix}.norm2"), g, cout, eps)?,
            conv2: w.conv(&format!("{prefix}.conv2"), cout, cout, 3, 1, 1)?,
            shortcut: if cin != cout {
                Some(w.conv(&format!("{prefix}.conv_shortcut"), cin, cout, 1, 1, 0)?)
            } else {
                None
            },
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward(x)?.silu()?;
        let h = self.conv1.forward(&h)?;
        let h = self.norm2.forward(&h)?.silu()?;
        let h = self.conv2.forward(&h)?;
        let skip = match &self.shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        Ok((skip + h)?)
    }
}

/// Single-head self-attention over all pixels, scale `1/sqrt(C)`, with a residual connection.
pub(crate) struct Attention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    scale: f64,
}

impl Attention {
    pub(crate) fn load(w: &VaeWeights, prefix: &str, c: usize, cfg: &VaeConfig) -> Result<Self> {
        let norm = w.group_norm(
            &format!("{prefix}.group_norm"),
            cfg.norm_num_groups,
            c,
            cfg.norm_eps,
        )?;
        let [q, k, v, out] = w.attention_projections(prefix, c)?;
        Ok(Attention {
            norm,
            q,
            k,
            v,
            out,
            scale: 1.0 / (c as f64).sqrt(),
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let t = self
            .norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?; // [B, HW, C]
        let q = self.q.forward(&t)?;
        let k = self.k.forward(&t)?;
        let v = self.v.forward(&t)?;
        let dtype = q.dtype();
        // Scores and softmax in f32 (diffusers upcasts the softmax of this block).
        let (q, k, v) = (
            q.to_dtype(DType::F32)?,
            k.to_dtype(DType::F32)?,
            v.to_dtype(DType::F32)?,
        );
        let scores = (q.matmul(&k.t()?)? * self.scale)?; // [B, HW, HW]
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let o = probs.matmul(&v)?.to_dtype(dtype)?; // [B, HW, C]
        let o = self.out.forward(&o)?;
        let o = o.transpose(1, 2)?.reshape((b, c, h, w))?;
        Ok((o + x)?)
    }
}

/// `resnet → [attention] → resnet` at the coarsest resolution.
pub(crate) struct MidBlock {
    resnet0: ResnetBlock,
    attention: Option<Attention>,
    resnet1: ResnetBlock,
}

impl MidBlock {
    pub(crate) fn load(w: &VaeWeights, prefix: &str, c: usize, cfg: &VaeConfig) -> Result<Self> {
        Ok(MidBlock {
            resnet0: ResnetBlock::load(w, &format!("{prefix}.resnets.0"), c, c, cfg)?,
            attention: if cfg.mid_block_add_attention {
                Some(Attention::load(
                    w,
                    &format!("{prefix}.attentions.0"),
                    c,
                    cfg,
                )?)
            } else {
                None
            },
            resnet1: ResnetBlock::load(w, &format!("{prefix}.resnets.1"), c, c, cfg)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.resnet0.forward(x)?;
        if let Some(a) = &self.attention {
            h = a.forward(&h)?;
        }
        self.resnet1.forward(&h)
    }
}

/// Nearest-neighbour 2x upsampling followed by a 3x3 conv.
pub(crate) struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub(crate) fn load(w: &VaeWeights, prefix: &str, c: usize) -> Result<Self> {
        Ok(Upsample {
            conv: w.conv(&format!("{prefix}.conv"), c, c, 3, 1, 1)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let up = x.upsample_nearest2d(2 * h, 2 * w)?;
        Ok(self.conv.forward(&up)?)
    }
}

/// Zero-pad one row/column at the bottom/right, then a 3x3 conv with stride 2 and no padding.
pub(crate) struct Downsample {
    conv: Conv2d,
}

impl Downsample {
    pub(crate) fn load(w: &VaeWeights, prefix: &str, c: usize) -> Result<Self> {
        Ok(Downsample {
            conv: w.conv(&format!("{prefix}.conv"), c, c, 3, 2, 0)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?;
        Ok(self.conv.forward(&x)?)
    }
}
