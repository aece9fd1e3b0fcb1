//! The adaLN-Zero DiT block and the final layer (spec §1.4), as the official `model.py` writes them. The fused CPU
//! implementation of the same math over the same weights is in `fused_block`.

use candle_core::{Tensor, D};

use super::layers::{layer_norm, matmul, modulate, softmax_f32, Dense};
use crate::error::Result;
use crate::params::{BlockParams, FinalLayerParams, Loader};

/// `DiTBlock_i`: adaLN modulation, multi-head self-attention with separate K, Q, V projections in the checkpoint (in
/// that order: `Dense_1` is K, `Dense_2` is Q, `Dense_3` is V), and a tanh-GELU MLP, each gated.
///
/// In memory the three projections are fused into one `[H, 3H]` layer with outputs `[q | k | v]`, and the query's
/// `1 / head_dim` logit scale is folded into its kernel and bias (exact when `head_dim` is a power of two, as for
/// DiT-B; otherwise within one rounding).
#[derive(Debug, Clone)]
pub struct DitBlock {
    pub(super) ada_ln: Dense,
    pub(super) qkv: Dense,
    pub(super) attn_out: Dense,
    pub(super) mlp_in: Dense,
    pub(super) mlp_out: Dense,
    pub(super) num_heads: usize,
}

impl DitBlock {
    pub fn load(l: &Loader, p: &BlockParams, num_heads: usize) -> Result<Self> {
        let key = Dense::load(l, &p.key)?;
        let query = Dense::load(l, &p.query)?;
        let value = Dense::load(l, &p.value)?;
        let head_dim = p.query.fan_out / num_heads.max(1);
        let query = query.scaled(1.0 / head_dim as f64)?;
        Ok(DitBlock {
            ada_ln: Dense::load(l, &p.ada_ln)?,
            qkv: Dense::concat_outputs(&[query, key, value])?,
            attn_out: Dense::load(l, &p.attn_out)?,
            mlp_in: Dense::load(l, &p.mlp_in)?,
            mlp_out: Dense::load(l, &p.mlp_out)?,
            num_heads,
        })
    }

    /// `x`: `[B, T, H]`, `c`: `[B, H]` → the block's full residual-stream output `[B, T, H]`. `differentiable`
    /// picks LayerNorm and softmax written in primitive ops that candle can backpropagate through (training).
    pub fn forward(&self, x: &Tensor, c: &Tensor, differentiable: bool) -> Result<Tensor> {
        let m = self.ada_ln.forward(&c.silu()?)?.chunk(6, D::Minus1)?;
        let (shift_msa, scale_msa, gate_msa) = (&m[0], &m[1], &m[2]);
        let (shift_mlp, scale_mlp, gate_mlp) = (&m[3], &m[4], &m[5]);
        let norm = |x: &Tensor| layer_norm(x, differentiable);

        let h = modulate(&norm(x)?, shift_msa, scale_msa)?;
        let x = (x + gate(&self.attn(&h, differentiable)?, gate_msa)?)?;
        let h = modulate(&norm(&x)?, shift_mlp, scale_mlp)?;
        Ok((&x + gate(&self.mlp(&h)?, gate_mlp)?)?)
    }

    /// Self-attention with logits scaled by `1 / head_dim` (not its square root; folded into the query), an f32
    /// softmax, and the output projection.
    fn attn(&self, h: &Tensor, differentiable: bool) -> Result<Tensor> {
        let (b, t, hidden) = h.dims3()?;
        let hd = hidden / self.num_heads;
        let qkv = self.qkv.forward(h)?;
        let heads = |i: usize| -> candle_core::Result<Tensor> {
            qkv.narrow(2, i * hidden, hidden)?
                .reshape((b, t, self.num_heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
        let logits = matmul(&q, &k.t()?)?;
        let w = softmax_f32(&logits, differentiable)?.to_dtype(v.dtype())?;
        let y = matmul(&w, &v)?.transpose(1, 2)?.reshape((b, t, hidden))?;
        Ok(self.attn_out.forward(&y)?)
    }

    /// The tanh-GELU MLP.
    fn mlp(&self, h: &Tensor) -> Result<Tensor> {
        Ok(self.mlp_out.forward(&self.mlp_in.forward(h)?.gelu()?)?)
    }
}

/// `gate[:, None] * x`.
fn gate(x: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
    x.broadcast_mul(&g.unsqueeze(1)?.to_dtype(x.dtype())?)
}

/// `FinalLayer_0`: adaLN (shift first) on the un-embedded conditioning, then a projection to `p*p*C` per token.
#[derive(Debug, Clone)]
pub struct FinalLayer {
    pub(super) ada_ln: Dense,
    pub(super) proj: Dense,
}

impl FinalLayer {
    pub fn load(l: &Loader, p: &FinalLayerParams) -> Result<Self> {
        Ok(FinalLayer {
            ada_ln: Dense::load(l, &p.ada_ln)?,
            proj: Dense::load(l, &p.proj)?,
        })
    }

    pub fn forward(&self, x: &Tensor, c: &Tensor, differentiable: bool) -> Result<Tensor> {
        let m = self.ada_ln.forward(&c.silu()?)?.chunk(2, D::Minus1)?;
        let h = modulate(&layer_norm(x, differentiable)?, &m[0], &m[1])?;
        Ok(self.proj.forward(&h)?)
    }
}
