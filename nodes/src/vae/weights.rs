//! Reading AutoencoderKL weights from a safetensors file, whatever naming the file uses.
//!
//! The modules always ask for **canonical** names: the current diffusers layout (`decoder.up_blocks.0.resnets.1.conv2.weight`,
//! `decoder.mid_block.attentions.0.to_q.weight`, attention projections as linear `[C, C]`). A [`KeyLayout`],
//! detected from the file, maps them to what the file holds:
//!
//! - diffusers, current attention names (`group_norm`, `to_q`, `to_k`, `to_v`, `to_out.0`);
//! - diffusers, legacy attention names (`group_norm`, `query`, `key`, `value`, `proj_attn`) — older uploads of
//!   the same weights; chosen per attention block by which keys exist;
//! - the original LDM / ComfyUI single-file layout (`decoder.up.3.block.0.nin_shortcut`, `decoder.mid.attn_1.q`,
//!   `decoder.norm_out`, up blocks numbered coarse-to-fine in reverse), e.g. `vae-ft-mse-840000-ema-pruned.safetensors`;
//!
//! each optionally under a `first_stage_model.` or `vae.` prefix (a full SD checkpoint holds its VAE there).
//! Attention projections may be stored as linear `[C, C]` or as 1x1 convolutions `[C, C, 1, 1]`; both load.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, Linear};

use crate::checkpoint::SafetensorsCheckpoint;
use crate::error::{Error, Result};

/// Which naming scheme a VAE file uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLayout {
    /// diffusers `AutoencoderKL` names under `prefix` (usually empty).
    Diffusers { prefix: String },
    /// Original LDM (CompVis / ComfyUI single-file) names under `prefix`.
    Ldm { prefix: String },
}

impl std::fmt::Display for KeyLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, prefix) = match self {
            KeyLayout::Diffusers { prefix } => ("diffusers", prefix),
            KeyLayout::Ldm { prefix } => ("LDM/ComfyUI", prefix),
        };
        if prefix.is_empty() {
            write!(f, "{name} layout")
        } else {
            write!(f, "{name} layout under `{prefix}`")
        }
    }
}

const PREFIXES: [&str; 3] = ["", "first_stage_model.", "vae."];

/// Canonical (current diffusers) name → the name in an LDM file. `levels` = `block_out_channels.len()`.
pub(crate) fn ldm_name(canonical: &str, levels: usize) -> String {
    let parts: Vec<&str> = canonical.split('.').collect();
    let mut out: Vec<String> = Vec::with_capacity(parts.len());
    let mut i = 0;
    while i < parts.len() {
        let p = parts[i];
        let next = parts.get(i + 1).copied();
        match (p, next) {
            ("down_blocks", Some(n)) => {
                out.push("down".into());
                out.push(n.into());
                i += 2;
            }
            ("up_blocks", Some(n)) => {
                // diffusers up_blocks run coarse → fine, LDM `up` is indexed by resolution level (fine = 0).
                let idx = n
                    .parse::<usize>()
                    .ok()
                    .and_then(|k| levels.checked_sub(1 + k))
                    .map(|k| k.to_string())
                    .unwrap_or_else(|| n.to_string());
                out.push("up".into());
                out.push(idx);
                i += 2;
            }
            ("resnets", Some(n)) if out.last().map(String::as_str) == Some("mid") => {
                let k = n.parse::<usize>().map(|k| k + 1).unwrap_or(0);
                out.push(format!("block_{k}"));
                i += 2;
            }
            ("resnets", Some(n)) => {
                out.push("block".into());
                out.push(n.into());
                i += 2;
            }
            ("mid_block", _) => {
                out.push("mid".into());
                i += 1;
            }
            ("attentions", Some(_)) => {
                out.push("attn_1".into());
                i += 2;
            }
            ("downsamplers", Some(_)) => {
                out.push("downsample".into());
                i += 2;
            }
            ("upsamplers", Some(_)) => {
                out.push("upsample".into());
                i += 2;
            }
            ("to_out", Some("0")) => {
                out.push("proj_out".into());
                i += 2;
            }
            _ => {
                out.push(
                    match p {
                        "conv_shortcut" => "nin_shortcut",
                        "conv_norm_out" => "norm_out",
                        "group_norm" => "norm",
                        "to_q" => "q",
                        "to_k" => "k",
                        "to_v" => "v",
                        other => other,
                    }
                    .to_string(),
                );
                i += 1;
            }
        }
    }
    out.join(".")
}

/// Canonical attention projection name → the legacy diffusers name (`to_q` → `query`, ...), if it is one.
fn legacy_attention_name(canonical: &str) -> Option<String> {
    let pairs = [
        (".to_q.", ".query."),
        (".to_k.", ".key."),
        (".to_v.", ".value."),
        (".to_out.0.", ".proj_attn."),
    ];
    pairs
        .iter()
        .find(|(new, _)| canonical.contains(new))
        .map(|(new, old)| canonical.replacen(new, old, 1))
}

/// A memory-mapped VAE file with its detected layout; hands out module weights by canonical name.
pub(crate) struct VaeWeights {
    ck: SafetensorsCheckpoint,
    layout: KeyLayout,
    levels: usize,
    device: Device,
    dtype: DType,
}

impl VaeWeights {
    /// Opens `path`, checks it is an AutoencoderKL file and detects its layout.
    pub(crate) fn open(path: &Path, levels: usize, device: &Device, dtype: DType) -> Result<Self> {
        let ck = SafetensorsCheckpoint::open(path)?;
        let layout = detect_layout(&ck)?;
        Ok(VaeWeights {
            ck,
            layout,
            levels,
            device: device.clone(),
            dtype,
        })
    }

    pub(crate) fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    pub(crate) fn path(&self) -> &Path {
        self.ck.path()
    }

    fn err(&self, message: String) -> Error {
        Error::Checkpoint {
            path: self.ck.path().to_path_buf(),
            message,
        }
    }

    /// The file's name for a canonical name (legacy attention names are resolved in [`Self::attention_names`]).
    fn file_name(&self, canonical: &str) -> String {
        match &self.layout {
            KeyLayout::Diffusers { prefix } => format!("{prefix}{canonical}"),
            KeyLayout::Ldm { prefix } => format!("{prefix}{}", ldm_name(canonical, self.levels)),
        }
    }

    /// Shape of a tensor stored under a canonical name, if present.
    pub(crate) fn shape_of(&self, canonical: &str) -> Option<Vec<usize>> {
        self.ck
            .shape(&self.file_name(canonical))
            .map(<[usize]>::to_vec)
    }

    /// Reads the tensor stored under the file name `name`, requiring one of `accepted` shapes, and returns it
    /// reshaped to `accepted[0]`, in the target dtype and on the target device.
    fn read_as(&self, name: &str, canonical: &str, accepted: &[&[usize]]) -> Result<Tensor> {
        let Some(found) = self.ck.shape(name) else {
            let mapped = if name == canonical {
                String::new()
            } else {
                format!(" (canonical name `{canonical}`)")
            };
            return Err(self.err(format!(
                "VAE weight `{name}`{mapped} is missing ({}); the file does not match the VAE configuration",
                self.layout
            )));
        };
        if !accepted.contains(&found) {
            return Err(self.err(format!(
                "VAE weight `{name}` has shape {found:?} but the configuration expects {:?}{} — \
                 wrong VAE for this configuration (block_out_channels / latent_channels differ?)",
                accepted[0],
                if accepted.len() > 1 {
                    format!(" (or {:?})", &accepted[1..])
                } else {
                    String::new()
                }
            )));
        }
        let t = self
            .ck
            .read(name)?
            .ok_or_else(|| self.err(format!("VAE weight `{name}` vanished while reading")))?;
        let t = t.reshape(accepted[0])?;
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }

    /// A tensor by canonical name with an exact expected shape.
    pub(crate) fn get(&self, canonical: &str, shape: &[usize]) -> Result<Tensor> {
        self.read_as(&self.file_name(canonical), canonical, &[shape])
    }

    /// A convolution `prefix.{weight,bias}` with kernel `k`.
    pub(crate) fn conv(
        &self,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Conv2d> {
        let w = self.get(&format!("{prefix}.weight"), &[cout, cin, k, k])?;
        let b = self.get(&format!("{prefix}.bias"), &[cout])?;
        Ok(Conv2d::new(
            w,
            Some(b),
            Conv2dConfig {
                padding,
                stride,
                ..Default::default()
            },
        ))
    }

    /// A GroupNorm `prefix.{weight,bias}` over `channels`.
    pub(crate) fn group_norm(
        &self,
        prefix: &str,
        groups: usize,
        channels: usize,
        eps: f64,
    ) -> Result<GroupNorm> {
        let w = self.get(&format!("{prefix}.weight"), &[channels])?;
        let b = self.get(&format!("{prefix}.bias"), &[channels])?;
        Ok(GroupNorm::new(w, b, channels, groups, eps)?)
    }

    /// The four projections of a mid-block attention at canonical `prefix` (`decoder.mid_block.attentions.0`),
    /// choosing current (`to_q`) or legacy (`query`) diffusers names by which exist, accepting `[C, C]` and
    /// `[C, C, 1, 1]` weights. Returns `[q, k, v, out]`.
    pub(crate) fn attention_projections(&self, prefix: &str, c: usize) -> Result<[Linear; 4]> {
        let canon = |p: &str| format!("{prefix}.{p}");
        let legacy = match &self.layout {
            KeyLayout::Diffusers { .. } => {
                let current = self.file_name(&format!("{}.weight", canon("to_q")));
                if self.ck.shape(&current).is_some() {
                    false
                } else {
                    let old = legacy_attention_name(&format!("{}.weight", canon("to_q")))
                        .map(|n| self.file_name(&n))
                        .unwrap_or_default();
                    if self.ck.shape(&old).is_some() {
                        true
                    } else {
                        return Err(self.err(format!(
                            "VAE attention weights missing: neither `{current}` nor the legacy `{old}` exists \
                             ({}); set mid_block_add_attention false if this VAE has no mid-block attention",
                            self.layout
                        )));
                    }
                }
            }
            KeyLayout::Ldm { .. } => false,
        };
        let linear = |proj: &str| -> Result<Linear> {
            let wc = format!("{}.weight", canon(proj));
            let bc = format!("{}.bias", canon(proj));
            let (wn, bn) = if legacy {
                (
                    self.file_name(&legacy_attention_name(&wc).unwrap_or(wc.clone())),
                    self.file_name(&legacy_attention_name(&bc).unwrap_or(bc.clone())),
                )
            } else {
                (self.file_name(&wc), self.file_name(&bc))
            };
            let w = self.read_as(&wn, &wc, &[&[c, c], &[c, c, 1, 1]])?;
            let b = self.read_as(&bn, &bc, &[&[c]])?;
            Ok(Linear::new(w, Some(b)))
        };
        Ok([
            linear("to_q")?,
            linear("to_k")?,
            linear("to_v")?,
            linear("to_out.0")?,
        ])
    }
}

/// Finds the layout of a VAE file, or explains why it is not one.
fn detect_layout(ck: &SafetensorsCheckpoint) -> Result<KeyLayout> {
    let has_prefix = |p: &str| ck.names().any(|n| n.starts_with(p));
    for prefix in PREFIXES {
        if ck
            .shape(&format!("{prefix}decoder.conv_in.weight"))
            .is_none()
            && ck
                .shape(&format!("{prefix}encoder.conv_in.weight"))
                .is_none()
        {
            continue;
        }
        let diffusers = has_prefix(&format!("{prefix}decoder.up_blocks."))
            || has_prefix(&format!("{prefix}decoder.mid_block."))
            || has_prefix(&format!("{prefix}encoder.down_blocks."));
        let ldm = has_prefix(&format!("{prefix}decoder.up."))
            || has_prefix(&format!("{prefix}decoder.mid."))
            || has_prefix(&format!("{prefix}encoder.down."));
        let prefix = prefix.to_string();
        match (diffusers, ldm) {
            (true, false) => return Ok(KeyLayout::Diffusers { prefix }),
            (false, true) => return Ok(KeyLayout::Ldm { prefix }),
            _ => {}
        }
    }
    let mut names: Vec<&str> = ck.names().collect();
    names.sort_unstable();
    let what = if ck
        .metadata()
        .contains_key(crate::checkpoint::safetensors_format::CONFIG_KEY)
    {
        " (it is an odelt DiT checkpoint)".to_string()
    } else if names.is_empty() {
        " (it holds no tensors)".to_string()
    } else {
        format!(
            " ({} tensors, e.g. {})",
            names.len(),
            names
                .iter()
                .take(3)
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(Error::Checkpoint {
        path: ck.path().to_path_buf(),
        message: format!(
            "not an AutoencoderKL VAE: no `decoder.conv_in.weight`/`encoder.conv_in.weight` with diffusers \
             (`decoder.up_blocks.*`) or LDM (`decoder.up.*`) blocks, with or without a `first_stage_model.`/`vae.` \
             prefix{what}"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldm_names() {
        let cases = [
            ("decoder.conv_in.weight", "decoder.conv_in.weight"),
            ("post_quant_conv.bias", "post_quant_conv.bias"),
            (
                "decoder.mid_block.resnets.0.norm1.weight",
                "decoder.mid.block_1.norm1.weight",
            ),
            (
                "decoder.mid_block.resnets.1.conv2.bias",
                "decoder.mid.block_2.conv2.bias",
            ),
            (
                "decoder.mid_block.attentions.0.group_norm.weight",
                "decoder.mid.attn_1.norm.weight",
            ),
            (
                "decoder.mid_block.attentions.0.to_out.0.weight",
                "decoder.mid.attn_1.proj_out.weight",
            ),
            (
                "encoder.mid_block.attentions.0.to_k.bias",
                "encoder.mid.attn_1.k.bias",
            ),
            (
                "decoder.up_blocks.0.resnets.2.conv1.weight",
                "decoder.up.3.block.2.conv1.weight",
            ),
            (
                "decoder.up_blocks.2.resnets.0.conv_shortcut.weight",
                "decoder.up.1.block.0.nin_shortcut.weight",
            ),
            (
                "decoder.up_blocks.1.upsamplers.0.conv.weight",
                "decoder.up.2.upsample.conv.weight",
            ),
            (
                "encoder.down_blocks.1.downsamplers.0.conv.bias",
                "encoder.down.1.downsample.conv.bias",
            ),
            (
                "encoder.down_blocks.3.resnets.1.norm2.bias",
                "encoder.down.3.block.1.norm2.bias",
            ),
            ("decoder.conv_norm_out.weight", "decoder.norm_out.weight"),
        ];
        for (c, l) in cases {
            assert_eq!(ldm_name(c, 4), l, "{c}");
        }
    }

    #[test]
    fn legacy_names() {
        assert_eq!(
            legacy_attention_name("decoder.mid_block.attentions.0.to_out.0.bias").as_deref(),
            Some("decoder.mid_block.attentions.0.proj_attn.bias")
        );
        assert_eq!(
            legacy_attention_name("decoder.mid_block.attentions.0.to_v.weight").as_deref(),
            Some("decoder.mid_block.attentions.0.value.weight")
        );
        assert_eq!(legacy_attention_name("decoder.conv_in.weight"), None);
    }
}
