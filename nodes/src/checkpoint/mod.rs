//! Checkpoint formats: the official pickle (`.pkl`) files and the project's safetensors files, behind one [`open`].

pub mod official;
pub mod pickle;
pub mod resolve;
pub mod safetensors_format;

use std::path::Path;

use crate::config::DitConfig;
use crate::error::{Error, Result};
use crate::params::ParamSource;
pub use resolve::{resolve_config, ConfigOverrides, ShapeSource};
pub use safetensors_format::SafetensorsCheckpoint;

/// Which parameter tree of an official pickle to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WeightsSlot {
    /// `params`: what the official evaluation uses (it copies `params` into both slots when loading).
    #[default]
    Params,
    /// `params_ema`.
    ParamsEma,
}

impl std::str::FromStr for WeightsSlot {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "params" => Ok(WeightsSlot::Params),
            "params_ema" | "ema" => Ok(WeightsSlot::ParamsEma),
            other => Err(Error::invalid(format!(
                "unknown weights `{other}` (choose params or params_ema)"
            ))),
        }
    }
}

/// How to open a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub weights: WeightsSlot,
    pub overrides: ConfigOverrides,
}

/// The file formats [`open`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The official JAX/Flax training pickle.
    OfficialPickle,
    /// The project's safetensors layout.
    Safetensors,
}

/// An opened checkpoint: its resolved configuration and a lazy source of its parameters.
pub struct Checkpoint {
    pub config: DitConfig,
    pub format: Format,
    pub source: Box<dyn ParamSource + Send + Sync>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("config", &self.config)
            .field("format", &self.format)
            .finish()
    }
}

impl ShapeSource for SafetensorsCheckpoint {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.shape(name).map(<[usize]>::to_vec)
    }
}

/// The parameters of an official pickle, read into memory as f32 (a pickle cannot be read lazily; convert it to
/// the safetensors format for memory that follows the active length).
pub struct PickleParams(pub official::FlatParams);

impl ParamSource for PickleParams {
    fn get(&self, name: &str) -> Result<Option<candle_core::Tensor>> {
        let Some(a) = self.0.get(name) else {
            return Ok(None);
        };
        Ok(Some(candle_core::Tensor::from_slice(
            &a.data,
            a.shape.as_slice(),
            &candle_core::Device::Cpu,
        )?))
    }
}

impl ShapeSource for PickleParams {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.0.get(name).map(|a| a.shape.clone())
    }
}

/// Sniffs the format from the first bytes: pickles start with the PROTO opcode `0x80`, safetensors with an 8-byte
/// little-endian header length followed by `{`.
pub fn detect_format(path: &Path) -> Result<Format> {
    use std::io::Read;
    let mut head = [0u8; 9];
    let mut f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let n = f.read(&mut head).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if n >= 2 && head[0] == 0x80 {
        return Ok(Format::OfficialPickle);
    }
    if n == 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    Err(Error::Checkpoint {
        path: path.to_path_buf(),
        message: "neither an official pickle checkpoint nor a safetensors file (unrecognised first bytes)".into(),
    })
}

/// Opens a checkpoint of either format and resolves its configuration.
pub fn open(path: &Path, opts: &LoadOptions) -> Result<Checkpoint> {
    match detect_format(path)? {
        Format::Safetensors => {
            let st = SafetensorsCheckpoint::open(path)?;
            let stored = st.config()?;
            let config = resolve_config(&st, stored.as_ref(), &opts.overrides)?;
            Ok(Checkpoint {
                config,
                format: Format::Safetensors,
                source: Box::new(st),
            })
        }
        Format::OfficialPickle => {
            let params =
                official::load_official_pkl(path, opts.weights).map_err(|e| Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
            let params = PickleParams(params);
            let config = resolve_config(&params, None, &opts.overrides)?;
            Ok(Checkpoint {
                config,
                format: Format::OfficialPickle,
                source: Box::new(params),
            })
        }
    }
}

/// Converts a checkpoint (typically an official `.pkl`) into the project's safetensors format, storing the resolved
/// configuration in its metadata. Every parameter the model uses is written in f32 with its Flax name and layout
/// (the unused logvars table `Embed_0` is dropped). Returns the configuration written.
pub fn convert_to_safetensors(src: &Path, dst: &Path, opts: &LoadOptions) -> Result<DitConfig> {
    let ck = open(src, opts)?;
    let cfg = ck.config.clone();
    let mut tensors = Vec::new();
    for spec in crate::params::param_specs(&cfg, cfg.depth) {
        let t = ck
            .source
            .get(&spec.name)?
            .ok_or_else(|| Error::MissingParam {
                name: spec.name.clone(),
            })?;
        if t.dims() != spec.shape.as_slice() {
            return Err(Error::ParamShape {
                name: spec.name.clone(),
                found: t.dims().to_vec(),
                expected: spec.shape.clone(),
            });
        }
        tensors.push((spec.name, t.to_dtype(candle_core::DType::F32)?));
    }
    let source = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    safetensors_format::save(
        dst,
        &cfg,
        &tensors,
        &[
            ("odelt.converted_from", source),
            ("odelt.weights", format!("{:?}", opts.weights)),
        ],
    )?;
    Ok(cfg)
}
