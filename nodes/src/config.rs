//! Model configuration (spec §0) and the official presets.
//!
//! The official checkpoints do not record the head count, the length grid (`depth_group`, `depth_min`), the input
//! size or the latent scale: those come from a preset or from explicit overrides, and every shape the checkpoint does
//! record is checked against them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Scale of the SD VAE ft-MSE latents the official models were trained on.
pub const SD_VAE_LATENT_SCALE: f64 = 0.18215;

/// Hyper-parameters of a DiT with the ODE_l wiring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DitConfig {
    /// Side of the (square) input in pixels or latent cells (32 for the official 256px models).
    pub input_size: usize,
    /// Input (and output) channels: 4 for SD-VAE latents, 1 for grey pixels, 3 for RGB pixels.
    pub in_channels: usize,
    /// Patch side: tokens are `(input_size / patch_size)^2`.
    pub patch_size: usize,
    /// Transformer width H (divisible by `num_heads` and by 4 for the 2D sin-cos positions).
    pub hidden_size: usize,
    /// Number of DiT blocks N.
    pub depth: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Hidden width of the MLP (4H in every official model).
    pub mlp_hidden: usize,
    /// Number of classes; index `num_classes` is the null (unconditional) label.
    pub num_classes: usize,
    /// Blocks per Euler step of the length ODE (ODE_l); 4 for DiT-B, 8 for DiT-XL.
    pub depth_group: usize,
    /// Shortest trained length (4 for DiT-B, 12 for DiT-XL).
    pub depth_min: usize,
    /// Whether the model has the length embedding and ODE_l wiring (false: a shortcut-models checkpoint, the
    /// conventional sequential DiT).
    pub length_embedding: bool,
    /// Factor between the VAE's raw latents and the model's space (0.18215 for SD-VAE latents, 1 for pixels).
    pub latent_scale: f64,
}

impl DitConfig {
    /// DiT-B/2 on 32x32x4 SD-VAE latents (CelebA-HQ-256 and ImageNet-256 checkpoints); `num_classes` 1 for
    /// CelebA-HQ, 1000 for ImageNet.
    pub fn dit_b(num_classes: usize) -> Self {
        DitConfig {
            input_size: 32,
            in_channels: 4,
            patch_size: 2,
            hidden_size: 768,
            depth: 12,
            num_heads: 12,
            mlp_hidden: 3072,
            num_classes,
            depth_group: 4,
            depth_min: 4,
            length_embedding: true,
            latent_scale: SD_VAE_LATENT_SCALE,
        }
    }

    /// DiT-XL/2 on 32x32x4 SD-VAE latents (ImageNet-256).
    pub fn dit_xl(num_classes: usize) -> Self {
        DitConfig {
            input_size: 32,
            in_channels: 4,
            patch_size: 2,
            hidden_size: 1152,
            depth: 28,
            num_heads: 16,
            mlp_hidden: 4608,
            num_classes,
            depth_group: 8,
            depth_min: 12,
            length_embedding: true,
            latent_scale: SD_VAE_LATENT_SCALE,
        }
    }

    /// The configuration of the golden reference model in `../shared/golden` (8x8x4, hidden 64, depth 4).
    pub fn golden_tiny() -> Self {
        DitConfig {
            input_size: 8,
            in_channels: 4,
            patch_size: 2,
            hidden_size: 64,
            depth: 4,
            num_heads: 4,
            mlp_hidden: 256,
            num_classes: 10,
            depth_group: 2,
            depth_min: 2,
            length_embedding: true,
            latent_scale: 1.0,
        }
    }

    /// A named preset: `dit-b` or `dit-xl` (ImageNet class count unless the checkpoint says otherwise).
    pub fn preset(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().replace('_', "-").as_str() {
            "dit-b" | "dit-b-2" | "dit-b/2" => Some(Self::dit_b(1000)),
            "dit-xl" | "dit-xl-2" | "dit-xl/2" => Some(Self::dit_xl(1000)),
            _ => None,
        }
    }

    /// Tokens per side of the patch grid.
    pub fn grid(&self) -> usize {
        self.input_size / self.patch_size
    }

    /// Tokens per image.
    pub fn num_tokens(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Values per patch (`p * p * C`), the width of the patch embedding's input and the final layer's output.
    pub fn patch_dim(&self) -> usize {
        self.patch_size * self.patch_size * self.in_channels
    }

    /// The lengths the model was trained for: `depth_min, depth_min + group, ..., depth`.
    pub fn trained_lengths(&self) -> Vec<usize> {
        if !self.length_embedding {
            return vec![self.depth];
        }
        let mut v = Vec::new();
        let mut l = self.depth_min.max(1);
        while l <= self.depth {
            v.push(l);
            l += self.depth_group.max(1);
        }
        v
    }

    /// Index of the last block whose output reaches the model output at active length `l` (spec §1.8): the largest
    /// group end `e < l` with `e % group == group - 1`. `None` when no group ends below `l` (the output then only
    /// sees the conditioning).
    pub fn last_effective_block(&self, l: usize) -> Option<usize> {
        if !self.length_embedding {
            return self.depth.checked_sub(1);
        }
        let g = self.depth_group;
        let l = l.min(self.depth);
        if l < g {
            return None;
        }
        Some((l / g) * g - 1)
    }

    /// Number of blocks that must be resident (and are computed) at length `l`.
    pub fn resident_blocks(&self, l: usize) -> usize {
        self.last_effective_block(l).map_or(0, |e| e + 1)
    }

    /// Checks internal consistency.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::config(m));
        if self.patch_size == 0
            || self.input_size == 0
            || !self.input_size.is_multiple_of(self.patch_size)
        {
            return fail(format!(
                "input_size {} is not a positive multiple of patch_size {}",
                self.input_size, self.patch_size
            ));
        }
        if self.in_channels == 0 {
            return fail("in_channels must be at least 1".into());
        }
        if self.num_heads == 0 || !self.hidden_size.is_multiple_of(self.num_heads) {
            return fail(format!(
                "hidden_size {} is not divisible by num_heads {}",
                self.hidden_size, self.num_heads
            ));
        }
        if !self.hidden_size.is_multiple_of(4) {
            return fail(format!(
                "hidden_size {} must be divisible by 4 (2D sin-cos positions)",
                self.hidden_size
            ));
        }
        if self.depth == 0 || self.mlp_hidden == 0 {
            return fail("depth and mlp_hidden must be at least 1".into());
        }
        if self.length_embedding {
            if self.depth_group == 0 || self.depth_group > self.depth {
                return fail(format!(
                    "depth_group {} must be in 1..={} (the depth)",
                    self.depth_group, self.depth
                ));
            }
            if self.depth_min == 0 || self.depth_min > self.depth {
                return fail(format!(
                    "depth_min {} must be in 1..={} (the depth)",
                    self.depth_min, self.depth
                ));
            }
        }
        if !(self.latent_scale.is_finite() && self.latent_scale > 0.0) {
            return fail(format!(
                "latent_scale {} must be positive",
                self.latent_scale
            ));
        }
        Ok(())
    }

    /// Checks that `l` is a length this model can run: within `1..=depth` (any value runs; only
    /// [`trained_lengths`](Self::trained_lengths) were trained).
    pub fn check_length(&self, l: usize) -> Result<()> {
        if !self.length_embedding && l != self.depth {
            return Err(Error::invalid(format!(
                "this checkpoint has no length embedding (shortcut-models layout): only the full depth {} runs, not {l}",
                self.depth
            )));
        }
        if l == 0 || l > self.depth {
            return Err(Error::invalid(format!(
                "active length {l} is outside 1..={}",
                self.depth
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xl_quirk_effective_blocks() {
        let c = DitConfig::dit_xl(1000);
        assert_eq!(c.trained_lengths(), vec![12, 20, 28]);
        assert_eq!(c.last_effective_block(12), Some(7));
        assert_eq!(c.last_effective_block(20), Some(15));
        assert_eq!(c.last_effective_block(28), Some(23));
        assert_eq!(c.resident_blocks(28), 24);
    }

    #[test]
    fn dit_b_lengths_align() {
        let c = DitConfig::dit_b(1);
        assert_eq!(c.trained_lengths(), vec![4, 8, 12]);
        for l in [4, 8, 12] {
            assert_eq!(c.resident_blocks(l), l);
        }
        assert_eq!(c.last_effective_block(3), None);
        assert_eq!(c.resident_blocks(6), 4);
    }

    #[test]
    fn validate_rejects_bad_shapes() {
        let mut c = DitConfig::golden_tiny();
        assert!(c.validate().is_ok());
        c.num_heads = 3;
        assert!(c.validate().is_err());
        let mut c = DitConfig::golden_tiny();
        c.patch_size = 3;
        assert!(c.validate().is_err());
    }
}
