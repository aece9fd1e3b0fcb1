//! The workflow parser and validator on arbitrary bytes: a bare API-format prompt or a `POST /prompt` body
//! (`{"prompt": {...}, "extra_data": ...}`), parsed the ways the host parses them ([`Workflow::from_json_str`] as
//! `odelt run` does, [`Prompt::from_json_str`] and the `prompt` member as `POST /prompt` does), then validated
//! against the odelt plugin (all outputs and ComfyUI's partial mode, with `partial_execution_targets` when the body
//! has them). Ok or Err, never a panic.
//!
//! The plugin is `$ODELT_FUZZ_PLUGIN`, else `../target/release/libodelt_plugin.so` (build it with
//! `cargo build --release -p odelt-plugin` first); its directories are empty scratch folders, so model and latent
//! names fail validation the way a user's typo does.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use odelt_host::validate::{validate, ValidateOptions};
use odelt_host::{HostDirs, PluginSet, Prompt, Workflow};
use serde_json::Value as Json;

fn plugins() -> &'static PluginSet {
    static SET: OnceLock<PluginSet> = OnceLock::new();
    SET.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("odelt-fuzz-wf-{}", std::process::id()));
        let dirs = HostDirs {
            models_dir: root.join("models"),
            input_dir: root.join("input"),
            output_dir: root.join("output"),
            temp_dir: root.join("temp"),
            ..HostDirs::default()
        };
        for d in [&dirs.models_dir, &dirs.input_dir, &dirs.output_dir, &dirs.temp_dir] {
            let _ = std::fs::create_dir_all(d);
        }
        let plugin = std::env::var_os("ODELT_FUZZ_PLUGIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/libodelt_plugin.so")
            });
        let mut set = PluginSet::for_host(dirs);
        if let Err(e) = set.load_file(&plugin) {
            panic!(
                "the workflow target needs the odelt plugin ({}): {e}; build it with `cargo build --release -p odelt-plugin` or set ODELT_FUZZ_PLUGIN",
                plugin.display()
            );
        }
        set
    })
}

fn check(prompt: &Prompt, targets: Option<Vec<String>>) {
    let set = plugins();
    for partial in [false, true] {
        let opts = ValidateOptions {
            targets: targets.clone(),
            partial,
        };
        match validate(prompt, set, &opts) {
            Ok(plan) => {
                let _ = format!("{plan:?}");
            }
            Err(e) => {
                let _ = e.summary();
                let _ = e.to_json().to_string();
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `odelt run`: either format.
    if let Ok(wf) = Workflow::from_json_str(text) {
        if let Ok(p) = wf.to_prompt() {
            check(&p, None);
        }
    }
    // The API-format prompt itself.
    match Prompt::from_json_str(text) {
        Ok(p) => check(&p, None),
        Err(e) => {
            let _ = e.to_comfy();
        }
    }
    // `POST /prompt`: the `prompt` member, with the body's targets.
    if let Ok(Json::Object(body)) = serde_json::from_str::<Json>(text) {
        if let Some(p) = body.get("prompt") {
            let targets = body
                .get("partial_execution_targets")
                .and_then(Json::as_array)
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                        .collect()
                });
            if let Ok(p) = Prompt::from_json(p.clone()) {
                check(&p, targets);
            }
        }
    }
});
