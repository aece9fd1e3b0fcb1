//! The project's checkpoint format: a safetensors file whose tensors keep the official Flax names and layouts, with
//! the model configuration in the header metadata.
//!
//! ```text
//! metadata: { "format": "odelt", "odelt.format_version": "1", "odelt.config": "<DitConfig JSON>", ... }
//! tensors:  "PatchEmbed_0/Conv_0/kernel" [p, p, C, H], "DiTBlock_0/Dense_1/kernel" [H, H], ...
//! ```
//!
//! Reading is lazy: opening validates the header (through a read-only memory map that touches only the header
//! pages), and each tensor the model asks for is then read with one positioned read straight into the tensor's own
//! buffer. A model loaded at a short length never reads the blocks it does not need, and no mapped file pages stay
//! counted in the process's resident memory next to the copies.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, SafeTensors};

use crate::config::DitConfig;
use crate::error::{Error, Result};
use crate::params::ParamSource;

/// Metadata key holding the configuration JSON.
pub const CONFIG_KEY: &str = "odelt.config";
/// Metadata key holding the format version.
pub const VERSION_KEY: &str = "odelt.format_version";
/// Current format version.
pub const FORMAT_VERSION: &str = "1";

/// A memory-mapped odelt safetensors checkpoint.
pub struct SafetensorsCheckpoint {
    path: PathBuf,
    file: std::sync::Mutex<File>,
    /// Name → (dtype, shape, byte range in the file).
    index: HashMap<String, (StDtype, Vec<usize>, std::ops::Range<usize>)>,
    metadata: HashMap<String, String>,
}

impl std::fmt::Debug for SafetensorsCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsCheckpoint")
            .field("path", &self.path)
            .field("tensors", &self.index.len())
            .finish()
    }
}

fn ckpt_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl SafetensorsCheckpoint {
    /// Opens and validates the header of `path` (no tensor data is read).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the map is read-only; a file truncated underneath us would fault, which is the usual mmap caveat.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (index, metadata) = {
            let st = SafeTensors::deserialize(&mmap[..])
                .map_err(|e| ckpt_err(path, format!("not a valid safetensors file: {e}")))?;
            let base = mmap.as_ptr() as usize;
            let mut index = HashMap::new();
            for (name, view) in st.tensors() {
                let data = view.data();
                let start = data.as_ptr() as usize - base;
                index.insert(
                    name,
                    (
                        view.dtype(),
                        view.shape().to_vec(),
                        start..start + data.len(),
                    ),
                );
            }
            let (_, header) = SafeTensors::read_metadata(&mmap)
                .map_err(|e| ckpt_err(path, format!("unreadable header: {e}")))?;
            let metadata = header.metadata().clone().unwrap_or_default();
            (index, metadata)
        };
        drop(mmap);
        Ok(SafetensorsCheckpoint {
            path: path.to_path_buf(),
            file: std::sync::Mutex::new(file),
            index,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Tensor names in the file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Shape of a tensor, without reading it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|(_, s, _)| s.as_slice())
    }

    /// The configuration stored in the metadata, if any.
    pub fn config(&self) -> Result<Option<DitConfig>> {
        match self.metadata.get(CONFIG_KEY) {
            None => Ok(None),
            Some(json) => serde_json::from_str(json).map(Some).map_err(|e| {
                ckpt_err(
                    &self.path,
                    format!("metadata `{CONFIG_KEY}` is not a valid configuration: {e}"),
                )
            }),
        }
    }

    /// Reads the bytes of `range` into `buf` (one positioned read).
    fn read_range(&self, range: &std::ops::Range<usize>, buf: &mut [u8]) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let mut f = self
            .file
            .lock()
            .map_err(|_| ckpt_err(&self.path, "file handle poisoned by an earlier panic"))?;
        f.seek(SeekFrom::Start(range.start as u64)).map_err(io)?;
        f.read_exact(buf).map_err(io)
    }

    /// Reads one tensor from the file into CPU memory.
    pub fn read(&self, name: &str) -> Result<Option<Tensor>> {
        let Some((dtype, shape, range)) = self.index.get(name) else {
            return Ok(None);
        };
        if *dtype == StDtype::F32 {
            // Read straight into the f32 buffer the tensor will own: one copy from the file.
            let mut v = vec![0f32; range.len() / 4];
            // SAFETY: f32 has no invalid bit patterns and u8 has alignment 1; the slice covers exactly `v`.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), v.len() * 4) };
            self.read_range(range, bytes)?;
            let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu)
                .map_err(|e| ckpt_err(&self.path, format!("tensor `{name}`: {e}")))?;
            return Ok(Some(t));
        }
        let mut buf = vec![0u8; range.len()];
        self.read_range(range, &mut buf)?;
        let bytes = &buf[..];
        let dtype = match dtype {
            StDtype::F32 => DType::F32,
            StDtype::F16 => DType::F16,
            StDtype::BF16 => DType::BF16,
            StDtype::F64 => DType::F64,
            other => {
                return Err(ckpt_err(
                    &self.path,
                    format!(
                    "tensor `{name}` has dtype {other:?}; weights must be f32, f16, bf16 or f64"
                ),
                ))
            }
        };
        let t = Tensor::from_raw_buffer(bytes, dtype, shape, &Device::Cpu)
            .map_err(|e| ckpt_err(&self.path, format!("tensor `{name}`: {e}")))?;
        Ok(Some(t))
    }
}

impl ParamSource for SafetensorsCheckpoint {
    fn get(&self, name: &str) -> Result<Option<Tensor>> {
        self.read(name)
    }
}

/// Writes `tensors` (Flax names and layouts) with `cfg` in the metadata. `extra` adds free-form metadata entries
/// (e.g. `odelt.source`, `odelt.training`).
pub fn save(
    path: &Path,
    cfg: &DitConfig,
    tensors: &[(String, Tensor)],
    extra: &[(&str, String)],
) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "odelt".to_string());
    meta.insert(VERSION_KEY.to_string(), FORMAT_VERSION.to_string());
    meta.insert(
        CONFIG_KEY.to_string(),
        serde_json::to_string(cfg).map_err(|e| Error::invalid(format!("config to JSON: {e}")))?,
    );
    for (k, v) in extra {
        meta.insert(k.to_string(), v.clone());
    }
    let contiguous: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    safetensors::serialize_to_file(
        contiguous.iter().map(|(n, t)| (n.as_str(), t)),
        Some(meta),
        path,
    )
    .map_err(|e| ckpt_err(path, format!("write failed: {e}")))?;
    Ok(())
}
