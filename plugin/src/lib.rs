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
        assert_eq!(names.len(), 10, "{names:?}");
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
