//! ODEtEncode: IMAGE `[B, H, W, C]` in 0..1 → LATENT (raw NCHW) for the model at hand.
//!
//! - Pixel-space models (1 or 3 channels, no VAE): `2x − 1` into the model's [-1, 1] range, with the channels
//!   converted to the model's (RGB → grey by BT.601 luma, grey → RGB by repetition). The exact inverse of
//!   ODEtDecode's `(x + 1) / 2` on such models, so an 8-bit image round-trips to within float rounding.
//! - Latent models: through the VAE's encoder (weights loaded on first use per device, dropped on "free memory"):
//!   the posterior's mean, or a sample drawn from a seed. Raw VAE-space latents, as every LATENT here (the
//!   model's latent scale is applied by the sampler).
//!
//! The image must already have the model's size (`input_size`, times the VAE's down-scaling factor for latent
//! models): ImageScale makes it so.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::DType;

use super::array::Array;
use super::device::device;
use super::image_scale::convert_channels;
use super::vae::VaeHandle;
use crate::config::DitConfig;
use crate::error::{Error, Result};
use crate::vae::{from_image_bhwc01, VaeEncoder};

/// How a VAE encoding is taken from the posterior.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeMode {
    /// The posterior's mean (deterministic; what ComfyUI's VAEEncode returns).
    Mean,
    /// A sample `mean + std · noise`, the noise drawn from this seed (as the training data were encoded).
    Sample(u64),
}

/// The encode modes of the node's combo.
pub const ENCODE_MODES: [&str; 2] = ["mean", "sample"];

/// Whether a model works on pixels (1 or 3 channels; decoded without a VAE).
pub fn is_pixel_space(cfg: &DitConfig) -> bool {
    cfg.in_channels == 1 || cfg.in_channels == 3
}

/// The image side a model takes: `input_size` for pixel-space models, `input_size × factor` through a VAE that
/// down-scales by `factor`.
pub fn image_side(cfg: &DitConfig, vae_factor: Option<usize>) -> usize {
    cfg.input_size * vae_factor.unwrap_or(1)
}

fn check_size(h: usize, w: usize, side: usize, what: &str) -> Result<()> {
    if (h, w) != (side, side) {
        return Err(Error::invalid(format!(
            "the image is {w}x{h} but {what} takes {side}x{side} images: scale it with ImageScale first"
        )));
    }
    Ok(())
}

/// A pixel-space model's LATENT from an IMAGE: channels converted to the model's, values `2x − 1`.
pub fn encode_pixels(img: &Array, cfg: &DitConfig) -> Result<Array> {
    let [b, h, w, _] = img.dims4("image", "[B, H, W, C]")?;
    if !is_pixel_space(cfg) {
        return Err(Error::invalid(format!(
            "the model works in a {}-channel latent space: connect a VAE to encode images for it",
            cfg.in_channels
        )));
    }
    check_size(h, w, cfg.input_size, "the model")?;
    let c = cfg.in_channels;
    let x = convert_channels(img, c)?;
    let mut out = vec![0f32; b * c * h * w];
    for bi in 0..b {
        for y in 0..h {
            for xx in 0..w {
                for k in 0..c {
                    let v = x.data[((bi * h + y) * w + xx) * c + k];
                    let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
                    out[((bi * c + k) * h + y) * w + xx] = 2.0 * v - 1.0;
                }
            }
        }
    }
    Array::new(vec![b, c, h, w], out)
}

type EncoderKey = (PathBuf, String);

fn encoders() -> &'static Mutex<HashMap<EncoderKey, Arc<VaeEncoder>>> {
    static E: OnceLock<Mutex<HashMap<EncoderKey, Arc<VaeEncoder>>>> = OnceLock::new();
    E.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Drops every VAE encoder built so far (the host's "free memory").
pub fn free_vae_encoders() {
    encoders().lock().unwrap_or_else(|p| p.into_inner()).clear();
}

fn encoder(vae: &VaeHandle, device_name: &str) -> Result<Arc<VaeEncoder>> {
    let key = (vae.path().to_path_buf(), device_name.to_string());
    let mut e = encoders().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(enc) = e.get(&key) {
        return Ok(enc.clone());
    }
    let dev = device(device_name)?;
    let enc = Arc::new(VaeEncoder::load(
        vae.path(),
        vae.config(),
        &dev,
        DType::F32,
    )?);
    e.insert(key, enc.clone());
    Ok(enc)
}

/// A latent model's LATENT (raw, NCHW) from an IMAGE through `vae`'s encoder. `cfg`, when given, is the model's
/// configuration: its channels and size are checked against the VAE and the image.
pub fn encode_with_vae(
    img: &Array,
    vae: &VaeHandle,
    cfg: Option<&DitConfig>,
    mode: EncodeMode,
    device_name: &str,
) -> Result<Array> {
    let [_, h, w, _] = img.dims4("image", "[B, H, W, C]")?;
    let vc = vae.config();
    if let Some(cfg) = cfg {
        if cfg.in_channels != vc.latent_channels {
            return Err(Error::invalid(format!(
                "the VAE {} makes {} latent channels but the model takes {}",
                vae.name(),
                vc.latent_channels,
                cfg.in_channels
            )));
        }
        check_size(
            h,
            w,
            image_side(cfg, Some(vc.downscale_factor())),
            "the model with this VAE",
        )?;
    }
    let x = convert_channels(img, vc.in_channels)?;
    let enc = encoder(vae, device_name)?;
    // On the CPU; the encoder moves its input to its own device.
    let t = from_image_bhwc01(&x.to_tensor(&candle_core::Device::Cpu)?)?;
    let post = enc.encode(&t)?;
    let z = match mode {
        EncodeMode::Mean => post.mode().clone(),
        EncodeMode::Sample(seed) => post.sample(seed)?,
    };
    Array::from_tensor(&z)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_map_to_the_model_range_and_channels() {
        let cfg = DitConfig {
            input_size: 2,
            in_channels: 1,
            ..DitConfig::golden_tiny()
        };
        let img = Array::new(
            vec![1, 2, 2, 3],
            vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 1.0, 0.0, 0.0],
        )
        .unwrap();
        let z = encode_pixels(&img, &cfg).unwrap();
        assert_eq!(z.shape, vec![1, 1, 2, 2]);
        assert_eq!(&z.data[..3], &[-1.0, 1.0, 0.0]);
        assert!((z.data[3] - (2.0 * 0.299 - 1.0)).abs() < 1e-6);
        let e = encode_pixels(&Array::new(vec![1, 3, 3, 3], vec![0.0; 27]).unwrap(), &cfg)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3x3") && e.contains("ImageScale"), "{e}");
        let latent = DitConfig {
            in_channels: 4,
            ..cfg
        };
        assert!(encode_pixels(&img, &latent)
            .unwrap_err()
            .to_string()
            .contains("VAE"));
    }
}
