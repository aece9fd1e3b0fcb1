//! The fused CPU implementation of the DiT block and the final layer (inference): the math of [`super::block`] over
//! the same weights, packed once into [`super::packed`] layers (f32, or bf16 on AVX-512 CPUs) whose
//! products carry the bias, GELU and gated residuals; LayerNorm + modulation and attention (reading q, k, v as
//! strided views of the fused projection) from [`super::fused`]. Each stage is timed by [`super::profile`]
//! (`odelt-bench --profile`).

use candle_core::{DType, Device, Tensor};

use super::block::{DitBlock, FinalLayer};
use super::fused;
use super::layers::Dense;
use super::packed::{CpuKernels, Epilogue, LnRows, PackedLinear, WeightFormat, BUFFERS};
use super::profile::Laps;
use crate::error::Result;

/// Packs a [`Dense`] (any dtype) for the fused path.
fn pack(d: &Dense, format: WeightFormat, kernels: CpuKernels) -> Result<PackedLinear> {
    let kernel = d.kernel().to_dtype(DType::F32)?;
    let (k, n) = kernel.dims2()?;
    let w = kernel.flatten_all()?.to_vec1::<f32>()?;
    let b = d.bias().to_dtype(DType::F32)?.to_vec1::<f32>()?;
    PackedLinear::pack(&w, &b, k, n, format, kernels)
}

/// The packed layer back as a [`Dense`] in `dtype` on `device`.
fn unpack(p: &PackedLinear, device: &Device, dtype: DType) -> Result<Dense> {
    let kernel =
        Tensor::from_vec(p.unpack(), (p.fan_in(), p.fan_out()), device)?.to_dtype(dtype)?;
    let bias = Tensor::from_slice(p.bias(), p.fan_out(), device)?.to_dtype(dtype)?;
    Ok(Dense::new(kernel, bias))
}

/// Runs `f` on the f32 data of a contiguous CPU tensor.
fn read<R>(t: &Tensor, what: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (guard, layout) = t.storage_and_layout();
    let data = fused::f32_slice(&guard, layout, what)?;
    f(data)
}

/// `layer(x)` for `x` `[.., K]` with the given epilogue, as a tensor `[.., N]`.
fn apply(layer: &PackedLinear, x: &Tensor, epi: Epilogue, what: &str) -> Result<Tensor> {
    let rows = x.elem_count() / layer.fan_in().max(1);
    let out = read(x, what, |xs| layer.forward(xs, rows, epi))?;
    to_tensor(out, x, layer.fan_out())
}

/// `values` as a tensor shaped like `like` with the last dimension `last`.
fn to_tensor(values: Vec<f32>, like: &Tensor, last: usize) -> Result<Tensor> {
    let mut dims = like.dims().to_vec();
    if let Some(l) = dims.last_mut() {
        *l = last;
    }
    Ok(Tensor::from_vec(values, dims, like.device())?)
}

/// The LayerNorm + modulation prologue from chunks `i` (shift) and `i + 1` (scale) of the modulation `m`
/// `[B, chunks * H]`, one row per sample of `tokens` rows.
fn modulation(m: &[f32], i: usize, chunks: usize, hidden: usize, tokens: usize) -> LnRows<'_> {
    LnRows {
        shift: &m[i * hidden..],
        scale: &m[(i + 1) * hidden..],
        stride: chunks * hidden,
        rows_per_sample: tokens,
    }
}

/// adaLN-Zero's gate for chunk `i` of the modulation `m` `[B, 6H]`, per token row of a `[B, T, H]` product.
fn gated<'a>(
    residual: &'a [f32],
    m: &'a [f32],
    i: usize,
    hidden: usize,
    tokens: usize,
) -> Epilogue<'a> {
    Epilogue::GatedResidual {
        residual,
        gate: &m[i * hidden..],
        gate_stride: 6 * hidden,
        rows_per_gate: tokens,
    }
}

/// A [`DitBlock`] computed with the fused CPU kernels: its five layers packed once ([`super::packed`]), the bias,
/// GELU and gated residuals fused into the products, attention in one task per (sample, head).
#[derive(Debug, Clone)]
pub struct FusedBlock {
    ada_ln: PackedLinear,
    qkv: PackedLinear,
    attn_out: PackedLinear,
    mlp_in: PackedLinear,
    mlp_out: PackedLinear,
    num_heads: usize,
}

impl FusedBlock {
    /// Packs `block`'s weights in `format` for `kernels`.
    pub fn new(block: &DitBlock, format: WeightFormat, kernels: CpuKernels) -> Result<Self> {
        Ok(FusedBlock {
            ada_ln: pack(&block.ada_ln, format, kernels)?,
            qkv: pack(&block.qkv, format, kernels)?,
            attn_out: pack(&block.attn_out, format, kernels)?,
            mlp_in: pack(&block.mlp_in, format, kernels)?,
            mlp_out: pack(&block.mlp_out, format, kernels)?,
            num_heads: block.num_heads,
        })
    }

    /// How the weights are stored.
    pub fn format(&self) -> WeightFormat {
        self.qkv.format()
    }

    /// The same weights as a reference [`DitBlock`] (bf16-rounded values if packed as bf16).
    pub fn to_reference(&self, device: &Device, dtype: DType) -> Result<DitBlock> {
        Ok(DitBlock {
            ada_ln: unpack(&self.ada_ln, device, dtype)?,
            qkv: unpack(&self.qkv, device, dtype)?,
            attn_out: unpack(&self.attn_out, device, dtype)?,
            mlp_in: unpack(&self.mlp_in, device, dtype)?,
            mlp_out: unpack(&self.mlp_out, device, dtype)?,
            num_heads: self.num_heads,
        })
    }

    /// Same contract as [`DitBlock::forward`] for f32 `x` and `c` (not differentiable). The intermediate
    /// activations live in buffers of the [`BUFFERS`] pool, returned when the block is done.
    pub fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let what = "fused DiT block";
        let (b, tokens, hidden) = x.dims3()?;
        let rows = b * tokens;
        let mut laps = Laps::start();
        let m = apply(&self.ada_ln, &c.silu()?, Epilogue::Bias, what)?;
        laps.lap("adaLN: silu + Dense_0 [B,H]x[H,6H]");
        let out = read(x, what, |xs| {
            read(&m, what, |ms| {
                let mut qkv = BUFFERS.take_empty(rows * 3 * hidden);
                let ln = modulation(ms, 0, 6, hidden, tokens);
                self.qkv
                    .forward_ln_into(xs, rows, ln, Epilogue::Bias, &mut qkv)?;
                laps.lap("LayerNorm + modulate, matmul qkv [BT,H]x[H,3H] + bias");

                let mut y = BUFFERS.take(rows * hidden);
                let bf16 = self.format() == WeightFormat::Bf16;
                fused::attention_into(&qkv, (b, tokens, 3 * hidden), self.num_heads, bf16, &mut y)?;
                BUFFERS.put(qkv);
                laps.lap("attention q.k^T, softmax, w.v (fused per head)");

                let mut x1 = BUFFERS.take_empty(rows * hidden);
                self.attn_out
                    .forward_into(&y, rows, gated(xs, ms, 2, hidden, tokens), &mut x1)?;
                BUFFERS.put(y);
                laps.lap("matmul attn out [BT,H]x[H,H] + bias, gate, residual");

                let ln = modulation(ms, 3, 6, hidden, tokens);
                let residual = gated(&x1, ms, 5, hidden, tokens);
                let tiles = self.mlp_in.row_tiles();
                let out = if tiles.is_some() && tiles == self.mlp_out.row_tiles() {
                    // The hidden layer goes to mlp out already packed (no row-major copy, no packing pass).
                    let u = self
                        .mlp_in
                        .forward_ln_to_tiles(&x1, rows, ln, Epilogue::BiasGelu)?;
                    laps.lap("LayerNorm + modulate, matmul mlp in [BT,H]x[H,4H] + bias, tanh-GELU");
                    self.mlp_out.forward_tiles(&u, residual)?
                } else {
                    let mut u = BUFFERS.take_empty(rows * self.mlp_in.fan_out());
                    self.mlp_in
                        .forward_ln_into(&x1, rows, ln, Epilogue::BiasGelu, &mut u)?;
                    laps.lap("LayerNorm + modulate, matmul mlp in [BT,H]x[H,4H] + bias, tanh-GELU");
                    let out = self.mlp_out.forward(&u, rows, residual)?;
                    BUFFERS.put(u);
                    out
                };
                BUFFERS.put(x1);
                laps.lap("matmul mlp out [BT,4H]x[4H,H] + bias, gate, residual");
                Ok(out)
            })
        })?;
        to_tensor(out, x, hidden)
    }
}

/// A [`FinalLayer`] computed with the fused CPU kernels (always f32: it is small and feeds the output).
#[derive(Debug, Clone)]
pub struct FusedFinalLayer {
    ada_ln: PackedLinear,
    proj: PackedLinear,
}

impl FusedFinalLayer {
    pub fn new(layer: &FinalLayer, kernels: CpuKernels) -> Result<Self> {
        Ok(FusedFinalLayer {
            ada_ln: pack(&layer.ada_ln, WeightFormat::F32, kernels)?,
            proj: pack(&layer.proj, WeightFormat::F32, kernels)?,
        })
    }

    pub fn to_reference(&self, device: &Device, dtype: DType) -> Result<FinalLayer> {
        Ok(FinalLayer {
            ada_ln: unpack(&self.ada_ln, device, dtype)?,
            proj: unpack(&self.proj, device, dtype)?,
        })
    }

    /// Same contract as [`FinalLayer::forward`] for f32 inputs (not differentiable).
    pub fn forward(&self, x: &Tensor, c: &Tensor) -> Result<Tensor> {
        let what = "fused final layer";
        let (_, tokens, hidden) = x.dims3()?;
        let rows = x.elem_count() / hidden.max(1);
        let m = apply(&self.ada_ln, &c.silu()?, Epilogue::Bias, what)?;
        read(x, what, |xs| {
            read(&m, what, |ms| {
                let ln = modulation(ms, 0, 2, hidden, tokens);
                to_tensor(
                    self.proj.forward_ln(xs, rows, ln, Epilogue::Bias)?,
                    x,
                    self.proj.fan_out(),
                )
            })
        })
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

    /// The portable kernels, plus the system BLAS in a `blas` build and the AVX-512 and AVX2 ones where this CPU has
    /// them.
    fn kernels_here() -> Vec<CpuKernels> {
        let mut ks = vec![CpuKernels::Portable];
        if CpuKernels::Blas.supported() {
            ks.push(CpuKernels::Blas);
        }
        if let d @ CpuKernels::Avx512 { .. } = CpuKernels::detect() {
            ks.push(d);
        }
        if CpuKernels::Avx2.supported() {
            ks.push(CpuKernels::Avx2);
        }
        ks
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
            for kernels in kernels_here() {
                let fused = FusedBlock::new(&blk, WeightFormat::F32, kernels).unwrap();
                let fast = fused.forward(&x, &c).unwrap();
                for differentiable in [false, true] {
                    let reference = blk.forward(&x, &c, differentiable).unwrap();
                    let err = max_abs_diff(&fast, &reference);
                    let scale = max_abs(&reference);
                    assert!(scale > 0.1, "degenerate test output");
                    assert!(
                        err < 1e-5 * scale.max(1.0),
                        "{kernels:?} hidden {hidden}: max abs diff {err}"
                    );
                }
                // Unpacking gives back the same layers.
                let back = fused.to_reference(&Device::Cpu, DType::F32).unwrap();
                assert_eq!(
                    max_abs_diff(
                        &back.forward(&x, &c, false).unwrap(),
                        &blk.forward(&x, &c, false).unwrap()
                    ),
                    0.0
                );
            }
            // bf16 weights and products: close to the f32 block at bf16's resolution.
            if CpuKernels::detect().has_bf16() {
                let fused =
                    FusedBlock::new(&blk, WeightFormat::Bf16, CpuKernels::detect()).unwrap();
                let fast = fused.forward(&x, &c).unwrap();
                let reference = blk.forward(&x, &c, false).unwrap();
                let err = max_abs_diff(&fast, &reference);
                let scale = max_abs(&reference);
                assert!(
                    err > 0.0 && err < 2e-2 * scale.max(1.0),
                    "bf16 hidden {hidden}: max abs diff {err}"
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
        let reference = fin.forward(&x, &c, true).unwrap();
        assert!(max_abs(&reference) > 1e-3, "degenerate test output");
        for kernels in kernels_here() {
            let fast = FusedFinalLayer::new(&fin, kernels)
                .unwrap()
                .forward(&x, &c)
                .unwrap();
            assert!(max_abs_diff(&fast, &reference) < 1e-5, "{kernels:?}");
        }
    }
}
