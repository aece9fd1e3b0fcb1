//! The node pipeline behind the plugin's nodes: everything a ComfyUI-style graph does with this model, as plain
//! functions the (thin) plugin adapter calls.
//!
//! - [`models_dir`]: checkpoint and VAE choices under the models directory; names resolved without escaping it.
//! - [`model`]: the MODEL value ([`ModelHandle`]: a shared, lazily built checkpoint at an active length) and cheap
//!   configuration reads for validation.
//! - [`sampler`]: the sampler (LATENT in raw VAE space, NCHW; the model's latent scale applied on the way in and
//!   out), empty latents, labels.
//! - [`vae`]: the VAE value and decoding; [`image`]: pixel-space decoding and previews.
//! - [`load_image`]: LoadImage (PNG, JPEG, WebP from the input directory → IMAGE and MASK); [`image_scale`]:
//!   resizing, crop/pad, grey/RGB; [`encode`]: IMAGE → LATENT (pixels directly, latent models through the VAE's
//!   encoder); [`noise_mask`]: masks on LATENTs and their resampling to the latent's size (masked sampling).
//! - [`png`]: SaveImage/PreviewImage files (ComfyUI names, `prompt`/`workflow` text chunks);
//!   [`latent_file`]: ComfyUI `.latent` files (and where LoadLatent finds them).
//!
//! Conventions (ComfyUI's): LATENT = `[B, C, H, W]` f32 raw latents (for pixel-space models with latent scale 1:
//! the model's own space, pixels in [-1, 1]); IMAGE = `[B, H, W, C]` f32 in 0..1.

pub mod array;
pub mod device;
pub mod encode;
pub mod image;
pub mod image_scale;
pub mod latent_file;
pub mod load_image;
pub mod model;
pub mod models_dir;
pub mod noise_mask;
pub mod png;
pub mod sampler;
pub mod vae;

pub use array::Array;
pub use device::Precision;
pub use model::{LoadedCheckpoint, LoaderOptions, ModelHandle};
pub use sampler::{run_sampler, SamplerSettings};
pub use vae::VaeHandle;

/// The node class names (the plugin's nodes, and the upstream classes its validation follows links to).
pub mod class {
    /// Checkpoint loader → MODEL.
    pub const LOADER: &str = "ODEtODElCheckpointLoader";
    /// MODEL → MODEL at another active length.
    pub const DEPTH: &str = "ODElDepthSelector";
    /// MODEL → LATENT of the model's native size.
    pub const EMPTY_LATENT: &str = "ODEtEmptyLatent";
    /// The ODE_t sampler.
    pub const SAMPLER: &str = "ODEtSampler";
    /// VAE loader → VAE.
    pub const VAE_LOADER: &str = "VAELoader";
    /// LATENT (+ VAE) → IMAGE.
    pub const DECODE: &str = "ODEtDecode";
    /// IMAGE → PNG files in the output directory.
    pub const SAVE_IMAGE: &str = "SaveImage";
    /// IMAGE → PNG files in the temp directory.
    pub const PREVIEW_IMAGE: &str = "PreviewImage";
    /// `.latent` file → LATENT.
    pub const LOAD_LATENT: &str = "LoadLatent";
    /// LATENT → `.latent` file.
    pub const SAVE_LATENT: &str = "SaveLatent";
    /// Image file in the input directory → IMAGE, MASK.
    pub const LOAD_IMAGE: &str = "LoadImage";
    /// IMAGE (+ MASK) → IMAGE, MASK of another size.
    pub const IMAGE_SCALE: &str = "ImageScale";
    /// IMAGE (+ VAE) → LATENT.
    pub const ENCODE: &str = "ODEtEncode";
    /// LATENT + MASK → LATENT with a noise mask.
    pub const SET_NOISE_MASK: &str = "SetLatentNoiseMask";
}

/// Drops every cached built model and VAE decoder (the host's "free memory"); the handles stay valid and rebuild
/// on next use.
pub fn free_memory() {
    model::free_built_models();
    vae::free_vae_decoders();
    encode::free_vae_encoders();
}
