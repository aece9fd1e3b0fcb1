//! The VAE a loader node hands out: the file and its configuration, with decoders built lazily per device (so the
//! loader itself needs no device and memory is only taken where decoding happens), dropped on "free memory".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use candle_core::DType;

use super::array::Array;
use super::device::device;
use super::models_dir;
use crate::checkpoint::SafetensorsCheckpoint;
use crate::error::{Error, Result};
use crate::vae::{to_image_bhwc01, VaeConfig, VaeDecoder};

/// Name prefixes under which VAE weights are found (diffusers files, LDM single files, ComfyUI checkpoints).
const PREFIXES: [&str; 3] = ["", "first_stage_model.", "vae."];

/// The configuration of the VAE file at `path`: a sidecar `<stem>.json` next to it (a diffusers `config.json`
/// or any subset of its keys), else `config.json` in the same folder for a `diffusion_pytorch_model*.safetensors`,
/// else the SD VAE ft-MSE. The latent channel count is taken from the weights when the file shows it.
pub fn vae_config_for(path: &Path) -> Result<VaeConfig> {
    let mut candidates = vec![path.with_extension("json")];
    let is_diffusers = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("diffusion_pytorch_model"));
    if is_diffusers {
        if let Some(dir) = path.parent() {
            candidates.push(dir.join("config.json"));
        }
    }
    let mut cfg = VaeConfig::sd_ft_mse();
    for c in candidates {
        if c.is_file() {
            let text = std::fs::read_to_string(&c).map_err(|source| Error::Io {
                path: c.clone(),
                source,
            })?;
            cfg = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
                path: c.clone(),
                message: format!("not a VAE configuration: {e}"),
            })?;
            break;
        }
    }
    if let Some(lc) = vae_latent_channels(path)? {
        cfg.latent_channels = lc;
    }
    Ok(cfg)
}

/// Latent channels of a VAE file read from its header (`decoder.conv_in.weight` is `[C_out, latent, 3, 3]`);
/// `None` when the file has no such tensor. Errors when the file is not readable safetensors.
pub fn vae_latent_channels(path: &Path) -> Result<Option<usize>> {
    let st = SafetensorsCheckpoint::open(path)?;
    for p in PREFIXES {
        if let Some(s) = st.shape(&format!("{p}decoder.conv_in.weight")) {
            if s.len() == 4 {
                return Ok(Some(s[1]));
            }
        }
    }
    Ok(None)
}

/// The VAE value.
pub struct VaeHandle {
    name: String,
    path: PathBuf,
    config: VaeConfig,
    decoders: Mutex<HashMap<String, Arc<VaeDecoder>>>,
}

impl std::fmt::Debug for VaeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaeHandle")
            .field("name", &self.name)
            .field("latent_channels", &self.config.latent_channels)
            .finish()
    }
}

fn live() -> &'static Mutex<Vec<Weak<VaeHandle>>> {
    static LIVE: OnceLock<Mutex<Vec<Weak<VaeHandle>>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(Vec::new()))
}

/// Drops every decoder built so far (the host's "free memory").
pub fn free_vae_decoders() {
    let mut l = live().lock().unwrap_or_else(|p| p.into_inner());
    l.retain(|w| w.strong_count() > 0);
    for w in l.iter() {
        if let Some(v) = w.upgrade() {
            if let Ok(mut d) = v.decoders.lock() {
                d.clear();
            }
        }
    }
}

impl VaeHandle {
    /// Resolves `vae_name` under `models_dir` and reads its configuration (header only; no weights loaded).
    pub fn open(models_dir: &Path, vae_name: &str) -> Result<Arc<VaeHandle>> {
        let path = models_dir::resolve_vae(models_dir, vae_name)?;
        let config = vae_config_for(&path)?;
        config.validate()?;
        let h = Arc::new(VaeHandle {
            name: vae_name.to_string(),
            path,
            config,
            decoders: Mutex::new(HashMap::new()),
        });
        let mut l = live().lock().unwrap_or_else(|p| p.into_inner());
        l.retain(|w| w.strong_count() > 0);
        l.push(Arc::downgrade(&h));
        Ok(h)
    }

    /// The name it was opened by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The VAE file (resolved inside the models directory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Latent channels the decoder takes.
    pub fn latent_channels(&self) -> usize {
        self.config.latent_channels
    }

    /// Whether a decoder is built for `device_name`.
    pub fn is_built(&self, device_name: &str) -> bool {
        self.decoders
            .lock()
            .map(|d| d.contains_key(device_name))
            .unwrap_or(false)
    }

    fn decoder(&self, device_name: &str) -> Result<Arc<VaeDecoder>> {
        let mut d = self.decoders.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dec) = d.get(device_name) {
            return Ok(dec.clone());
        }
        let dev = device(device_name)?;
        let dec = Arc::new(VaeDecoder::load(
            &self.path,
            &self.config,
            &dev,
            DType::F32,
        )?);
        d.insert(device_name.to_string(), dec.clone());
        Ok(dec)
    }

    /// Decodes RAW latents (NCHW, ComfyUI's LATENT) into an IMAGE `[B, H, W, 3]` in 0..1.
    pub fn decode(&self, latent: &Array, device_name: &str) -> Result<Array> {
        let [_, c, _, _] = latent.dims4("samples", "[B, C, H, W]")?;
        if c != self.config.latent_channels {
            return Err(Error::invalid(format!(
                "samples have {c} channels but the VAE {} takes {} latent channels",
                self.name, self.config.latent_channels
            )));
        }
        let dec = self.decoder(device_name)?;
        let x = latent.to_tensor(dec.device())?;
        let img = to_image_bhwc01(&dec.decode(&x)?)?;
        Array::from_tensor(&img)
    }
}
