//! The adaLN-Zero DiT block and the final layer (spec §1.4).

use candle_core::{IndexOp, Tensor, D};

use super::fused::{self, Act};
use super::layers::{layer_norm, modulate, softmax_f32, Dense};
use super::profile::Laps;
use crate::error::Result;
use crate::params::Loader;

/// `DiTBlock_i`: adaLN modulation, multi-head self-attention with separate K, Q, V projections in the checkpoint (in
/// that order: `Dense_1` is K, `Dense_2` is Q, `Dense_3` is V), and a tanh-GELU MLP, each gated.
///
/// In memory the three projections are fused into one `[H, 3H]` layer with outputs `[q | k | v]`, and the query's
/// `1 / head_dim` logit scale is folded into its kernel and bias (exact when `head_dim` is a power of two, as for
/// DiT-B; otherwise within one rounding).
#[derive(Debug, Clone)]
pub struct DitBlock {
    ada_ln: Dense,
    qkv: Dense,
    attn_out: Dense,
    mlp_in: Dense,
    mlp_out: Dense,
    num_heads: usize,
}

impl DitBlock {
    pub fn load(
        l: &Loader,
        index: usize,
        hidden: usize,
        mlp_hidden: usize,
        num_heads: usize,
    ) -> Result<Self> {
        let p = format!("DiTBlock_{index}");
        let key = Dense::load(l, &format!("{p}/Dense_1"), hidden, hidden)?;
        let query = Dense::load(l, &format!("{p}/Dense_2"), hidden, hidden)?;
        let value = Dense::load(l, &format!("{p}/Dense_3"), hidden, hidden)?;
        let head_dim = hidden / num_heads.max(1);
        let query = query.scaled(1.0 / head_dim as f64)?;
        Ok(DitBlock {
            ada_ln: Dense::load(l, &format!("{p}/Dense_0"), hidden, 6 * hidden)?,
            qkv: Dense::concat_outputs(&[query, key, value])?,
            attn_out: Dense::load(l, &format!("{p}/Dense_4"), hidden, hidden)?,
            mlp_in: Dense::load(l, &format!("{p}/MlpBlock_0/Dense_0"), hidden, mlp_hidden)?,
            mlp_out: Dense::load(l, &format!("{p}/MlpBlock_0/Dense_1"), mlp_hidden, hidden)?,
            num_heads,
        })
    }

    /// `x`: `[B, T, H]`, `cond`: `[B, H]` → the block's full residual-stream output `[B, T, H]`.
    pub fn forward(&self, x: &Tensor, cond: &Tensor, differentiable: bool) -> Result<Tensor> {
        let mut laps = Laps::start();
        let m = self.ada_ln.forward(&cond.silu()?)?;
        if fused::enabled(x, differentiable) {
            laps.lap("adaLN: silu + Dense_0 [B,H]x[H,6H]");
            return self.forward_fused(x, &m, &mut laps);
        }
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

    /// The same computation with the fused CPU kernels (inference, f32): biases, GELU and gated residuals are
    /// applied in place on the matmul outputs, and attention reads q, k, v as strided views of the fused projection.
    fn forward_fused(&self, x: &Tensor, m: &Tensor, laps: &mut Laps) -> Result<Tensor> {
        let hidden = x.dim(D::Minus1)?;
        let chunk = |i: usize| m.narrow(1, i * hidden, hidden);

        let h = fused::ln_modulate(x, &chunk(0)?, &chunk(1)?)?;
        laps.lap("LayerNorm + modulate (fused)");
        let qkv = self.qkv.matmul(&h)?;
        laps.lap("matmul q|k|v [BT,H]x[H,3H]");
        fused::add_bias_(&qkv, self.qkv.bias(), Act::None)?;
        laps.lap("bias add (fused, in place)");
        let y = self.attention_fused(&qkv, laps)?;
        let x1 = self.attn_out.matmul(&y)?;
        laps.lap("matmul attn out [BT,H]x[H,H]");
        fused::gated_residual_(&x1, self.attn_out.bias(), x, &chunk(2)?)?;
        laps.lap("bias + gate + residual (fused, in place)");

        let h = fused::ln_modulate(&x1, &chunk(3)?, &chunk(4)?)?;
        laps.lap("LayerNorm + modulate (fused)");
        let u = self.mlp_in.matmul(&h)?;
        laps.lap("matmul mlp in [BT,H]x[H,4H]");
        fused::add_bias_(&u, self.mlp_in.bias(), Act::GeluTanh)?;
        laps.lap("bias + tanh-GELU (fused, in place)");
        let out = self.mlp_out.matmul(&u)?;
        laps.lap("matmul mlp out [BT,4H]x[4H,H]");
        fused::gated_residual_(&out, self.mlp_out.bias(), &x1, &chunk(5)?)?;
        laps.lap("bias + gate + residual (fused, in place)");
        Ok(out)
    }

    /// Self-attention with logits scaled by `1 / head_dim` (not its square root, folded into the query) and an f32
    /// softmax.
    fn attention(&self, h: &Tensor, differentiable: bool) -> Result<Tensor> {
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
        let logits = q.matmul(&k.t()?)?;
        let w = softmax_f32(&logits, differentiable)?.to_dtype(v.dtype())?;
        let y = w.matmul(&v)?.transpose(1, 2)?.reshape((b, t, hidden))?;
        Ok(y)
    }

    /// Attention on the fused projection output `[B, T, 3H]` (`[q | k | v]`, bias added), one sample at a time so
    /// that q, k and v stay strided views (no copies); the per-sample outputs are merged into `[B, T, H]` at once.
    fn attention_fused(&self, qkv: &Tensor, laps: &mut Laps) -> Result<Tensor> {
        let (b, t, three_h) = qkv.dims3()?;
        let nh = self.num_heads;
        let hd = three_h / 3 / nh;
        let qkv = qkv.reshape((b, t, 3, nh, hd))?;
        let mut ys = Vec::with_capacity(b);
        for i in 0..b {
            let s = qkv.i(i)?; // [T, 3, nh, hd]
            let part = |j: usize| s.i((.., j)).and_then(|p| p.transpose(0, 1)); // [nh, T, hd], strided
            let (q, k, v) = (part(0)?, part(1)?, part(2)?);
            let logits = q.matmul(&k.t()?)?; // [nh, T, T]
            laps.lap("attention q.k^T (batched matmul per sample)");
            fused::softmax_last_dim_(&logits)?;
            laps.lap("attention softmax (fused, in place)");
            ys.push(logits.matmul(&v)?); // [nh, T, hd]
            laps.lap("attention w.v (batched matmul per sample)");
        }
        let y = fused::merge_heads(&ys)?;
        laps.lap("merge heads (copy)");
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
        let mut laps = Laps::start();
        let m = self.ada_ln.forward(&c.silu()?)?.chunk(2, D::Minus1)?;
        if fused::enabled(x, differentiable) {
            let h = fused::ln_modulate(x, &m[0], &m[1])?;
            let out = self.proj.matmul(&h)?;
            fused::add_bias_(&out, self.proj.bias(), Act::None)?;
            laps.lap("final layer");
            return Ok(out);
        }
        let h = modulate(&layer_norm(x, differentiable)?, &m[0], &m[1])?;
        Ok(self.proj.forward(&h)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::DitBlock;
    use crate::params::{Loader, TensorMap};
    use crate::test_util::{max_abs, max_abs_diff};

    /// Deterministic pseudo-random tensor in [-a, a].
    fn rand(shape: &[usize], seed: u64, a: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|k| {
                a * ((k as f64 * 0.7548776662 + seed as f64 * 0.5698402909).fract() * 2.0 - 1.0)
                    as f32
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn block(hidden: usize, mlp: usize, heads: usize) -> DitBlock {
        let mut m = TensorMap::default();
        let mut seed = 1;
        let mut put = |name: &str, shape: &[usize]| {
            seed += 1;
            let a = 1.0 / (shape[0] as f32).sqrt();
            m.0.insert(format!("DiTBlock_0/{name}"), rand(shape, seed, a));
        };
        for (d, o) in [
            ("Dense_0", 6 * hidden),
            ("Dense_1", hidden),
            ("Dense_2", hidden),
            ("Dense_3", hidden),
            ("Dense_4", hidden),
        ] {
            put(&format!("{d}/kernel"), &[hidden, o]);
            put(&format!("{d}/bias"), &[o]);
        }
        put("MlpBlock_0/Dense_0/kernel", &[hidden, mlp]);
        put("MlpBlock_0/Dense_0/bias", &[mlp]);
        put("MlpBlock_0/Dense_1/kernel", &[mlp, hidden]);
        put("MlpBlock_0/Dense_1/bias", &[hidden]);
        let dev = Device::Cpu;
        DitBlock::load(&Loader::new(&m, &dev, DType::F32), 0, hidden, mlp, heads).unwrap()
    }

    #[test]
    fn fused_cpu_path_matches_generic_ops() {
        // Head dim 12 (not a power of two) exercises the folded 1/hd query scale too.
        for (hidden, heads) in [(32, 2), (48, 4)] {
            let blk = block(hidden, 4 * hidden, heads);
            let x = rand(&[3, 9, hidden], 11, 1.5);
            let c = rand(&[3, hidden], 12, 1.0);
            let fast = blk.forward(&x, &c, false).unwrap();
            let generic = blk.forward(&x, &c, true).unwrap();
            let err = max_abs_diff(&fast, &generic);
            let scale = max_abs(&generic);
            assert!(scale > 0.1, "degenerate test output");
            assert!(
                err < 1e-5 * scale.max(1.0),
                "hidden {hidden}: max abs diff {err}"
            );
        }
    }
}
