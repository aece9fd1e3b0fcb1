//! # odelt-plugin
//!
//! The ODE_t(ODE_l) node set for odelt hosts (and, through the host, the ComfyUI protocol). A thin adapter over
//! [`odelt_nodes::pipeline`]: one module per node, each a small type implementing the contract's
//! [`Node`](odelt_contract::Node) — its descriptor, a typed parse of its inputs used by both validation and
//! execution, and a body that calls the pipeline. Models stay inside this library behind handles (`MODEL`,
//! `VAE`); the host caches and drops them, and "free memory" drops the models and VAE decoders built from them.
//!
//! | node | module | inputs → output |
//! |---|---|---|
//! | `ODEtODElCheckpointLoader` | [`checkpoint_loader`] | ckpt_name, weights, preset, num_heads, depth_group, depth_min, input_size, latent_scale, precision → MODEL |
//! | `ODElDepthSelector` | [`depth_selector`] | model, active_blocks → MODEL |
//! | `ODEtEmptyLatent` | [`empty_latent`] | model, batch_size → LATENT |
//! | `ODEtSampler` | [`sampler`] | model, latent_image, seed, steps, solver, tolerance, cfg, class_label, denoise, add_noise, (class_labels) → LATENT |
//! | `VAELoader` | [`vae_loader`] | vae_name → VAE |
//! | `ODEtDecode` | [`decode`] | samples, (vae) → IMAGE |
//! | `SaveImage`, `PreviewImage` | [`save_image`] | images, filename_prefix → (PNG files) |
//! | `LoadLatent` / `SaveLatent` | [`latent_files`] | latent / samples, filename_prefix → LATENT / (.latent file) |
//! | `LoadImage` | [`load_image`] | image → IMAGE, MASK |
//! | `ImageScale` | [`image_scale`] | image, upscale_method, width, height, crop, color, (model, vae, mask) → IMAGE, MASK |
//! | `ODEtEncode` | [`encode`] | pixels, model, mode, seed, (vae) → LATENT |
//! | `SetLatentNoiseMask` | [`noise_mask`] | samples, mask → LATENT (with a noise mask for the sampler) |
//!
//! Checkpoint and VAE choices are listed from the models directory the host names in its
//! [`HostContext`](odelt_contract::HostContext), each time the host asks for the descriptors. Validation follows
//! linked inputs back to the loaders ([`upstream`]) with the same parsers.

pub mod checkpoint_loader;
mod convert;
pub mod decode;
pub mod depth_selector;
pub mod empty_latent;
pub mod encode;
pub mod image_scale;
pub mod latent_files;
pub mod load_image;
pub mod noise_mask;
pub mod sampler;
pub mod save_image;
pub mod upstream;
pub mod vae_loader;

use odelt_contract::NodeRegistry;

/// The plugin's own value types, beside the contract's ([`odelt_contract::types`]: LATENT, IMAGE, ...).
pub mod types {
    pub use odelt_contract::types::*;
    /// An ODE_t(ODE_l) model at an active length (a handle to this plugin's [`odelt_nodes::pipeline::ModelHandle`]).
    pub const MODEL: &str = "MODEL";
    /// A KL autoencoder (a handle to this plugin's [`odelt_nodes::pipeline::VaeHandle`]).
    pub const VAE: &str = "VAE";
}

/// The plugin's nodes.
pub fn nodes() -> NodeRegistry {
    let mut r = NodeRegistry::new("odelt-plugin", env!("CARGO_PKG_VERSION"));
    r.add::<checkpoint_loader::CheckpointLoader>()
        .add::<depth_selector::DepthSelector>()
        .add::<vae_loader::VaeLoader>()
        .add::<empty_latent::EmptyLatent>()
        .add::<sampler::Sampler>()
        .add::<decode::Decode>()
        .add::<save_image::SaveImage>()
        .add::<save_image::PreviewImage>()
        .add::<latent_files::LoadLatent>()
        .add::<latent_files::SaveLatent>()
        .add::<load_image::LoadImage>()
        .add::<image_scale::ImageScale>()
        .add::<encode::Encode>()
        .add::<noise_mask::SetLatentNoiseMask>()
        .on_free(|_unload_models| {
            odelt_nodes::pipeline::free_memory();
            noise_mask::prune();
        });
    r
}

odelt_contract::export_plugin!(nodes);

#[cfg(test)]
mod tests {
    use super::*;
    use odelt_contract::abi_stable::std_types::RStr;
    use odelt_contract::{ExecContext, NamedValue, TensorBuf, Value};

    #[test]
    fn registers_every_node_with_tooltips() {
        let r = nodes();
        let info = r.object_info();
        let names: Vec<&String> = info.as_object().unwrap().keys().collect();
        assert_eq!(names.len(), 14, "{names:?}");
        for (class, n) in info.as_object().unwrap() {
            for section in ["required", "optional"] {
                if let Some(m) = n["input"][section].as_object() {
                    for (input, spec) in m {
                        assert!(
                            spec[1]["tooltip"].as_str().is_some_and(|t| !t.is_empty()),
                            "{class}.{input} has no tooltip"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn combo_lists_follow_the_host_models_dir() {
        let dir = std::env::temp_dir().join(format!("odelt-plugin-combo-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("checkpoints")).unwrap();
        std::fs::write(dir.join("checkpoints/a.safetensors"), b"").unwrap();
        let d = dir.display().to_string();
        let host = odelt_contract::HostContext {
            models_dir: RStr::from_str(&d),
            ..odelt_contract::HostContext::detached()
        };
        let info = nodes().object_info_for(&host);
        let ckpts =
            &info[odelt_nodes::pipeline::class::LOADER]["input"]["required"]["ckpt_name"][0];
        assert_eq!(ckpts, &serde_json::json!(["checkpoints/a.safetensors"]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn decodes_pixels_and_saves_pngs_without_a_host() {
        let r = nodes();
        let ctx = ExecContext::detached();
        let samples = TensorBuf::from_f32(&[1, 1, 2, 2], &[-1.0, 0.0, 0.5, 1.0]).unwrap();
        let out = r
            .execute("ODEtDecode", &[NamedValue::new("samples", samples)], &ctx)
            .unwrap();
        let Value::Tensor(img) = &out.values[0] else {
            panic!("IMAGE is a tensor")
        };
        assert_eq!(img.dims(), vec![1, 2, 2, 3]);
        assert_eq!(img.f32_values().unwrap()[3..6], [0.5, 0.5, 0.5]);

        let dir = std::env::temp_dir().join(format!("odelt-plugin-save-{}", std::process::id()));
        let dir_s = dir.display().to_string();
        let mut ctx = ExecContext::detached();
        ctx.output_dir = RStr::from_str(&dir_s);
        ctx.prompt_json = RStr::from_str(r#"{"9":{"class_type":"SaveImage","inputs":{}}}"#);
        let out = r
            .execute(
                "SaveImage",
                &[
                    NamedValue::new("images", Value::Tensor(img.clone())),
                    NamedValue::new("filename_prefix", "unit/x"),
                ],
                &ctx,
            )
            .unwrap();
        let ui: serde_json::Value =
            serde_json::from_str(out.ui.clone().into_option().unwrap().as_str()).unwrap();
        assert_eq!(ui["images"][0]["filename"], "x_00001_.png");
        assert_eq!(ui["images"][0]["subfolder"], "unit");
        let bytes = std::fs::read(dir.join("unit/x_00001_.png")).unwrap();
        assert!(bytes.windows(6).any(|w| w == b"prompt"));
        std::fs::remove_dir_all(&dir).unwrap();

        let e = r
            .execute(
                "ODEtDecode",
                &[NamedValue::new(
                    "samples",
                    TensorBuf::zeros(odelt_contract::DType::F32, &[1, 4, 2, 2]).unwrap(),
                )],
                &ExecContext::detached(),
            )
            .unwrap_err();
        assert!(e.message.contains("VAE"), "{e}");
    }
}
