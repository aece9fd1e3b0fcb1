//! The adaLN-Zero DiT block and the final layer (spec §1.4).

use candle_core::{Tensor, D};

use super::layers::{layer_norm, modulate, softmax_f32, Dense};
use crate::error::Result;
use crate::params::Loader;

/// `DiTBlock_i`: adaLN modulation, multi-head self-attention with separate K, Q, V projections (in that order:
/// `Dense_1` is K, `Dense_2` is Q, `Dense_3` is V), and a tanh-GELU MLP, each gated.
#[derive(Debug, Clone)]
pub struct DitBlock {
    ada_ln: Dense,
    key: Dense,
    query: Dense,
    value: Dense,
    attn_out: Dense,
    mlp_in: Dense,
    mlp_out: Dense,
    num_heads: usize,
}

impl DitBlock {
    pub fn load(l: &Loader, index: usize, hidden: usize, mlp_hidden: usize, num_heads: usize) -> Result<Self> {
        let p = format!("DiTBlock_{index}");
        Ok(DitBlock {
            ada_ln: Dense::load(l, &format!("{p}/Dense_0"), hidden, 6 * hidden)?,
            key: Dense::load(l, &format!("{p}/Dense_1"), hidden, hidden)?,
            query: Dense::load(l, &format!("{p}/Dense_2"), hidden, hidden)?,
            value: Dense::load(l, &format!("{p}/Dense_3"), hidden, hidden)?,
            attn_out: Dense::load(l, &format!("{p}/Dense_4"), hidden, hidden)?,
            mlp_in: Dense::load(l, &format!("{p}/MlpBlock_0/Dense_0"), hidden, mlp_hidden)?,
            mlp_out: Dense::load(l, &format!("{p}/MlpBlock_0/Dense_1"), mlp_hidden, hidden)?,
            num_heads,
        })
    }

    /// `x`: `[B, T, H]`, `cond`: `[B, H]` → the block's full residual-stream output `[B, T, H]`.
    pub fn forward(&self, x: &Tensor, cond: &Tensor, differentiable: bool) -> Result<Tensor> {
        let m = self.ada_ln.forward(&cond.silu()?)?;
        let m = m.chunk(6, D::Minus1)?;
        let (shift_msa, scale_msa, gate_msa) = (&m[0], &m[1], &m[2]);
        let (shift_mlp, scale_mlp, gate_mlp) = (&m[3], &m[4], &m[5]);

        let h = modulate(&layer_norm(x, differentiable)?, shift_msa, scale_msa)?;
        let y = self.attention(&h, differentiable)?;
        let x = (x + gate(&self.attn_out.forward(&y)?, gate_msa)?)?;

        let h = modulate(&layer_norm(&x, differentiable)?, shift_mlp, scale_mlp)?;
        let y = self.mlp_out.forward(&self.mlp_in.forward(&h)?.gelu()?)?;
        Ok((&x + gate(&y, gate_mlp)?)?)
    }

    /// Self-attention with logits scaled by `1 / head_dim` (not its square root) and an f32 softmax.
    fn attention(&self, h: &Tensor, differentiable: bool) -> Result<Tensor> {
        let (b, t, hidden) = h.dims3()?;
        let hd = hidden / self.num_heads;
        let heads = |x: Tensor| -> candle_core::Result<Tensor> {
            x.reshape((b, t, self.num_heads, hd))?.transpose(1, 2)?.contiguous()
        };
        let k = heads(self.key.forward(h)?)?;
        let q = heads((self.query.forward(h)? / hd as f64)?)?;
        let v = heads(self.value.forward(h)?)?;
        let logits = q.matmul(&k.t()?)?;
        let w = softmax_f32(&logits, differentiable)?.to_dtype(v.dtype())?;
        let y = w.matmul(&v)?.transpose(1, 2)?.reshape((b, t, hidden))?;
        Ok(y)
    }
}

/// `gate[:, None] * x`.
fn gate(x: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
    x.broadcast_mul(&g.unsqueeze(1)?.to_dtype(x.dtype())?)
}

/// `FinalLayer_0`: adaLN (shift first) on the un-embedded conditioning, then a projection to `p*p*C` per token.
#[derive(Debug, Clone)]
pub struct FinalLayer {
    ada_ln: Dense,
    proj: Dense,
}

impl FinalLayer {
    pub fn load(l: &Loader, hidden: usize, patch_dim: usize) -> Result<Self> {
        Ok(FinalLayer {
            ada_ln: Dense::load(l, "FinalLayer_0/Dense_0", hidden, 2 * hidden)?,
            proj: Dense::load(l, "FinalLayer_0/Dense_1", hidden, patch_dim)?,
        })
    }

    pub fn forward(&self, x: &Tensor, c: &Tensor, differentiable: bool) -> Result<Tensor> {
        let m = self.ada_ln.forward(&c.silu()?)?.chunk(2, D::Minus1)?;
        let h = modulate(&layer_norm(x, differentiable)?, &m[0], &m[1])?;
        Ok(self.proj.forward(&h)?)
    }
}
