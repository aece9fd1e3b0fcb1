//! The model as a velocity field, with classifier-free guidance as the official sampler does it.

use candle_core::{DType, Tensor};

use super::VelocityField;
use crate::error::{Error, Result};
use crate::model::Dit;

/// The DiT at its active length as a [`VelocityField`], with guidance scale `cfg` (w):
/// - `w == 0`: one pass with the null label (`num_classes`) for every sample;
/// - `w == 1`: one pass with the labels;
/// - otherwise `v = v_null + w·(v_label − v_null)`, both passes done as ONE forward of the doubled batch
///   `[x; x]` with labels `[null…; labels]` (faster than two calls; per-sample results are the same up to
///   float rounding). [`Guided::batched`]`(false)` makes it two forwards of B (half the activation memory).
///
/// Labels are `[B]` class ids already mapped by the caller: unconditional samples carry `num_classes` (the null
/// label); see [`crate::sample::labels`] for mapping `-1` to it.
#[derive(Debug, Clone)]
pub struct Guided<'a> {
    model: &'a Dit,
    labels: Tensor,
    cfg: f64,
    null: Tensor,
    /// `[null…; labels]`, for the batched two-pass case.
    both: Tensor,
    batched: bool,
}

impl<'a> Guided<'a> {
    /// `labels`: `[B]` integer class ids in `0..=num_classes` (any integer dtype; stored as u32 on the model's
    /// device). `cfg` must be finite.
    pub fn new(model: &'a Dit, labels: &Tensor, cfg: f64) -> Result<Self> {
        if !cfg.is_finite() {
            return Err(Error::invalid(format!(
                "guidance scale must be finite, got {cfg}"
            )));
        }
        let nc = model.config().num_classes;
        let b = match labels.dims() {
            [b] => *b,
            d => {
                return Err(Error::invalid(format!(
                    "labels must have shape [B] (one class id per sample), got {d:?}"
                )))
            }
        };
        if labels.dtype().is_float() {
            return Err(Error::invalid(format!(
                "labels must be integer class ids, got {:?}",
                labels.dtype()
            )));
        }
        let ids = labels.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        if let Some((i, &v)) = ids
            .iter()
            .enumerate()
            .find(|(_, &v)| v < 0 || v > nc as i64)
        {
            return Err(Error::invalid(format!(
                "label {v} of sample {i} is outside 0..={nc} (use {nc}, the null label, for unconditional samples)"
            )));
        }
        let dev = model.device();
        let labels: Vec<u32> = ids.iter().map(|&v| v as u32).collect();
        let null = Tensor::full(nc as u32, b, dev)?;
        let labels = Tensor::from_vec(labels, b, dev)?;
        let both = Tensor::cat(&[&null, &labels], 0)?;
        Ok(Guided {
            model,
            labels,
            cfg,
            null,
            both,
            batched: true,
        })
    }

    /// Whether guidance 0 < w ≠ 1 runs as one forward of 2B (default) or two forwards of B.
    pub fn batched(mut self, on: bool) -> Self {
        self.batched = on;
        self
    }

    pub fn cfg(&self) -> f64 {
        self.cfg
    }

    pub fn labels(&self) -> &Tensor {
        &self.labels
    }

    /// Model passes per evaluation (1 for w ∈ {0, 1}, else 2; batched, those are one forward of 2B).
    pub fn passes(&self) -> usize {
        if self.cfg == 0.0 || self.cfg == 1.0 {
            1
        } else {
            2
        }
    }

    fn forward(&self, t: f64, x: &Tensor, dt_base: f64, y: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        let dev = self.model.device();
        let tt = Tensor::full(t as f32, n, dev)?;
        let dd = Tensor::full(dt_base as f32, n, dev)?;
        self.model.forward(&tt, x, &dd, y)
    }
}

impl VelocityField for Guided<'_> {
    fn velocity(&mut self, t: f64, x: &Tensor, dt_base: f64) -> Result<Tensor> {
        let b = x.dim(0)?;
        if b != self.labels.dim(0)? {
            return Err(Error::invalid(format!(
                "the state has {b} samples but {} labels were given",
                self.labels.dim(0)?
            )));
        }
        if self.cfg == 0.0 {
            return self.forward(t, x, dt_base, &self.null);
        }
        if self.cfg == 1.0 {
            return self.forward(t, x, dt_base, &self.labels);
        }
        let (v_null, v_label) = if self.batched {
            let x2 = Tensor::cat(&[x, x], 0)?;
            let v = self.forward(t, &x2, dt_base, &self.both)?;
            (v.narrow(0, 0, b)?, v.narrow(0, b, b)?)
        } else {
            (
                self.forward(t, x, dt_base, &self.null)?,
                self.forward(t, x, dt_base, &self.labels)?,
            )
        };
        Ok((&v_null + (v_label - &v_null)?.affine(self.cfg, 0.0)?)?)
    }
}
