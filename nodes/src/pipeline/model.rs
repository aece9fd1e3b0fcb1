//! The MODEL a loader node hands out: an opened checkpoint shared behind an `Arc`, plus the active length and the
//! precision. Patching the length (the depth selector) makes a new handle over the same checkpoint — no weights
//! are copied. The sampler asks the handle for a [`Dit`]; built models are cached per device and precision, and a
//! model is built with only the blocks its length needs, so memory follows the longest length actually sampled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::SystemTime;

use candle_core::DType;

use super::device::{device, Precision};
use super::models_dir;
use crate::checkpoint::{self, ConfigOverrides, Format, LoadOptions, WeightsSlot};
use crate::config::DitConfig;
use crate::error::{Error, Result};
use crate::model::Dit;
use crate::params::ParamSource;

/// What the checkpoint loader node was asked for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoaderOptions {
    /// File name relative to the models directory.
    pub ckpt_name: String,
    /// Which parameter tree of an official pickle to read (ignored for safetensors files, which hold one).
    pub weights: WeightsSlot,
    /// Preset and explicit settings for what the checkpoint does not record (`None` = from the file/preset).
    pub overrides: ConfigOverrides,
    /// Compute precision.
    pub precision: Precision,
}

impl LoaderOptions {
    /// Options with only a name (everything else automatic).
    pub fn named(ckpt_name: &str) -> Self {
        LoaderOptions {
            ckpt_name: ckpt_name.to_string(),
            ..Default::default()
        }
    }

    /// Builds the overrides from widget values where `0` means "from the checkpoint or preset".
    pub fn overrides_from_widgets(
        preset: &str,
        num_heads: i64,
        depth_group: i64,
        depth_min: i64,
        input_size: i64,
        latent_scale: f64,
    ) -> ConfigOverrides {
        let pos = |v: i64| (v > 0).then_some(v as usize);
        ConfigOverrides {
            preset: Some(preset.to_string()),
            num_heads: pos(num_heads),
            depth_group: pos(depth_group),
            depth_min: pos(depth_min),
            input_size: pos(input_size),
            latent_scale: (latent_scale > 0.0).then_some(latent_scale),
        }
    }

    fn cache_key(&self) -> String {
        format!("{:?}|{:?}", self.weights, self.overrides)
    }
}

/// A built model on one device in one dtype (the longest length built so far).
struct Built {
    device: String,
    dtype: DType,
    dit: Dit,
}

/// An opened checkpoint: its configuration, a lazy source of its weights and the models built from it.
pub struct LoadedCheckpoint {
    name: String,
    path: PathBuf,
    config: DitConfig,
    format: Format,
    source: Box<dyn ParamSource + Send + Sync>,
    built: Mutex<Vec<Built>>,
}

impl std::fmt::Debug for LoadedCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCheckpoint")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("config", &self.config)
            .finish()
    }
}

/// Every checkpoint alive in this process, so [`free_built_models`] can reach their caches.
fn live() -> &'static Mutex<Vec<Weak<LoadedCheckpoint>>> {
    static LIVE: OnceLock<Mutex<Vec<Weak<LoadedCheckpoint>>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(Vec::new()))
}

impl LoadedCheckpoint {
    /// Opens `opts.ckpt_name` under `models_dir` (safetensors: memory-mapped header only; pickles: parsed) and
    /// resolves its configuration. Nothing is put on a device yet.
    pub fn open(models_dir: &Path, opts: &LoaderOptions) -> Result<Arc<LoadedCheckpoint>> {
        let path = models_dir::resolve_checkpoint(models_dir, &opts.ckpt_name)?;
        let ck = checkpoint::open(
            &path,
            &LoadOptions {
                weights: opts.weights,
                overrides: opts.overrides.clone(),
            },
        )?;
        remember_config(&path, opts, &ck.config);
        let lc = Arc::new(LoadedCheckpoint {
            name: opts.ckpt_name.clone(),
            path,
            config: ck.config,
            format: ck.format,
            source: ck.source,
            built: Mutex::new(Vec::new()),
        });
        let mut l = live().lock().unwrap_or_else(|p| p.into_inner());
        l.retain(|w| w.strong_count() > 0);
        l.push(Arc::downgrade(&lc));
        Ok(lc)
    }

    /// The name it was opened by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The resolved configuration.
    pub fn config(&self) -> &DitConfig {
        &self.config
    }

    /// The file format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Number of built models currently cached (one per device and precision).
    pub fn built_count(&self) -> usize {
        self.built.lock().map(|b| b.len()).unwrap_or(0)
    }

    /// Resident blocks of the model cached for `device_name` and `precision`, if any.
    pub fn built_blocks(&self, device_name: &str, precision: Precision) -> Option<usize> {
        let b = self.built.lock().ok()?;
        b.iter()
            .find(|b| b.device == canonical_device(device_name) && b.dtype == precision.dtype())
            .map(|b| b.dit.resident_blocks())
    }

    /// Drops every built model (the weights stay mapped/parsed; the next sample rebuilds).
    pub fn free_built(&self) {
        if let Ok(mut b) = self.built.lock() {
            b.clear();
        }
    }

    /// A model at length `length` on `device_name` in `precision`: a cached model that holds enough blocks is
    /// reused (cheap clone at another length); otherwise one holding exactly the blocks `length` needs is built
    /// and replaces the cached one.
    pub fn model(&self, length: usize, precision: Precision, device_name: &str) -> Result<Dit> {
        self.config.check_length(length)?;
        let dev = device(device_name)?;
        let key = canonical_device(device_name);
        let dtype = precision.dtype();
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        let need = self.config.resident_blocks(length);
        if let Some(b) = built.iter().find(|b| b.device == key && b.dtype == dtype) {
            if b.dit.resident_blocks() >= need {
                return b.dit.with_length(length);
            }
        }
        built.retain(|b| !(b.device == key && b.dtype == dtype));
        let dit = Dit::load(&self.config, &*self.source, &dev, dtype, Some(length))?;
        built.push(Built {
            device: key,
            dtype,
            dit: dit.clone(),
        });
        Ok(dit)
    }
}

fn canonical_device(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    match n.as_str() {
        "" | "cpu" => "cpu".into(),
        "cuda" => "cuda:0".into(),
        _ => n,
    }
}

/// Drops the built models of every checkpoint still alive (the host's "free memory"). Returns how many
/// checkpoints were touched.
pub fn free_built_models() -> usize {
    let mut l = live().lock().unwrap_or_else(|p| p.into_inner());
    l.retain(|w| w.strong_count() > 0);
    for w in l.iter() {
        if let Some(c) = w.upgrade() {
            c.free_built();
        }
    }
    l.len()
}

/// The MODEL value: a shared checkpoint at an active length and a precision.
#[derive(Debug, Clone)]
pub struct ModelHandle {
    /// The checkpoint (shared by every handle derived from the same loader output).
    pub inner: Arc<LoadedCheckpoint>,
    /// Active length l (number of DiT blocks in play).
    pub length: usize,
    /// Compute precision.
    pub precision: Precision,
}

impl ModelHandle {
    /// A handle at the checkpoint's full depth.
    pub fn new(inner: Arc<LoadedCheckpoint>, precision: Precision) -> Self {
        let length = inner.config.depth;
        ModelHandle {
            inner,
            length,
            precision,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DitConfig {
        &self.inner.config
    }

    /// The same checkpoint at active length `length` (must be a trained length: on the `depth_group` grid from
    /// `depth_min` up to the depth). No weights are copied.
    pub fn with_length(&self, length: usize) -> Result<ModelHandle> {
        check_active_blocks(self.config(), length)?;
        Ok(ModelHandle {
            inner: self.inner.clone(),
            length,
            precision: self.precision,
        })
    }

    /// The model to sample with (see [`LoadedCheckpoint::model`]).
    pub fn dit(&self, device_name: &str) -> Result<Dit> {
        self.inner.model(self.length, self.precision, device_name)
    }
}

/// Checks an active length against the trained grid `depth_min + k·depth_group ≤ depth`.
pub fn check_active_blocks(cfg: &DitConfig, l: usize) -> Result<()> {
    if !cfg.length_embedding {
        if l != cfg.depth {
            return Err(Error::invalid(format!(
                "this checkpoint has no length embedding: only its full depth {} runs (got {l})",
                cfg.depth
            )));
        }
        return Ok(());
    }
    let grid = cfg.trained_lengths();
    if !grid.contains(&l) {
        let why = if l > cfg.depth {
            format!("beyond the model's depth {}", cfg.depth)
        } else {
            format!(
                "off the model's length grid (depth_min {} + k·depth_group {})",
                cfg.depth_min, cfg.depth_group
            )
        };
        return Err(Error::invalid(format!(
            "active_blocks {l} is {why}; choose one of {grid:?}"
        )));
    }
    Ok(())
}

// ---- cheap configuration reads for validation -------------------------------------------------------------

/// Pickles larger than this are not parsed during validation (only a configuration remembered from an earlier
/// load is used).
pub const MAX_PICKLE_INSPECT_BYTES: u64 = 256 << 20;

type InspectKey = (PathBuf, u64, Option<SystemTime>, String);

fn inspect_cache() -> &'static Mutex<HashMap<InspectKey, DitConfig>> {
    static C: OnceLock<Mutex<HashMap<InspectKey, DitConfig>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

fn inspect_key(path: &Path, opts: &LoaderOptions) -> Option<(InspectKey, u64)> {
    let md = std::fs::metadata(path).ok()?;
    Some((
        (
            path.to_path_buf(),
            md.len(),
            md.modified().ok(),
            opts.cache_key(),
        ),
        md.len(),
    ))
}

fn remember_config(path: &Path, opts: &LoaderOptions, cfg: &DitConfig) {
    if let Some((key, _)) = inspect_key(path, opts) {
        if let Ok(mut c) = inspect_cache().lock() {
            c.insert(key, cfg.clone());
        }
    }
}

/// The configuration the loader would produce for `opts`, read cheaply: a safetensors header (no tensor data),
/// a small pickle, or what an earlier load of the same file with the same options found. Results are cached per
/// file (path, size, modification time) and options.
///
/// `Ok(None)` when it cannot be known cheaply (a large pickle never loaded); `Err` when the name is bad, the
/// file is missing, or the checkpoint cannot be resolved with these options.
pub fn inspect_config(models_dir: &Path, opts: &LoaderOptions) -> Result<Option<DitConfig>> {
    let path = models_dir::resolve_checkpoint(models_dir, &opts.ckpt_name)?;
    let Some((key, len)) = inspect_key(&path, opts) else {
        return Ok(None);
    };
    if let Some(cfg) = inspect_cache()
        .lock()
        .ok()
        .and_then(|c| c.get(&key).cloned())
    {
        return Ok(Some(cfg));
    }
    let cfg = match checkpoint::detect_format(&path)? {
        Format::Safetensors => {
            let st = checkpoint::SafetensorsCheckpoint::open(&path)?;
            let stored = st.config()?;
            checkpoint::resolve_config(&st, stored.as_ref(), &opts.overrides)?
        }
        Format::OfficialPickle => {
            if len > MAX_PICKLE_INSPECT_BYTES {
                return Ok(None);
            }
            checkpoint::open(
                &path,
                &LoadOptions {
                    weights: opts.weights,
                    overrides: opts.overrides.clone(),
                },
            )?
            .config
        }
    };
    if let Ok(mut c) = inspect_cache().lock() {
        c.insert(key, cfg.clone());
    }
    Ok(Some(cfg))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small pixel-space configuration (lengths 2, 4, 6).
    pub(crate) fn small_config() -> DitConfig {
        DitConfig {
            input_size: 8,
            in_channels: 1,
            patch_size: 2,
            hidden_size: 16,
            depth: 6,
            num_heads: 2,
            mlp_hidden: 32,
            num_classes: 3,
            depth_group: 2,
            depth_min: 2,
            length_embedding: true,
            latent_scale: 1.0,
        }
    }

    /// Writes a checkpoint of `cfg` with the library's random weights into a fresh models dir named by `tag`.
    pub(crate) fn models_dir_with(tag: &str, name: &str, cfg: &DitConfig) -> PathBuf {
        let d = std::env::temp_dir().join(format!("odelt-pipeline-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let tensors = crate::params::random_params(cfg, 0).unwrap();
        crate::checkpoint::safetensors_format::save(&d.join(name), cfg, &tensors, &[]).unwrap();
        d
    }

    #[test]
    fn memory_follows_the_longest_length_sampled() {
        let cfg = small_config();
        let dir = models_dir_with("lengths", "m.safetensors", &cfg);
        let ck = LoadedCheckpoint::open(&dir, &LoaderOptions::named("m.safetensors")).unwrap();
        let full = ModelHandle::new(ck.clone(), Precision::Fp32);
        assert_eq!(full.length, 6);
        let short = full.with_length(2).unwrap();
        assert!(
            Arc::ptr_eq(&short.inner, &full.inner),
            "patching shares the checkpoint"
        );
        assert_eq!(short.dit("cpu").unwrap().resident_blocks(), 2);
        assert_eq!(ck.built_blocks("cpu", Precision::Fp32), Some(2));
        let four = full.with_length(4).unwrap().dit("cpu").unwrap();
        assert_eq!((four.length(), four.resident_blocks()), (4, 4));
        // A shorter length reuses the longer model already built.
        let two = short.dit("cpu").unwrap();
        assert_eq!((two.length(), two.resident_blocks()), (2, 4));
        assert_eq!(ck.built_count(), 1);
        assert_eq!(free_built_models_of(&ck), 0);
        assert!(full
            .with_length(3)
            .unwrap_err()
            .to_string()
            .contains("grid"));
        assert!(full
            .with_length(8)
            .unwrap_err()
            .to_string()
            .contains("beyond"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn free_built_models_of(ck: &LoadedCheckpoint) -> usize {
        free_built_models();
        ck.built_count()
    }

    #[test]
    fn inspects_without_loading_and_reports_missing_files() {
        let cfg = small_config();
        let dir = models_dir_with("inspect", "m.safetensors", &cfg);
        let got = inspect_config(&dir, &LoaderOptions::named("m.safetensors")).unwrap();
        assert_eq!(got, Some(cfg));
        let e = inspect_config(&dir, &LoaderOptions::named("nope.safetensors")).unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
