//! Where the model's weights come from.
//!
//! Parameters are named by their Flax paths (`DiTBlock_3/Dense_1/kernel`) and kept in the Flax layouts (Dense kernel
//! `[in, out]`, Conv kernel `[kh, kw, in, out]`), so the official checkpoints load without any renaming and the model
//! computes `x @ kernel + bias` exactly as the reference. Every source (pickle, safetensors, a trainer's variables)
//! implements [`ParamSource`]; the model asks only for the tensors the requested length needs.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::config::DitConfig;
use crate::error::{Error, Result};

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

fn dense(out: &mut Vec<ParamSpec>, prefix: &str, fan_in: usize, fan_out: usize, kernel_init: Init) {
    let bias_init = Init::Zeros;
    out.push(ParamSpec {
        name: format!("{prefix}/kernel"),
        shape: vec![fan_in, fan_out],
        init: kernel_init,
    });
    out.push(ParamSpec {
        name: format!("{prefix}/bias"),
        shape: vec![fan_out],
        init: bias_init,
    });
}

/// Every parameter of the model in `cfg` with blocks `0..blocks` (the official tree, spec §2, minus the unused
/// logvars table `Embed_0`).
pub fn param_specs(cfg: &DitConfig, blocks: usize) -> Vec<ParamSpec> {
    let h = cfg.hidden_size;
    let xavier = |i, o| Init::XavierUniform {
        fan_in: i,
        fan_out: o,
    };
    let mut v = Vec::new();
    let p = cfg.patch_size;
    v.push(ParamSpec {
        name: "PatchEmbed_0/Conv_0/kernel".into(),
        shape: vec![p, p, cfg.in_channels, h],
        init: xavier(p * p * cfg.in_channels, h),
    });
    v.push(ParamSpec {
        name: "PatchEmbed_0/Conv_0/bias".into(),
        shape: vec![h],
        init: Init::Zeros,
    });
    for te in ["TimestepEmbedder_0", "TimestepEmbedder_1"] {
        dense(&mut v, &format!("{te}/Dense_0"), 256, h, Init::Normal(0.02));
        dense(&mut v, &format!("{te}/Dense_1"), h, h, Init::Normal(0.02));
    }
    v.push(ParamSpec {
        name: "LabelEmbedder_0/Embed_0/embedding".into(),
        shape: vec![cfg.num_classes + 1, h],
        init: Init::Normal(0.02),
    });
    if cfg.length_embedding {
        v.push(ParamSpec {
            name: "BlockEmbedder_0/Embed_0/embedding".into(),
            shape: vec![cfg.depth + 1, h],
            init: Init::Normal(0.02),
        });
    }
    for i in 0..blocks.min(cfg.depth) {
        let b = format!("DiTBlock_{i}");
        dense(&mut v, &format!("{b}/Dense_0"), h, 6 * h, xavier(h, 6 * h));
        for d in 1..=4 {
            dense(&mut v, &format!("{b}/Dense_{d}"), h, h, xavier(h, h));
        }
        dense(
            &mut v,
            &format!("{b}/MlpBlock_0/Dense_0"),
            h,
            cfg.mlp_hidden,
            xavier(h, cfg.mlp_hidden),
        );
        dense(
            &mut v,
            &format!("{b}/MlpBlock_0/Dense_1"),
            cfg.mlp_hidden,
            h,
            xavier(cfg.mlp_hidden, h),
        );
    }
    dense(&mut v, "FinalLayer_0/Dense_0", h, 2 * h, Init::Zeros);
    dense(
        &mut v,
        "FinalLayer_0/Dense_1",
        h,
        cfg.patch_dim(),
        Init::Zeros,
    );
    v
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
