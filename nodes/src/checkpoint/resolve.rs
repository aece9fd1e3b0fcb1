//! Turning a set of parameter shapes into a full [`DitConfig`].
//!
//! The official pickles record shapes but not the head count, the length grid, the input size or the latent scale.
//! Those come from a preset (`dit-b`, `dit-xl`, or `auto`: chosen by hidden size and depth) or from explicit
//! overrides, and the shapes the file does record must agree with them.

use serde::{Deserialize, Serialize};

use crate::config::DitConfig;
use crate::error::{Error, Result};

/// What the user may state about a checkpoint that the checkpoint itself does not record. `None`/`0` = unspecified.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigOverrides {
    /// `auto` (default), `dit-b`, `dit-xl` or `custom` (everything not in the file must be given).
    pub preset: Option<String>,
    pub num_heads: Option<usize>,
    pub depth_group: Option<usize>,
    pub depth_min: Option<usize>,
    pub input_size: Option<usize>,
    pub latent_scale: Option<f64>,
}

/// Shapes read off a checkpoint, by Flax name.
pub trait ShapeSource {
    fn shape_of(&self, name: &str) -> Option<Vec<usize>>;
    /// Whether the file contains a given block index.
    fn has_block(&self, index: usize) -> bool {
        self.shape_of(&format!("DiTBlock_{index}/Dense_1/kernel"))
            .is_some()
    }
}

fn need(src: &dyn ShapeSource, name: &str, rank: usize) -> Result<Vec<usize>> {
    let s = src.shape_of(name).ok_or_else(|| Error::MissingParam {
        name: name.to_string(),
    })?;
    if s.len() != rank {
        return Err(Error::invalid(format!(
            "parameter `{name}` has rank {} (shape {s:?}); expected rank {rank}",
            s.len()
        )));
    }
    Ok(s)
}

/// Builds the configuration of the checkpoint whose shapes `src` reports, filling what the file does not record from
/// `stored` (a configuration saved with the file, if any), then the preset, then the overrides.
pub fn resolve_config(
    src: &dyn ShapeSource,
    stored: Option<&DitConfig>,
    ov: &ConfigOverrides,
) -> Result<DitConfig> {
    let conv = need(src, "PatchEmbed_0/Conv_0/kernel", 4)?;
    let (p, p2, channels, hidden) = (conv[0], conv[1], conv[2], conv[3]);
    if p != p2 {
        return Err(Error::invalid(format!(
            "PatchEmbed_0/Conv_0/kernel {conv:?}: non-square patches are not supported"
        )));
    }
    let labels = need(src, "LabelEmbedder_0/Embed_0/embedding", 2)?;
    if labels[0] < 2 {
        return Err(Error::invalid(format!(
            "LabelEmbedder_0/Embed_0/embedding has {} rows; at least one class plus the null label are needed",
            labels[0]
        )));
    }
    let mut depth = 0;
    while src.has_block(depth) {
        depth += 1;
    }
    if depth == 0 {
        return Err(Error::MissingParam {
            name: "DiTBlock_0/Dense_1/kernel".into(),
        });
    }
    let mlp = need(src, "DiTBlock_0/MlpBlock_0/Dense_0/kernel", 2)?;
    let length_embedding = match src.shape_of("BlockEmbedder_0/Embed_0/embedding") {
        None => false,
        Some(s) if s.len() == 2 && s[0] == depth + 1 => true,
        Some(s) => {
            return Err(Error::invalid(format!(
                "BlockEmbedder_0/Embed_0/embedding has shape {s:?} but the file has {depth} blocks (expected [{}, {hidden}])",
                depth + 1
            )))
        }
    };

    let preset_name = ov
        .preset
        .clone()
        .unwrap_or_else(|| "auto".to_string())
        .to_ascii_lowercase();
    let preset = match preset_name.as_str() {
        "auto" => stored.cloned().or_else(|| match (hidden, depth) {
            (768, 12) => Some(DitConfig::dit_b(labels[0] - 1)),
            (1152, 28) => Some(DitConfig::dit_xl(labels[0] - 1)),
            _ => None,
        }),
        "custom" => stored.cloned(),
        name => Some(DitConfig::preset(name).ok_or_else(|| {
            Error::invalid(format!(
                "unknown preset `{name}` (known: auto, dit-b, dit-xl, custom)"
            ))
        })?),
    };

    let pick = |what: &str, o: Option<usize>, p: Option<usize>| -> Result<usize> {
        o.filter(|v| *v > 0).or(p).ok_or_else(|| {
            Error::invalid(format!(
                "the checkpoint does not record `{what}` and no preset matches (hidden {hidden}, depth {depth}); \
                 choose a preset or give {what} explicitly"
            ))
        })
    };
    let num_heads = pick(
        "num_heads",
        ov.num_heads,
        preset.as_ref().map(|c| c.num_heads),
    )?;
    let input_size = pick(
        "input_size",
        ov.input_size,
        preset.as_ref().map(|c| c.input_size),
    )?;
    let (depth_group, depth_min) = if length_embedding {
        (
            pick(
                "depth_group",
                ov.depth_group,
                preset.as_ref().map(|c| c.depth_group),
            )?,
            pick(
                "depth_min",
                ov.depth_min,
                preset.as_ref().map(|c| c.depth_min),
            )?,
        )
    } else {
        (
            ov.depth_group.filter(|v| *v > 0).unwrap_or(depth),
            ov.depth_min.filter(|v| *v > 0).unwrap_or(depth),
        )
    };
    let latent_scale = ov
        .latent_scale
        .filter(|v| *v > 0.0)
        .or(preset.as_ref().map(|c| c.latent_scale))
        .unwrap_or(if channels == 4 {
            crate::config::SD_VAE_LATENT_SCALE
        } else {
            1.0
        });

    let cfg = DitConfig {
        input_size,
        in_channels: channels,
        patch_size: p,
        hidden_size: hidden,
        depth,
        num_heads,
        mlp_hidden: mlp[1],
        num_classes: labels[0] - 1,
        depth_group,
        depth_min,
        length_embedding,
        latent_scale,
    };
    // A named preset that contradicts the file is an error, not a silent override.
    if let (Some(pr), false) = (&preset, matches!(preset_name.as_str(), "auto" | "custom")) {
        for (what, file, want) in [
            ("hidden_size", cfg.hidden_size, pr.hidden_size),
            ("patch_size", cfg.patch_size, pr.patch_size),
            ("in_channels", cfg.in_channels, pr.in_channels),
            ("depth", cfg.depth, pr.depth),
            ("mlp_hidden", cfg.mlp_hidden, pr.mlp_hidden),
        ] {
            if file != want {
                return Err(Error::invalid(format!(
                    "preset `{preset_name}` has {what} {want} but the checkpoint has {file}"
                )));
            }
        }
    }
    cfg.validate()?;
    Ok(cfg)
}
