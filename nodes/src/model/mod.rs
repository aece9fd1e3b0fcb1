//! The DiT of ODE_t(ODE_l) (spec §1): a class-conditional DiT whose blocks are rewired into an Euler solver over
//! depth. Blocks come in groups of `depth_group`; inside a group the residual stream is the ordinary sequential chain,
//! and each group end is one Euler step of the length ODE:
//!
//! ```text
//! x_r ← x_r + v_b        (the stream after the group: previous stream plus the group-end block's output)
//! v_r ← v_r + v_b        (the velocity fed to the final layer: the sum of the group-end outputs)
//! ```
//!
//! A length embedding tells the network how many blocks `l` are active; at length `l` only the blocks that reach the
//! output are loaded and computed (for DiT-XL, whose depth 28 is not a multiple of its group 8, that is up to the
//! last group end below `l`, §1.8).
//!
//! Each block runs as [`block::DitBlock`] (candle ops as the paper writes them) or, chosen at load for CPU f32
//! inference, as [`fused_block::FusedBlock`] (the same math with fused CPU kernels); likewise the final layer.

mod aligned;
#[cfg(target_arch = "x86_64")]
pub mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
mod avx512;
pub mod blas;
pub mod block;
pub mod embed;
mod fused;
pub mod fused_block;
pub mod layers;
pub mod packed;
pub mod profile;

use candle_core::{DType, Device, Tensor};

use crate::config::DitConfig;
use crate::error::{Error, Result};
use crate::params::{DitParams, Loader, ParamSource};
use block::{DitBlock, FinalLayer};
use embed::{sincos_pos_embed, unpatchify, Embedding, PatchEmbed, TimestepEmbedder};
use fused_block::{FusedBlock, FusedFinalLayer};
use packed::{CpuKernels, WeightFormat};
use profile::timed;

/// A DiT block as the forward computes it.
#[derive(Debug, Clone)]
enum Block {
    /// Candle ops on any device and dtype, differentiable on request.
    Reference(DitBlock),
    /// The fused CPU kernels over packed weights (CPU inference).
    FusedCpu(FusedBlock),
}

impl Block {
    fn new(block: DitBlock, cpu: Option<WeightFormat>) -> Result<Self> {
        Ok(match cpu {
            Some(format) => Block::FusedCpu(FusedBlock::new(&block, format, CpuKernels::detect())?),
            None => Block::Reference(block),
        })
    }

    fn reference(&self, device: &Device, dtype: DType) -> Result<DitBlock> {
        match self {
            Block::Reference(b) => Ok(b.clone()),
            Block::FusedCpu(b) => b.to_reference(device, dtype),
        }
    }

    fn forward(&self, x: &Tensor, c: &Tensor, differentiable: bool) -> Result<Tensor> {
        match self {
            Block::Reference(b) => timed("DiT block (reference ops)", || {
                b.forward(x, c, differentiable)
            }),
            // Timed stage by stage inside.
            Block::FusedCpu(b) => b.forward(x, c),
        }
    }
}

/// The final layer as the forward computes it (see [`Block`]).
#[derive(Debug, Clone)]
enum Head {
    Reference(FinalLayer),
    FusedCpu(FusedFinalLayer),
}

impl Head {
    fn new(layer: FinalLayer, cpu: Option<WeightFormat>) -> Result<Self> {
        Ok(match cpu {
            Some(_) => Head::FusedCpu(FusedFinalLayer::new(&layer, CpuKernels::detect())?),
            None => Head::Reference(layer),
        })
    }

    fn reference(&self, device: &Device, dtype: DType) -> Result<FinalLayer> {
        match self {
            Head::Reference(f) => Ok(f.clone()),
            Head::FusedCpu(f) => f.to_reference(device, dtype),
        }
    }

    fn forward(&self, x: &Tensor, c: &Tensor, differentiable: bool) -> Result<Tensor> {
        timed("final layer", || match self {
            Head::Reference(f) => f.forward(x, c, differentiable),
            Head::FusedCpu(f) => f.forward(x, c),
        })
    }
}

/// The ODE_t(ODE_l) DiT (or, without a length embedding, the conventional shortcut-models DiT).
#[derive(Debug, Clone)]
pub struct Dit {
    cfg: DitConfig,
    patch_embed: PatchEmbed,
    pos_embed: Tensor,
    t_embed: TimestepEmbedder,
    dt_embed: TimestepEmbedder,
    label_embed: Embedding,
    length_embed: Option<Embedding>,
    blocks: Vec<Block>,
    final_layer: Head,
    /// Active length l used by [`Dit::forward`].
    length: usize,
    /// Use primitive ops that candle can differentiate (training).
    differentiable: bool,
    /// The activations' dtype.
    dtype: DType,
    /// The requested precision.
    precision: DType,
}

impl Dit {
    /// Builds the model from `src`, loading only the blocks needed up to `max_length` (`None`: the full depth).
    /// The active length starts at `max_length` (or the depth).
    pub fn load(
        cfg: &DitConfig,
        src: &dyn ParamSource,
        device: &Device,
        dtype: DType,
        max_length: Option<usize>,
    ) -> Result<Self> {
        Self::load_with(cfg, src, device, dtype, max_length, false)
    }

    /// [`Dit::load`] for training: differentiable ops from the start (no packing for the fused kernels).
    pub fn load_differentiable(
        cfg: &DitConfig,
        src: &dyn ParamSource,
        device: &Device,
        dtype: DType,
        max_length: Option<usize>,
    ) -> Result<Self> {
        Self::load_with(cfg, src, device, dtype, max_length, true)
    }

    fn load_with(
        cfg: &DitConfig,
        src: &dyn ParamSource,
        device: &Device,
        dtype: DType,
        max_length: Option<usize>,
        differentiable: bool,
    ) -> Result<Self> {
        cfg.validate()?;
        let max_length = max_length.unwrap_or(cfg.depth);
        cfg.check_length(max_length)?;
        // The fused CPU path keeps the activations in f32 whatever the weights' format (bf16 weights are
        // multiplied with f32 accumulation); elsewhere everything computes in `dtype`.
        let cpu = fused::cpu_format(device, dtype, differentiable);
        let stream = if cpu.is_some() { DType::F32 } else { dtype };
        let l = Loader::new(src, device, stream);
        let p = DitParams::new(cfg, cfg.resident_blocks(max_length));
        let blocks = p
            .blocks
            .iter()
            .map(|b| Block::new(DitBlock::load(&l, b, cfg.num_heads)?, cpu))
            .collect::<Result<Vec<_>>>()?;
        let length_embed = match &p.length_embed {
            Some(le) => Some(Embedding::load(&l, le)?),
            None => None,
        };
        Ok(Dit {
            patch_embed: PatchEmbed::load(&l, &p.patch_embed)?,
            pos_embed: sincos_pos_embed(cfg.hidden_size, cfg.grid(), device)?,
            t_embed: TimestepEmbedder::load(&l, &p.t_embed)?,
            dt_embed: TimestepEmbedder::load(&l, &p.dt_embed)?,
            label_embed: Embedding::load(&l, &p.label_embed)?,
            length_embed,
            blocks,
            final_layer: Head::new(FinalLayer::load(&l, &p.final_layer)?, cpu)?,
            length: max_length,
            differentiable,
            dtype: stream,
            precision: dtype,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &DitConfig {
        &self.cfg
    }

    /// The active length l.
    pub fn length(&self) -> usize {
        self.length
    }

    /// The dtype of the activations (f32 on the fused CPU path, else the requested precision).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The precision the model was loaded with (its blocks' weights: bf16 on the fused CPU path stays bf16).
    pub fn precision(&self) -> DType {
        self.precision
    }

    /// How the blocks' weights are stored for the fused CPU kernels, if those run.
    pub fn cpu_weights(&self) -> Option<WeightFormat> {
        self.blocks.first().and_then(|b| match b {
            Block::FusedCpu(f) => Some(f.format()),
            Block::Reference(_) => None,
        })
    }

    pub fn device(&self) -> &Device {
        self.pos_embed.device()
    }

    /// Number of blocks held in memory.
    pub fn resident_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The longest length the resident blocks can serve.
    pub fn max_length(&self) -> usize {
        if !self.cfg.length_embedding {
            return self.cfg.depth;
        }
        // Every length whose last effective block is resident; beyond the last group end, the extra blocks are dead.
        (1..=self.cfg.depth)
            .rev()
            .find(|&l| self.cfg.resident_blocks(l) <= self.blocks.len())
            .unwrap_or(0)
    }

    /// The same weights at another active length (no copy). Fails if `l` needs blocks that were not loaded.
    pub fn with_length(&self, l: usize) -> Result<Self> {
        self.cfg.check_length(l)?;
        if self.cfg.resident_blocks(l) > self.blocks.len() {
            return Err(Error::invalid(format!(
                "length {l} needs {} blocks but only {} were loaded (load the model with a longer maximum length)",
                self.cfg.resident_blocks(l),
                self.blocks.len()
            )));
        }
        let mut m = self.clone();
        m.length = l;
        Ok(m)
    }

    /// Switches between the fast inference kernels and differentiable primitive ops (training). Fails only if
    /// repacking the weights fails.
    pub fn set_differentiable(&mut self, on: bool) -> Result<()> {
        self.differentiable = on;
        let device = self.device().clone();
        let cpu = fused::cpu_format(&device, self.precision, on);
        for b in &mut self.blocks {
            *b = Block::new(b.reference(&device, self.dtype)?, cpu)?;
        }
        self.final_layer = Head::new(self.final_layer.reference(&device, self.dtype)?, cpu)?;
        Ok(())
    }

    /// Tokens `[B, T, H]` (patch embedding plus positions) and the conditioning `c = te(t) + ye(y) + dte(dt_base)`.
    fn embed(
        &self,
        t: &Tensor,
        x: &Tensor,
        dt_base: &Tensor,
        y: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (b, hh, ww, ch) = x.dims4()?;
        let s = self.cfg.input_size;
        if hh != s || ww != s || ch != self.cfg.in_channels {
            return Err(Error::invalid(format!(
                "input has shape [{b}, {hh}, {ww}, {ch}] (NHWC) but the model takes [B, {s}, {s}, {}]",
                self.cfg.in_channels
            )));
        }
        for (name, v) in [("t", t), ("dt_base", dt_base), ("labels", y)] {
            if v.dims() != [b] {
                return Err(Error::invalid(format!(
                    "{name} has shape {:?}; expected [{b}] (one per sample)",
                    v.dims()
                )));
            }
        }
        let tok = self.patch_embed.forward(&x.to_dtype(self.dtype)?)?;
        let tok = layers::add(&tok.to_dtype(DType::F32)?, &self.pos_embed)?.to_dtype(self.dtype)?;
        let c = ((self.t_embed.forward(t)? + self.label_embed.forward(y)?)?
            + self.dt_embed.forward(dt_base)?)?;
        Ok((tok, c))
    }

    /// Velocity at the active length l (the inference path). `t`: `[B]` f32 in \[0, 1\] (0 = noise, 1 = data);
    /// `x`: NHWC `[B, S, S, C]`; `dt_base`: `[B]` step code log2(T) (as float); `y`: `[B]` class ids
    /// (`num_classes` = null). Returns NHWC velocity, same shape as `x`, in f32.
    pub fn forward(&self, t: &Tensor, x: &Tensor, dt_base: &Tensor, y: &Tensor) -> Result<Tensor> {
        if self.cpu_weights().is_some()
            && rayon::current_thread_index().is_none()
            && !profile::enabled()
        {
            // The fused CPU kernels split every product across the rayon pool: run the forward on a pool thread,
            // so that it takes a share of each split itself instead of waking the pool for every one. (Not while
            // profiling: the stage times are per thread.)
            return rayon::scope(|_| self.forward_on_pool(t, x, dt_base, y));
        }
        self.forward_on_pool(t, x, dt_base, y)
    }

    fn forward_on_pool(
        &self,
        t: &Tensor,
        x: &Tensor,
        dt_base: &Tensor,
        y: &Tensor,
    ) -> Result<Tensor> {
        let (tok, c) = timed("embed: patch + positions + t/dt/label", || {
            self.embed(t, x, dt_base, y)
        })?;
        let b = tok.dim(0)?;
        let h = if let Some(le) = &self.length_embed {
            let ids = Tensor::full(self.length as u32, b, tok.device())?;
            let cb = (&c + le.forward(&ids)?)?;
            self.length_ode(&tok, &cb, None)?
        } else {
            let mut h = tok;
            for blk in &self.blocks {
                h = blk.forward(&h, &c, self.differentiable)?;
            }
            Some(h)
        };
        self.head(h, &c, b)
    }

    /// The training path (spec §1.6, `blocks` given): every sample has its own active length `blocks[i]`; all blocks
    /// up to the longest one run and shorter samples are masked out at their group ends. Sample i equals the
    /// inference output at length `blocks[i]`.
    pub fn forward_lengths(
        &self,
        t: &Tensor,
        x: &Tensor,
        dt_base: &Tensor,
        y: &Tensor,
        lengths: &[usize],
    ) -> Result<Tensor> {
        let Some(le) = &self.length_embed else {
            return Err(Error::invalid(
                "per-sample lengths need a model with a length embedding",
            ));
        };
        let (tok, c) = self.embed(t, x, dt_base, y)?;
        let b = tok.dim(0)?;
        if lengths.len() != b {
            return Err(Error::invalid(format!(
                "{} lengths for a batch of {b}",
                lengths.len()
            )));
        }
        for &l in lengths {
            self.cfg.check_length(l)?;
            if self.cfg.resident_blocks(l) > self.blocks.len() {
                return Err(Error::invalid(format!(
                    "length {l} needs blocks that were not loaded"
                )));
            }
        }
        let ids: Vec<u32> = lengths.iter().map(|&l| l as u32).collect();
        let ids = Tensor::from_vec(ids, b, tok.device())?;
        let cb = (&c + le.forward(&ids)?)?;
        let h = self.length_ode(&tok, &cb, Some(lengths))?;
        self.head(h, &c, b)
    }

    /// The ODE_l loop. Without per-sample lengths every sample runs at `self.length`.
    fn length_ode(
        &self,
        tok: &Tensor,
        cb: &Tensor,
        lengths: Option<&[usize]>,
    ) -> Result<Option<Tensor>> {
        let g = self.cfg.depth_group;
        let longest = lengths.map_or(self.length, |ls| ls.iter().copied().max().unwrap_or(0));
        let Some(last) = self.cfg.last_effective_block(longest) else {
            return Ok(None);
        };
        let mut xr = tok.clone();
        let mut vr: Option<Tensor> = None;
        for (i, blk) in self.blocks[..=last].iter().enumerate() {
            let vb = blk.forward(&xr, cb, self.differentiable)?;
            if i % g != g - 1 {
                xr = vb;
                continue;
            }
            // Group end: one Euler step, for the samples whose length reaches it.
            (xr, vr) = timed("ODE_l group-end adds", || -> Result<_> {
                let step = match lengths {
                    None => vb,
                    Some(ls) => active_only(vb, ls, i)?,
                };
                let v = match vr.take() {
                    None => step.clone(),
                    Some(v) => layers::add(&v, &step)?,
                };
                Ok((layers::add(&xr, &step)?, Some(v)))
            })?;
        }
        Ok(vr)
    }

    fn head(&self, h: Option<Tensor>, c: &Tensor, b: usize) -> Result<Tensor> {
        let h = match h {
            Some(h) => h,
            None => Tensor::zeros(
                (b, self.cfg.num_tokens(), self.cfg.hidden_size),
                self.dtype,
                c.device(),
            )?,
        };
        let out = self.final_layer.forward(&h, c, self.differentiable)?;
        Ok(unpatchify(&out, self.cfg.patch_size, self.cfg.in_channels)?.to_dtype(DType::F32)?)
    }
}

/// `v` (`[B, T, H]`) with the samples whose length ends before block `i` zeroed.
fn active_only(v: Tensor, lengths: &[usize], i: usize) -> Result<Tensor> {
    let mask: Vec<f32> = lengths
        .iter()
        .map(|&l| f32::from(u8::from(i < l)))
        .collect();
    let mask = Tensor::from_vec(mask, (lengths.len(), 1, 1), v.device())?.to_dtype(v.dtype())?;
    Ok(v.broadcast_mul(&mask)?)
}
