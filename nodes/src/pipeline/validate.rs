//! Checks run before anything executes, on the JSON map of a node's inputs as the host passes it to a node's
//! validation hook: literal inputs as plain JSON values, linked inputs (when the host supports it) as
//! `{"$link": [src_id, out_index], "class_type": "<upstream class>", "inputs": {<upstream's map, same rules>}}`.
//! Following those links the checks see the upstream loader's literals (and read the checkpoint's configuration
//! cheaply, [`inspect_config`]), so a length off the model's grid or a VAE of the wrong latent width is reported
//! on the node concerned before any weights are read.
//!
//! Where a check needs something it cannot know (a link the host did not describe, an upstream input that is
//! itself linked, a large pickle never loaded), it is skipped: the run-time checks catch the rest.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::class;
use super::model::{check_active_blocks, inspect_config, LoaderOptions};
use super::models_dir;
use super::png::save_target_shape;
use super::sampler::{check_class_label, parse_class_labels};
use super::vae::vae_latent_channels;
use super::{device::Precision, latent_file};
use crate::config::DitConfig;
use crate::solver::SolverKind;

/// One problem: the input concerned ("" for the node as a whole) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub input: String,
    pub message: String,
}

impl Issue {
    fn new(input: &str, message: impl Into<String>) -> Self {
        Issue {
            input: input.to_string(),
            message: message.into(),
        }
    }
}

/// How deep links are followed.
const MAX_DEPTH: usize = 16;

/// A linked input as the host describes it.
#[derive(Debug, Clone, Copy)]
pub struct Link<'a> {
    pub class_type: &'a str,
    pub inputs: &'a Map<String, Value>,
}

/// The link description in `v`, if `v` is one.
pub fn as_link(v: &Value) -> Option<Link<'_>> {
    let o = v.as_object()?;
    o.get("$link")?;
    Some(Link {
        class_type: o.get("class_type")?.as_str()?,
        inputs: o.get("inputs")?.as_object()?,
    })
}

/// Whether input `name` is a link (described or not).
fn is_linked(map: &Map<String, Value>, name: &str) -> bool {
    match map.get(name) {
        Some(Value::Object(o)) => o.contains_key("$link"),
        Some(Value::Array(a)) => a.len() == 2 && a[0].is_string(),
        _ => false,
    }
}

/// Host directories for validation: from a `"$context"` object in the map (`models_dir`, `output_dir`) when the
/// host provides one, else the defaults ([`models_dir::default_models_dir`], no output directory).
#[derive(Debug, Clone)]
pub struct Dirs {
    pub models: PathBuf,
    pub output: Option<PathBuf>,
}

impl Dirs {
    /// Reads the dirs from `map`'s `"$context"` (falling back to the defaults).
    pub fn of(map: &Map<String, Value>) -> Dirs {
        let ctx = map.get("$context").and_then(Value::as_object);
        let get = |k: &str| {
            ctx.and_then(|c| c.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        };
        Dirs {
            models: get("models_dir").unwrap_or_else(models_dir::default_models_dir),
            output: get("output_dir"),
        }
    }
}

fn lit_str<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    map.get(name).and_then(Value::as_str)
}

fn lit_i64(map: &Map<String, Value>, name: &str) -> Option<i64> {
    map.get(name)
        .and_then(|v| v.as_i64().or_else(|| v.as_u64().map(|u| u as i64)))
}

fn lit_f64(map: &Map<String, Value>, name: &str) -> Option<f64> {
    map.get(name).and_then(Value::as_f64)
}

/// The loader's options from its literal inputs (absent ones take their defaults). `None` when one of them is
/// linked (unknown before running) or has the wrong JSON type.
pub fn loader_options(map: &Map<String, Value>) -> Option<LoaderOptions> {
    for k in [
        "ckpt_name",
        "weights",
        "preset",
        "num_heads",
        "depth_group",
        "depth_min",
        "input_size",
        "latent_scale",
        "precision",
    ] {
        if is_linked(map, k) {
            return None;
        }
    }
    let int = |k: &str| match map.get(k) {
        None => Some(0),
        Some(_) => lit_i64(map, k),
    };
    let ckpt_name = lit_str(map, "ckpt_name")?.to_string();
    let weights = lit_str(map, "weights").unwrap_or("params").parse().ok()?;
    let precision: Precision = lit_str(map, "precision").unwrap_or("fp32").parse().ok()?;
    let latent_scale = match map.get("latent_scale") {
        None => 0.0,
        Some(_) => lit_f64(map, "latent_scale")?,
    };
    Some(LoaderOptions {
        ckpt_name,
        weights,
        overrides: LoaderOptions::overrides_from_widgets(
            lit_str(map, "preset").unwrap_or("auto"),
            int("num_heads")?,
            int("depth_group")?,
            int("depth_min")?,
            int("input_size")?,
            latent_scale,
        ),
        precision,
    })
}

/// What validation can know of a MODEL link: the configuration and the active length.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub config: DitConfig,
    pub length: usize,
}

/// Follows a MODEL link back to the loader (through depth selectors).
pub fn model_info(dirs: &Dirs, v: &Value) -> Option<ModelInfo> {
    model_info_depth(dirs, v, MAX_DEPTH)
}

fn model_info_depth(dirs: &Dirs, v: &Value, depth: usize) -> Option<ModelInfo> {
    if depth == 0 {
        return None;
    }
    let link = as_link(v)?;
    match link.class_type {
        class::LOADER => {
            let opts = loader_options(link.inputs)?;
            let config = inspect_config(&dirs.models, &opts).ok()??;
            Some(ModelInfo {
                length: config.depth,
                config,
            })
        }
        class::DEPTH => {
            let mut mi = model_info_depth(dirs, link.inputs.get("model")?, depth - 1)?;
            match lit_i64(link.inputs, "active_blocks") {
                Some(0) => mi.length = mi.config.depth,
                Some(l) if l > 0 => mi.length = l as usize,
                _ => return None,
            }
            Some(mi)
        }
        _ => None,
    }
}

/// What validation can know of a LATENT link: channels and (for model-made latents) the side.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentInfo {
    pub channels: usize,
    pub size: Option<(usize, usize)>,
    /// Where the knowledge comes from (for messages).
    pub source: String,
}

/// Follows a LATENT link to a model (sampler, empty latent) or a `.latent` file.
pub fn latent_info(dirs: &Dirs, v: &Value) -> Option<LatentInfo> {
    latent_info_depth(dirs, v, MAX_DEPTH)
}

fn latent_info_depth(dirs: &Dirs, v: &Value, depth: usize) -> Option<LatentInfo> {
    if depth == 0 {
        return None;
    }
    let link = as_link(v)?;
    match link.class_type {
        class::SAMPLER | class::EMPTY_LATENT => {
            let mi = model_info_depth(dirs, link.inputs.get("model")?, depth - 1)?;
            Some(LatentInfo {
                channels: mi.config.in_channels,
                size: Some((mi.config.input_size, mi.config.input_size)),
                source: format!("the model's {} channels", mi.config.in_channels),
            })
        }
        class::LOAD_LATENT => {
            let path = resolve_latent_file(dirs.output.as_deref(), lit_str(link.inputs, "latent")?)
                .ok()?;
            let s = latent_file::latent_shape(&path).ok()?;
            (s.len() == 4).then(|| LatentInfo {
                channels: s[1],
                size: Some((s[2], s[3])),
                source: format!("the .latent file's {} channels", s[1]),
            })
        }
        _ => None,
    }
}

/// Where LoadLatent finds `name`: an absolute path as given; a relative one under the output directory (where
/// SaveLatent writes) or `$ODELT_INPUT_DIR`. Relative names may not contain `..`.
pub fn resolve_latent_file(output_dir: Option<&Path>, name: &str) -> crate::Result<PathBuf> {
    if name.trim().is_empty() {
        return Err(crate::Error::Invalid("no .latent file given".into()));
    }
    let p = Path::new(name);
    if p.is_absolute() {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(crate::Error::Invalid(format!(
                "latent file {name:?} not found"
            )))
        };
    }
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(crate::Error::Invalid(format!(
            "latent file name {name:?} contains `..`"
        )));
    }
    let mut looked = Vec::new();
    let input = std::env::var_os("ODELT_INPUT_DIR").map(PathBuf::from);
    for dir in [output_dir.map(Path::to_path_buf), input]
        .into_iter()
        .flatten()
    {
        let cand = dir.join(p);
        if cand.is_file() {
            return Ok(cand);
        }
        looked.push(dir.display().to_string());
    }
    Err(crate::Error::Invalid(format!(
        "latent file {name:?} not found (looked in {})",
        if looked.is_empty() {
            "no directory: give an absolute path".to_string()
        } else {
            looked.join(", ")
        }
    )))
}

// ---- per node ----------------------------------------------------------------------------------------------

/// The checkpoint loader: the name must resolve inside the models directory and the checkpoint must resolve to a
/// configuration with the given preset and overrides.
pub fn checkpoint_loader(map: &Map<String, Value>) -> Vec<Issue> {
    let dirs = Dirs::of(map);
    let Some(name) = lit_str(map, "ckpt_name") else {
        return vec![];
    };
    if let Err(e) = models_dir::resolve_checkpoint(&dirs.models, name) {
        return vec![Issue::new("ckpt_name", e.to_string())];
    }
    let Some(opts) = loader_options(map) else {
        return vec![];
    };
    match inspect_config(&dirs.models, &opts) {
        Ok(_) => vec![],
        Err(e) => vec![Issue::new("ckpt_name", e.to_string())],
    }
}

/// The depth selector: `active_blocks` (0 = full depth) must be on the linked model's length grid.
pub fn depth_selector(map: &Map<String, Value>) -> Vec<Issue> {
    let dirs = Dirs::of(map);
    let Some(l) = lit_i64(map, "active_blocks") else {
        return vec![];
    };
    if l < 0 {
        return vec![Issue::new("active_blocks", format!("{l} is negative"))];
    }
    let Some(mi) = map.get("model").and_then(|m| model_info(&dirs, m)) else {
        return vec![];
    };
    if l == 0 {
        return vec![];
    }
    match check_active_blocks(&mi.config, l as usize) {
        Ok(()) => vec![],
        Err(e) => vec![Issue::new("active_blocks", e.to_string())],
    }
}

/// The sampler: steps, tolerance, labels against the model's classes, the latent's shape against the model.
pub fn sampler(map: &Map<String, Value>) -> Vec<Issue> {
    let dirs = Dirs::of(map);
    let mut out = Vec::new();
    if let Some(s) = lit_i64(map, "steps") {
        if s < 1 {
            out.push(Issue::new(
                "steps",
                format!("steps must be at least 1 (got {s})"),
            ));
        }
    }
    let solver = lit_str(map, "solver").and_then(|s| s.parse::<SolverKind>().ok());
    if let (Some(SolverKind::Dopri5), Some(tol)) = (solver, lit_f64(map, "tolerance")) {
        if !(tol > 0.0 && tol.is_finite()) {
            out.push(Issue::new(
                "tolerance",
                format!("dopri5 needs a tolerance > 0 (got {tol})"),
            ));
        }
    }
    let labels = match lit_str(map, "class_labels").map(str::trim) {
        Some(s) if !s.is_empty() => match parse_class_labels(s) {
            Ok(l) => Some(l),
            Err(e) => {
                out.push(Issue::new("class_labels", e.to_string()));
                None
            }
        },
        _ => None,
    };
    let Some(mi) = map.get("model").and_then(|m| model_info(&dirs, m)) else {
        return out;
    };
    let nc = mi.config.num_classes;
    if let Some(l) = lit_i64(map, "class_label") {
        if let Err(e) = check_class_label(l, nc) {
            out.push(Issue::new("class_label", e.to_string()));
        }
    }
    for l in labels.unwrap_or_default() {
        if let Err(e) = check_class_label(l, nc) {
            out.push(Issue::new("class_labels", e.to_string()));
            break;
        }
    }
    if let Some(li) = map.get("latent_image").and_then(|v| latent_info(&dirs, v)) {
        let s = mi.config.input_size;
        if li.channels != mi.config.in_channels || li.size.is_some_and(|sz| sz != (s, s)) {
            out.push(Issue::new(
                "latent_image",
                format!(
                    "the latent ({}, {}) does not fit the model, which takes [B, {}, {s}, {s}]",
                    li.source,
                    li.size
                        .map_or("size unknown".into(), |(h, w)| format!("{h}x{w}")),
                    mi.config.in_channels
                ),
            ));
        }
    }
    out
}

/// The VAE loader: the name must resolve inside the models directory to a readable VAE file.
pub fn vae_loader(map: &Map<String, Value>) -> Vec<Issue> {
    let dirs = Dirs::of(map);
    let Some(name) = lit_str(map, "vae_name") else {
        return vec![];
    };
    match models_dir::resolve_vae(&dirs.models, name).and_then(|p| vae_latent_channels(&p)) {
        Ok(_) => vec![],
        Err(e) => vec![Issue::new("vae_name", e.to_string())],
    }
}

fn vae_channels(dirs: &Dirs, v: &Value) -> Option<(usize, String)> {
    let link = as_link(v)?;
    if link.class_type != class::VAE_LOADER {
        return None;
    }
    let name = lit_str(link.inputs, "vae_name")?;
    let path = models_dir::resolve_vae(&dirs.models, name).ok()?;
    Some((vae_latent_channels(&path).ok()??, name.to_string()))
}

/// The decoder: the VAE's latent channels must match the samples (the model's channels); latent-space samples
/// need a VAE.
pub fn decode(map: &Map<String, Value>) -> Vec<Issue> {
    let dirs = Dirs::of(map);
    let Some(li) = map.get("samples").and_then(|v| latent_info(&dirs, v)) else {
        return vec![];
    };
    match map.get("vae") {
        Some(v) => match vae_channels(&dirs, v) {
            Some((c, name)) if c != li.channels => vec![Issue::new(
                "vae",
                format!(
                    "VAE {name:?} takes {c} latent channels but the samples have {} ({})",
                    li.channels, li.source
                ),
            )],
            _ => vec![],
        },
        None if li.channels != 1 && li.channels != 3 => vec![Issue::new(
            "vae",
            format!(
                "the samples have {} channels ({}): a latent-space model needs a VAE to decode",
                li.channels, li.source
            ),
        )],
        None => vec![],
    }
}

/// SaveImage / PreviewImage / SaveLatent: the prefix must stay inside the output directory.
pub fn save_prefix(map: &Map<String, Value>) -> Vec<Issue> {
    match lit_str(map, "filename_prefix") {
        Some(p) => match save_target_shape(p) {
            Ok(_) => vec![],
            Err(e) => vec![Issue::new("filename_prefix", e.to_string())],
        },
        None => vec![],
    }
}

/// LoadLatent: the file must exist (relative names need the host's output directory in `$context`).
pub fn load_latent(map: &Map<String, Value>) -> Vec<Issue> {
    let dirs = Dirs::of(map);
    let Some(name) = lit_str(map, "latent") else {
        return vec![];
    };
    let relative_unknowable = !Path::new(name).is_absolute()
        && dirs.output.is_none()
        && std::env::var_os("ODELT_INPUT_DIR").is_none();
    if relative_unknowable && !name.contains("..") && !name.trim().is_empty() {
        return vec![];
    }
    match resolve_latent_file(dirs.output.as_deref(), name)
        .and_then(|p| latent_file::latent_shape(&p))
    {
        Ok(_) => vec![],
        Err(e) => vec![Issue::new("latent", e.to_string())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::model::tests::{models_dir_with, small_config};
    use serde_json::json;

    fn loader(dir: &Path, name: &str) -> Value {
        json!({"$link": ["1", 0], "class_type": class::LOADER, "inputs": {
            "$context": {"models_dir": dir},
            "ckpt_name": name, "weights": "params", "preset": "auto", "num_heads": 0, "depth_group": 0,
            "depth_min": 0, "input_size": 0, "latent_scale": 0.0, "precision": "fp32"}})
    }

    fn with_ctx(dir: &Path, v: Value) -> Map<String, Value> {
        let mut m = v.as_object().unwrap().clone();
        m.insert("$context".into(), json!({"models_dir": dir}));
        m
    }

    #[test]
    fn follows_links_to_the_loader() {
        let dir = models_dir_with("validate", "m.safetensors", &small_config());
        let m = with_ctx(
            &dir,
            json!({"model": loader(&dir, "m.safetensors"), "active_blocks": 3}),
        );
        let issues = depth_selector(&m);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].input, "active_blocks");
        assert!(issues[0].message.contains("grid"));
        let m = with_ctx(
            &dir,
            json!({"model": loader(&dir, "m.safetensors"), "active_blocks": 4}),
        );
        assert!(depth_selector(&m).is_empty());
        let m = with_ctx(
            &dir,
            json!({"model": loader(&dir, "m.safetensors"), "active_blocks": 0}),
        );
        assert!(depth_selector(&m).is_empty());
        // Unknown upstream (a plain link) skips the check.
        let m = with_ctx(&dir, json!({"model": ["1", 0], "active_blocks": 3}));
        assert!(depth_selector(&m).is_empty());

        let selector = json!({"$link": ["2", 0], "class_type": class::DEPTH,
                              "inputs": {"model": loader(&dir, "m.safetensors"), "active_blocks": 2}});
        let empty = json!({"$link": ["3", 0], "class_type": class::EMPTY_LATENT,
                           "inputs": {"model": selector.clone(), "batch_size": 2}});
        let m = with_ctx(
            &dir,
            json!({"model": selector, "latent_image": empty, "steps": 0,
                                      "class_label": 3, "class_labels": "", "solver": "euler"}),
        );
        let issues = sampler(&m);
        let inputs: Vec<&str> = issues.iter().map(|i| i.input.as_str()).collect();
        assert_eq!(inputs, ["steps", "class_label"], "{issues:?}");

        let sampler_link = json!({"$link": ["4", 0], "class_type": class::SAMPLER,
                                  "inputs": {"model": loader(&dir, "m.safetensors")}});
        let m = with_ctx(&dir, json!({"samples": sampler_link.clone()}));
        assert!(decode(&m).is_empty(), "pixel models decode without a VAE");
        let m = with_ctx(
            &dir,
            json!({"samples": sampler_link, "vae": {"$link": ["5", 0],
            "class_type": class::VAE_LOADER, "inputs": {"vae_name": "missing.safetensors"}}}),
        );
        assert!(
            decode(&m).is_empty(),
            "an unreadable VAE is the loader's problem"
        );

        let m = with_ctx(&dir, json!({"ckpt_name": "../m.safetensors"}));
        assert_eq!(checkpoint_loader(&m)[0].input, "ckpt_name");
        let m = with_ctx(
            &dir,
            json!({"ckpt_name": "m.safetensors", "preset": "dit-xl"}),
        );
        assert!(
            checkpoint_loader(&m)[0].message.contains("preset"),
            "a contradicting preset"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn save_prefix_and_latent_names() {
        let m = json!({"filename_prefix": "../x"});
        assert_eq!(save_prefix(m.as_object().unwrap()).len(), 1);
        let m = json!({"filename_prefix": "a/b"});
        assert!(save_prefix(m.as_object().unwrap()).is_empty());
        assert!(resolve_latent_file(None, "../x.latent").is_err());
        assert!(resolve_latent_file(None, "/definitely/not/here.latent").is_err());
    }
}
