//! The fused CPU implementation of the DiT block and the final layer (inference, f32): the math of [`super::block`]
//! over the same weights, with the element-wise work done by the kernels of [`super::fused`] (biases, GELU, gated
//! residuals and the softmax in place on the matmul outputs; attention reading q, k, v as strided views of the fused
//! projection). Each stage is timed by [`super::profile`] (`odelt-bench --profile`).

use candle_core::{Tensor, D};

use super::block::{DitBlock, FinalLayer};
use super::fused::{self, Act};
use super::profile::Laps;
use crate::error::Result;

/// A [`DitBlock`] computed with the fused CPU kernels.
#[derive(Debug, Clone)]
pub struct FusedBlock(DitBlock);

impl FusedBlock {
    pub fn new(block: DitBlock) -> Self {
        FusedBlock(block)
    }

    pub fn weights(&self) -> &DitBlock {
        &self.0
    }

    /// Same contract as [`DitBlock::forward`] (not differentiable).
    pub fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let w = &self.0;
        let mut laps = Laps::start();
        let m = w.ada_ln.forward(&c.silu()?)?;
        laps.lap("adaLN: silu + Dense_0 [B,H]x[H,6H]");
        let hidden = x.dim(D::Minus1)?;
        let chunk = |i: usize| m.narrow(1, i * hidden, hidden);

        let h = fused::ln_modulate(x, &chunk(0)?, &chunk(1)?)?;
        laps.lap("LayerNorm + modulate (fused)");
        let qkv = w.qkv.matmul(&h)?;
        laps.lap("matmul q|k|v [BT,H]x[H,3H]");
        fused::add_bias_(&qkv, w.qkv.bias(), Act::None)?;
        laps.lap("bias add (fused, in place)");
        let y = self.attention(&qkv, &mut laps)?;
        let x1 = w.attn_out.matmul(&y)?;
        laps.lap("matmul attn out [BT,H]x[H,H]");
        fused::gated_residual_(&x1, w.attn_out.bias(), x, &chunk(2)?)?;
        laps.lap("bias + gate + residual (fused, in place)");

        let h = fused::ln_modulate(&x1, &chunk(3)?, &chunk(4)?)?;
        laps.lap("LayerNorm + modulate (fused)");
        let u = w.mlp_in.matmul(&h)?;
        laps.lap("matmul mlp in [BT,H]x[H,4H]");
        fused::add_bias_(&u, w.mlp_in.bias(), Act::GeluTanh)?;
        laps.lap("bias + tanh-GELU (fused, in place)");
        let out = w.mlp_out.matmul(&u)?;
        laps.lap("matmul mlp out [BT,4H]x[4H,H]");
        fused::gated_residual_(&out, w.mlp_out.bias(), &x1, &chunk(5)?)?;
        laps.lap("bias + gate + residual (fused, in place)");
        Ok(out)
    }

    /// Attention on the fused projection output `[B, T, 3H]` (`[q | k | v]`, bias added): one fused kernel per
    /// (sample, head), [`fused::attention`].
    fn attention(&self, qkv: &Tensor, laps: &mut Laps) -> Result<Tensor> {
        let y = fused::attention(qkv, self.0.num_heads)?;
        laps.lap("attention q.k^T, softmax, w.v (fused per head)");
        Ok(y)
    }
}

/// A [`FinalLayer`] computed with the fused CPU kernels.
#[derive(Debug, Clone)]
pub struct FusedFinalLayer(FinalLayer);

impl FusedFinalLayer {
    pub fn new(layer: FinalLayer) -> Self {
        FusedFinalLayer(layer)
    }

    pub fn weights(&self) -> &FinalLayer {
        &self.0
    }

    /// Same contract as [`FinalLayer::forward`] (not differentiable).
    pub fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let w = &self.0;
        let m = w.ada_ln.forward(&c.silu()?)?.chunk(2, D::Minus1)?;
        let h = fused::ln_modulate(x, &m[0], &m[1])?;
        let out = w.proj.matmul(&h)?;
        fused::add_bias_(&out, w.proj.bias(), Act::None)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::config::DitConfig;
    use crate::params::{random_params, BlockParams, DitParams, Loader, TensorMap};
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

    fn config(hidden: usize, heads: usize) -> DitConfig {
        DitConfig {
            hidden_size: hidden,
            num_heads: heads,
            mlp_hidden: 4 * hidden,
            ..DitConfig::golden_tiny()
        }
    }

    fn weights(cfg: &DitConfig) -> TensorMap {
        TensorMap(random_params(cfg, 5).unwrap().into_iter().collect())
    }

    #[test]
    fn fused_block_matches_the_reference_ops() {
        // Head dim 12 (not a power of two) exercises the folded 1/hd query scale too.
        for (hidden, heads) in [(32, 2), (48, 4)] {
            let cfg = config(hidden, heads);
            let m = weights(&cfg);
            let l = Loader::new(&m, &Device::Cpu, DType::F32);
            let blk = DitBlock::load(&l, &BlockParams::new(&cfg, 0), heads).unwrap();
            let x = rand(&[3, 9, hidden], 11, 1.5);
            let c = rand(&[3, hidden], 12, 1.0);
            let fast = FusedBlock::new(blk.clone()).forward(&x, &c).unwrap();
            for differentiable in [false, true] {
                let reference = blk.forward(&x, &c, differentiable).unwrap();
                let err = max_abs_diff(&fast, &reference);
                let scale = max_abs(&reference);
                assert!(scale > 0.1, "degenerate test output");
                assert!(
                    err < 1e-5 * scale.max(1.0),
                    "hidden {hidden}: max abs diff {err}"
                );
            }
        }
    }

    #[test]
    fn fused_final_layer_matches_the_reference_ops() {
        let cfg = config(32, 2);
        let m = weights(&cfg);
        let l = Loader::new(&m, &Device::Cpu, DType::F32);
        let fin = FinalLayer::load(&l, &DitParams::new(&cfg, 0).final_layer).unwrap();
        let x = rand(&[2, 16, 32], 3, 1.0);
        let c = rand(&[2, 32], 4, 1.0);
        let fast = FusedFinalLayer::new(fin.clone()).forward(&x, &c).unwrap();
        let reference = fin.forward(&x, &c, true).unwrap();
        assert!(max_abs(&reference) > 1e-3, "degenerate test output");
        assert!(max_abs_diff(&fast, &reference) < 1e-5);
    }
}
