//! # odelt-plugin
//!
//! The ODE_t(ODE_l) node set for odelt hosts (and, through the host, the ComfyUI protocol). A thin adapter: each
//! node reads its inputs, calls [`odelt_nodes::pipeline`] and wraps the result. Models stay inside this library
//! behind handles (`MODEL`, `VAE`); the host caches and drops them, and "free memory" drops the models and VAE
//! decoders built from them.
//!
//! | node | inputs | output |
//! |---|---|---|
//! | `ODEtODElCheckpointLoader` | ckpt_name, weights, preset, num_heads, depth_group, depth_min, input_size, latent_scale, precision | MODEL |
//! | `ODElDepthSelector` | model, active_blocks | MODEL |
//! | `ODEtEmptyLatent` | model, batch_size | LATENT |
//! | `ODEtSampler` | model, latent_image, seed, steps, solver, tolerance, cfg, class_label, denoise, add_noise, (class_labels) | LATENT |
//! | `VAELoader` | vae_name | VAE |
//! | `ODEtDecode` | samples, (vae) | IMAGE |
//! | `SaveImage`, `PreviewImage` | images, filename_prefix | (PNG files) |
//! | `LoadLatent` / `SaveLatent` | latent / samples, filename_prefix | LATENT / (.latent file) |
//!
//! Checkpoint and VAE choices are listed from the models directory when the host loads the plugin:
//! `$ODELT_MODELS_DIR`, else `models` (relative to the working directory).

mod convert;
mod images;
mod latents;
mod loaders;
mod sampling;

use odelt_contract::NodeRegistry;

/// The plugin's nodes.
pub fn nodes() -> NodeRegistry {
    let mut r = NodeRegistry::new("odelt-plugin", env!("CARGO_PKG_VERSION"));
    loaders::register(&mut r);
    sampling::register(&mut r);
    images::register(&mut r);
    latents::register(&mut r);
    r.on_free(|_unload_models| odelt_nodes::pipeline::free_memory());
    r
}

odelt_contract::export_plugin!(nodes);
