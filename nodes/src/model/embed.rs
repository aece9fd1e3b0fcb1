//! Input-side modules: patch embedding, fixed 2D sin-cos positions, the timestep (t and dt) embedders, and the label
//! and length (block) embedding tables (spec §1.2–§1.4).

use candle_core::{DType, Device, Tensor};

use super::layers::Dense;
use crate::error::Result;
use crate::params::{Loader, PatchEmbedParams, TableParams, TimestepEmbedderParams};

/// Width of the sinusoidal timestep features fed to the timestep MLPs.
pub const FREQ_EMBED_DIM: usize = 256;

/// `PatchEmbed_0`: a `p x p` stride-`p` convolution, computed as a matmul over flattened NHWC patches.
#[derive(Debug, Clone)]
pub struct PatchEmbed {
    /// Conv kernel `[p, p, C, H]` reshaped row-major to `[p*p*C, H]`.
    proj: Dense,
    patch: usize,
}

impl PatchEmbed {
    pub fn load(l: &Loader, p: &PatchEmbedParams) -> Result<Self> {
        let kernel = l
            .param(&p.kernel())?
            .reshape((p.patch * p.patch * p.channels, p.hidden))?;
        Ok(PatchEmbed {
            proj: Dense::new(kernel, l.param(&p.bias())?),
            patch: p.patch,
        })
    }

    /// `x`: NHWC `[B, S, S, C]` → tokens `[B, (S/p)^2, H]`, token `i*G + j` for patch row `i`, column `j`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.proj.forward(&patchify(x, self.patch)?)?)
    }
}

/// NHWC `[B, S, S, C]` → `[B, G*G, p*p*C]` with the patch vector ordered (row offset, column offset, channel).
pub fn patchify(x: &Tensor, p: usize) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (gh, gw) = (h / p, w / p);
    Ok(x.reshape((b, gh, p, gw, p, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .reshape((b, gh * gw, p * p * c))?)
}

/// Inverse of [`patchify`]: `[B, G*G, p*p*C]` → NHWC `[B, G*p, G*p, C]` (spec §1.4, unpatchify).
pub fn unpatchify(x: &Tensor, p: usize, c: usize) -> Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    let g = (t as f64).sqrt().round() as usize;
    Ok(x.reshape((b, g, g, p, p, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .reshape((b, g * p, g * p, c))?)
}

/// The fixed 2D sin-cos position table `[G*G, D]` (spec §1.2): the first half encodes the column, the second half
/// the row, each as `[sin, cos]` with `omega_k = 10000^(-k/K)`, `K = D/4`.
pub fn sincos_pos_embed(dim: usize, grid: usize, device: &Device) -> Result<Tensor> {
    let k = dim / 4;
    let omega: Vec<f64> = (0..k)
        .map(|i| 1.0 / 10000f64.powf(i as f64 / k as f64))
        .collect();
    let mut pe = vec![0f32; grid * grid * dim];
    for i in 0..grid {
        for j in 0..grid {
            let row = &mut pe[(i * grid + j) * dim..(i * grid + j + 1) * dim];
            for (n, w) in omega.iter().enumerate() {
                row[n] = (j as f64 * w).sin() as f32;
                row[k + n] = (j as f64 * w).cos() as f32;
                row[2 * k + n] = (i as f64 * w).sin() as f32;
                row[3 * k + n] = (i as f64 * w).cos() as f32;
            }
        }
    }
    Ok(Tensor::from_vec(pe, (grid * grid, dim), device)?)
}

/// Sinusoidal features of a scalar per sample (spec §1.3): `[cos(t f_k), sin(t f_k)]`, `f_k = exp(-ln(1e4) k/128)`.
/// `t` is fed raw (no scaling), for both the time t and the step code dt_base.
pub fn timestep_features(t: &Tensor) -> Result<Tensor> {
    let half = FREQ_EMBED_DIM / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(10000f64.ln()) * k as f64 / half as f64).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?;
    Ok(Tensor::cat(&[args.cos()?, args.sin()?], 1)?)
}

/// `TimestepEmbedder_k`: sinusoid → Dense → SiLU → Dense, in f32.
#[derive(Debug, Clone)]
pub struct TimestepEmbedder {
    dense0: Dense,
    dense1: Dense,
}

impl TimestepEmbedder {
    pub fn load(l: &Loader, p: &TimestepEmbedderParams) -> Result<Self> {
        Ok(TimestepEmbedder {
            dense0: Dense::load_f32(l, &p.dense0)?,
            dense1: Dense::load_f32(l, &p.dense1)?,
        })
    }

    /// `t`: `[B]` → `[B, H]` (f32).
    pub fn forward(&self, t: &Tensor) -> Result<Tensor> {
        let h = self.dense0.forward(&timestep_features(t)?)?.silu()?;
        Ok(self.dense1.forward(&h)?)
    }
}

/// An embedding table (`LabelEmbedder_0/Embed_0`, `BlockEmbedder_0/Embed_0`), kept in f32.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Tensor,
    name: &'static str,
}

impl Embedding {
    pub fn load(l: &Loader, p: &TableParams) -> Result<Self> {
        Ok(Embedding {
            table: l.param_f32(&p.table())?,
            name: p.module,
        })
    }

    pub fn rows(&self) -> usize {
        self.table.dim(0).unwrap_or(0)
    }

    /// `ids`: `[B]` integer tensor → `[B, H]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let ids = ids.to_dtype(DType::U32)?;
        let max = ids.max(0)?.to_scalar::<u32>()? as usize;
        if max >= self.rows() {
            return Err(crate::Error::invalid(format!(
                "{}: index {max} is outside the table of {} rows",
                self.name,
                self.rows()
            )));
        }
        Ok(self.table.index_select(&ids, 0)?)
    }
}
