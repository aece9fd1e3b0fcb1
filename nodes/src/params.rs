//! Where the model's weights come from, and the one list of them.
//!
//! Parameters are named by their Flax paths (`DiTBlock_3/Dense_1/kernel`) and kept in the Flax layouts (Dense kernel
//! `[in, out]`, Conv kernel `[kh, kw, in, out]`), so the official checkpoints load without any renaming and the model
//! computes `x @ kernel + bias` exactly as the reference. [`DitParams`] declares every name, shape and official init
//! once, per module, from the configuration: the model's `load` functions read through it, and [`param_specs`]
//! flattens it for everything else that lists parameters (checkpoint conversion, training init, [`random_params`]).
//! Every source (pickle, safetensors, a trainer's variables) implements [`ParamSource`]; the model asks only for the
//! tensors the requested length needs.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::config::DitConfig;
use crate::error::{Error, Result};
use crate::model::embed::FREQ_EMBED_DIM;
use crate::util::{fnv1a, XorShift};

/// A provider of named parameters (Flax paths and layouts), any float dtype, any device.
pub trait ParamSource {
    /// The tensor named `name`, or `None` when the source does not hold it.
    fn get(&self, name: &str) -> Result<Option<Tensor>>;
}

/// An in-memory set of parameters.
#[derive(Debug, Clone, Default)]
pub struct TensorMap(pub HashMap<String, Tensor>);

impl ParamSource for TensorMap {
    fn get(&self, name: &str) -> Result<Option<Tensor>> {
        Ok(self.0.get(name).cloned())
    }
}

/// How a parameter is initialised when training from scratch (spec §1.4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Xavier-uniform with the given fans.
    XavierUniform { fan_in: usize, fan_out: usize },
    /// Normal with standard deviation.
    Normal(f64),
    /// All zeros.
    Zeros,
}

/// One parameter the model expects.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

/// A Flax `Dense`: `{prefix}/kernel` `[fan_in, fan_out]` and a zero-initialised `{prefix}/bias` `[fan_out]`.
#[derive(Debug, Clone)]
pub struct DenseParams {
    pub prefix: String,
    pub fan_in: usize,
    pub fan_out: usize,
    pub kernel_init: Init,
}

impl DenseParams {
    fn new(prefix: String, fan_in: usize, fan_out: usize, kernel_init: Init) -> Self {
        DenseParams {
            prefix,
            fan_in,
            fan_out,
            kernel_init,
        }
    }

    fn xavier(prefix: String, fan_in: usize, fan_out: usize) -> Self {
        Self::new(
            prefix,
            fan_in,
            fan_out,
            Init::XavierUniform { fan_in, fan_out },
        )
    }

    pub fn kernel(&self) -> ParamSpec {
        ParamSpec {
            name: format!("{}/kernel", self.prefix),
            shape: vec![self.fan_in, self.fan_out],
            init: self.kernel_init,
        }
    }

    pub fn bias(&self) -> ParamSpec {
        ParamSpec {
            name: format!("{}/bias", self.prefix),
            shape: vec![self.fan_out],
            init: Init::Zeros,
        }
    }

    fn push_specs(&self, out: &mut Vec<ParamSpec>) {
        out.push(self.kernel());
        out.push(self.bias());
    }
}

/// `PatchEmbed_0/Conv_0`: a `p x p` convolution, kernel `[p, p, C, H]` (xavier over `p*p*C -> H`), bias `[H]`.
#[derive(Debug, Clone)]
pub struct PatchEmbedParams {
    pub patch: usize,
    pub channels: usize,
    pub hidden: usize,
}

impl PatchEmbedParams {
    pub fn kernel(&self) -> ParamSpec {
        let (p, c, h) = (self.patch, self.channels, self.hidden);
        ParamSpec {
            name: "PatchEmbed_0/Conv_0/kernel".into(),
            shape: vec![p, p, c, h],
            init: Init::XavierUniform {
                fan_in: p * p * c,
                fan_out: h,
            },
        }
    }

    pub fn bias(&self) -> ParamSpec {
        ParamSpec {
            name: "PatchEmbed_0/Conv_0/bias".into(),
            shape: vec![self.hidden],
            init: Init::Zeros,
        }
    }
}

/// `TimestepEmbedder_k`: `Dense_0` (sinusoid width -> H) and `Dense_1` (H -> H), N(0, 0.02) kernels.
#[derive(Debug, Clone)]
pub struct TimestepEmbedderParams {
    pub dense0: DenseParams,
    pub dense1: DenseParams,
}

impl TimestepEmbedderParams {
    fn new(module: &str, hidden: usize) -> Self {
        let normal = Init::Normal(0.02);
        TimestepEmbedderParams {
            dense0: DenseParams::new(format!("{module}/Dense_0"), FREQ_EMBED_DIM, hidden, normal),
            dense1: DenseParams::new(format!("{module}/Dense_1"), hidden, hidden, normal),
        }
    }
}

/// An embedding table `{module}/Embed_0/embedding` `[rows, H]`, N(0, 0.02).
#[derive(Debug, Clone)]
pub struct TableParams {
    pub module: &'static str,
    pub rows: usize,
    pub hidden: usize,
}

impl TableParams {
    pub fn table(&self) -> ParamSpec {
        ParamSpec {
            name: format!("{}/Embed_0/embedding", self.module),
            shape: vec![self.rows, self.hidden],
            init: Init::Normal(0.02),
        }
    }
}

/// `DiTBlock_i`: the adaLN projection `Dense_0` (H -> 6H), the attention's `Dense_1` (key), `Dense_2` (query),
/// `Dense_3` (value), `Dense_4` (output), and `MlpBlock_0/Dense_{0,1}`; xavier kernels.
#[derive(Debug, Clone)]
pub struct BlockParams {
    pub ada_ln: DenseParams,
    pub key: DenseParams,
    pub query: DenseParams,
    pub value: DenseParams,
    pub attn_out: DenseParams,
    pub mlp_in: DenseParams,
    pub mlp_out: DenseParams,
}

impl BlockParams {
    pub fn new(cfg: &DitConfig, index: usize) -> Self {
        let (h, m) = (cfg.hidden_size, cfg.mlp_hidden);
        let d = |name: &str, i, o| DenseParams::xavier(format!("DiTBlock_{index}/{name}"), i, o);
        BlockParams {
            ada_ln: d("Dense_0", h, 6 * h),
            key: d("Dense_1", h, h),
            query: d("Dense_2", h, h),
            value: d("Dense_3", h, h),
            attn_out: d("Dense_4", h, h),
            mlp_in: d("MlpBlock_0/Dense_0", h, m),
            mlp_out: d("MlpBlock_0/Dense_1", m, h),
        }
    }

    /// The layers in checkpoint order.
    fn denses(&self) -> [&DenseParams; 7] {
        [
            &self.ada_ln,
            &self.key,
            &self.query,
            &self.value,
            &self.attn_out,
            &self.mlp_in,
            &self.mlp_out,
        ]
    }
}

/// `FinalLayer_0`: the adaLN projection `Dense_0` (H -> 2H) and the output `Dense_1` (H -> p*p*C), both zero.
#[derive(Debug, Clone)]
pub struct FinalLayerParams {
    pub ada_ln: DenseParams,
    pub proj: DenseParams,
}

/// Every parameter of a DiT with blocks `0..blocks`, by module: the one place names, shapes and inits are declared
/// (the official tree, spec §2, minus the unused logvars table `Embed_0`).
#[derive(Debug, Clone)]
pub struct DitParams {
    pub patch_embed: PatchEmbedParams,
    pub t_embed: TimestepEmbedderParams,
    pub dt_embed: TimestepEmbedderParams,
    pub label_embed: TableParams,
    pub length_embed: Option<TableParams>,
    pub blocks: Vec<BlockParams>,
    pub final_layer: FinalLayerParams,
}

impl DitParams {
    pub fn new(cfg: &DitConfig, blocks: usize) -> Self {
        let h = cfg.hidden_size;
        DitParams {
            patch_embed: PatchEmbedParams {
                patch: cfg.patch_size,
                channels: cfg.in_channels,
                hidden: h,
            },
            t_embed: TimestepEmbedderParams::new("TimestepEmbedder_0", h),
            dt_embed: TimestepEmbedderParams::new("TimestepEmbedder_1", h),
            label_embed: TableParams {
                module: "LabelEmbedder_0",
                rows: cfg.num_classes + 1,
                hidden: h,
            },
            length_embed: cfg.length_embedding.then_some(TableParams {
                module: "BlockEmbedder_0",
                rows: cfg.depth + 1,
                hidden: h,
            }),
            blocks: (0..blocks.min(cfg.depth))
                .map(|i| BlockParams::new(cfg, i))
                .collect(),
            final_layer: FinalLayerParams {
                ada_ln: DenseParams::new("FinalLayer_0/Dense_0".into(), h, 2 * h, Init::Zeros),
                proj: DenseParams::new(
                    "FinalLayer_0/Dense_1".into(),
                    h,
                    cfg.patch_dim(),
                    Init::Zeros,
                ),
            },
        }
    }

    /// The flat list, in checkpoint order.
    pub fn specs(&self) -> Vec<ParamSpec> {
        let mut v = vec![self.patch_embed.kernel(), self.patch_embed.bias()];
        for te in [&self.t_embed, &self.dt_embed] {
            te.dense0.push_specs(&mut v);
            te.dense1.push_specs(&mut v);
        }
        v.push(self.label_embed.table());
        v.extend(self.length_embed.as_ref().map(TableParams::table));
        for b in &self.blocks {
            for d in b.denses() {
                d.push_specs(&mut v);
            }
        }
        self.final_layer.ada_ln.push_specs(&mut v);
        self.final_layer.proj.push_specs(&mut v);
        v
    }
}

/// Every parameter of the model in `cfg` with blocks `0..blocks`, in checkpoint order ([`DitParams::specs`]).
pub fn param_specs(cfg: &DitConfig, blocks: usize) -> Vec<ParamSpec> {
    DitParams::new(cfg, blocks).specs()
}

/// Deterministic random weights for every parameter of `cfg` (all blocks), in [`param_specs`] order, as f32 CPU
/// tensors, for benchmarks and tests (training starts from `train::init`): uniform with the spread of each
/// parameter's official init (the xavier bound, `std * sqrt(3)` for normals), and a spread of 0.02 for the
/// zero-initialised ones so that every op does real arithmetic. Each tensor depends only on its name and `seed`.
pub fn random_params(cfg: &DitConfig, seed: u64) -> Result<Vec<(String, Tensor)>> {
    param_specs(cfg, cfg.depth)
        .into_iter()
        .map(|s| {
            let bound = match s.init {
                Init::XavierUniform { fan_in, fan_out } => (6.0 / (fan_in + fan_out) as f64).sqrt(),
                Init::Normal(std) => std * 3f64.sqrt(),
                Init::Zeros => 0.02,
            } as f32;
            let mut rng = XorShift::new(fnv1a(&s.name) ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let n: usize = s.shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| bound * rng.next_f32()).collect();
            let t = Tensor::from_vec(v, s.shape.as_slice(), &Device::Cpu)?;
            Ok((s.name, t))
        })
        .collect()
}

/// Fetches parameters from a source, checks their shapes and moves them to the model's device and dtype.
pub struct Loader<'a> {
    src: &'a dyn ParamSource,
    device: &'a Device,
    dtype: DType,
}

impl<'a> Loader<'a> {
    pub fn new(src: &'a dyn ParamSource, device: &'a Device, dtype: DType) -> Self {
        Loader { src, device, dtype }
    }

    /// The parameter `name`, which must have `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get_any_dtype(name, shape)?;
        Ok(t.to_dtype(self.dtype)?)
    }

    /// The parameter `spec` describes, in the model dtype.
    pub fn param(&self, spec: &ParamSpec) -> Result<Tensor> {
        self.get(&spec.name, &spec.shape)
    }

    /// The parameter `spec` describes, in f32 whatever the model dtype.
    pub fn param_f32(&self, spec: &ParamSpec) -> Result<Tensor> {
        self.get_f32(&spec.name, &spec.shape)
    }

    /// The parameter `name` in f32 whatever the model dtype (for embeddings summed in f32).
    pub fn get_f32(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.get_any_dtype(name, shape)?.to_dtype(DType::F32)?)
    }

    fn get_any_dtype(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.src.get(name)?.ok_or_else(|| Error::MissingParam {
            name: name.to_string(),
        })?;
        if t.dims() != shape {
            return Err(Error::ParamShape {
                name: name.to_string(),
                found: t.dims().to_vec(),
                expected: shape.to_vec(),
            });
        }
        if !t.dtype().is_float() {
            return Err(Error::invalid(format!(
                "parameter `{name}` has dtype {:?}; a float dtype is required",
                t.dtype()
            )));
        }
        Ok(t.to_device(self.device)?)
    }

    pub fn device(&self) -> &Device {
        self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn source(&self) -> &dyn ParamSource {
        self.src
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn random_params_follow_the_specs_and_the_seed() {
        let cfg = DitConfig::golden_tiny();
        let a = random_params(&cfg, 0).unwrap();
        let b = random_params(&cfg, 0).unwrap();
        let c = random_params(&cfg, 1).unwrap();
        let specs = param_specs(&cfg, cfg.depth);
        assert_eq!(a.len(), specs.len());
        for (s, (name, t)) in specs.iter().zip(&a) {
            assert_eq!((&s.name, t.dims()), (name, s.shape.as_slice()));
        }
        for ((_, x), ((_, y), (_, z))) in a.iter().zip(b.iter().zip(&c)) {
            assert_eq!(values(x), values(y));
            assert_ne!(values(x), values(z));
        }
        let get = |n: &str| values(&a.iter().find(|(k, _)| k == n).unwrap().1);
        let k = get("DiTBlock_0/Dense_1/kernel");
        let bound = (6.0f32 / 128.0).sqrt();
        assert!(k.iter().all(|v| v.abs() <= bound));
        assert!(k.iter().any(|v| v.abs() > 0.5 * bound));
        let mean = k.iter().sum::<f32>() / k.len() as f32;
        assert!(mean.abs() < 0.1 * bound, "{mean}");
        // Zero-initialised parameters get a small spread.
        let f = get("FinalLayer_0/Dense_1/kernel");
        assert!(f.iter().all(|v| v.abs() <= 0.02) && f.iter().any(|v| *v != 0.0));
    }
}
