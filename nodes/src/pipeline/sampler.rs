//! The sampler node's logic: LATENT (NCHW, raw) in, LATENT out, with the model's latent scale applied on the way in
//! and out, seeded noise, img2img starts via `denoise`, per-sample labels, and progress with a cheap preview after
//! every velocity evaluation (returning `false` from the progress callback cancels within one evaluation).

use std::cell::RefCell;
use std::rc::Rc;

use candle_core::Tensor;

use super::array::{nchw_to_nhwc, nhwc_to_nchw, Array};
use super::image::{preview_nhwc, Rgb8};
use super::model::ModelHandle;
use crate::config::DitConfig;
use crate::error::{Error, Result};
use crate::sample;
use crate::solver::{solve, EvalEvent, EvalHook, Guided, Solver, SolverKind, VelocityField};

/// The sampler's settings (the node's widgets).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSettings {
    /// Noise seed (see [`sample::noise`]).
    pub seed: u64,
    /// Steps of Euler / Heun (ignored by Dopri5).
    pub steps: usize,
    /// The ODE_t solver.
    pub solver: SolverKind,
    /// rtol = atol of Dopri5 (ignored by the fixed-step solvers).
    pub tolerance: f64,
    /// Guidance scale w: 0 = unconditional, 1 = conditional, else `v_null + w (v_label - v_null)`.
    pub cfg: f64,
    /// Class of every sample (-1 = unconditional), unless `class_labels` is given.
    pub class_label: i64,
    /// Optional per-sample labels, e.g. `"3,7,-1"` (one per sample, or one for all).
    pub class_labels: Option<String>,
    /// 1 = start from pure noise; below 1 start at `t = 1 - denoise` from the given latent.
    pub denoise: f64,
    /// Whether to mix noise into the given latent (false: the latent is the starting point itself).
    pub add_noise: bool,
}

impl Default for SamplerSettings {
    fn default() -> Self {
        SamplerSettings {
            seed: 0,
            steps: 8,
            solver: SolverKind::Euler,
            tolerance: 1e-3,
            cfg: 1.0,
            class_label: -1,
            class_labels: None,
            denoise: 1.0,
            add_noise: true,
        }
    }
}

/// Parses a per-sample label list: integers separated by commas, spaces or semicolons (`-1` = unconditional).
pub fn parse_class_labels(s: &str) -> Result<Vec<i64>> {
    s.split([',', ';', ' ', '\n', '\t'])
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim().parse::<i64>().map_err(|_| {
                Error::invalid(format!(
                    "class_labels: `{}` is not an integer (expected e.g. \"3,7,-1\")",
                    p.trim()
                ))
            })
        })
        .collect()
}

/// Checks one class id against the model: `-1` (unconditional) or `0..num_classes`.
pub fn check_class_label(label: i64, num_classes: usize) -> Result<()> {
    if label < -1 || label >= num_classes as i64 {
        return Err(Error::invalid(format!(
            "class label {label} is outside the model's classes 0..{} (-1 = unconditional)",
            num_classes.saturating_sub(1)
        )));
    }
    Ok(())
}

/// The labels of a batch of `b` samples.
pub fn batch_labels(settings: &SamplerSettings, b: usize, num_classes: usize) -> Result<Vec<i64>> {
    let list = match settings.class_labels.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => parse_class_labels(s)?,
        _ => vec![settings.class_label],
    };
    let list = match list.len() {
        1 => vec![list[0]; b],
        n if n == b => list,
        n => {
            return Err(Error::invalid(format!(
                "class_labels gives {n} labels for a batch of {b} samples (give one per sample, or one for all)"
            )))
        }
    };
    for &l in &list {
        check_class_label(l, num_classes)?;
    }
    Ok(list)
}

/// Checks a LATENT shape against the model's native size.
pub fn check_latent_shape(shape: &[usize], cfg: &DitConfig) -> Result<()> {
    let s = cfg.input_size;
    match shape {
        [_, c, h, w] if *c == cfg.in_channels && *h == s && *w == s => Ok(()),
        other => Err(Error::invalid(format!(
            "latent_image has shape {other:?} but the model takes [B, {}, {s}, {s}] (NCHW)",
            cfg.in_channels
        ))),
    }
}

/// An empty (zero) LATENT of the model's native size.
pub fn empty_latent(cfg: &DitConfig, batch_size: usize) -> Result<Array> {
    if batch_size == 0 {
        return Err(Error::invalid("batch_size must be at least 1"));
    }
    let shape = vec![batch_size, cfg.in_channels, cfg.input_size, cfg.input_size];
    let n = shape.iter().product();
    Array::new(shape, vec![0.0; n])
}

/// A progress report: `value` of `max` velocity evaluations and a preview of the current prediction.
pub struct Progress<'a> {
    pub value: u64,
    pub max: u64,
    pub preview: Option<&'a Rgb8>,
}

/// The last velocity evaluated, shared between the field (writer) and the hook (reader).
type LastVelocity = Rc<RefCell<Option<Tensor>>>;

/// The guided model, remembering the last velocity (for the x0-prediction preview).
struct Recording<'a> {
    inner: Guided<'a>,
    last_v: LastVelocity,
}

impl VelocityField for Recording<'_> {
    fn velocity(&mut self, t: f64, x: &Tensor, dt_base: f64) -> Result<Tensor> {
        let v = self.inner.velocity(t, x, dt_base)?;
        *self.last_v.borrow_mut() = Some(v.clone());
        Ok(v)
    }
}

struct Hook<'f> {
    on_progress: &'f mut dyn FnMut(Progress<'_>) -> bool,
    last_v: LastVelocity,
}

/// Runs the sampler: `latent` is the NCHW raw LATENT (its shape gives the batch; its values matter only when
/// `denoise < 1` or `add_noise` is false). Returns the NCHW raw result.
pub fn run_sampler(
    model: &ModelHandle,
    device_name: &str,
    latent: &Array,
    settings: &SamplerSettings,
    on_progress: &mut dyn FnMut(Progress<'_>) -> bool,
) -> Result<Array> {
    let cfg = model.config().clone();
    check_latent_shape(&latent.shape, &cfg)?;
    if !(0.0..=1.0).contains(&settings.denoise) || settings.denoise.is_nan() {
        return Err(Error::invalid(format!(
            "denoise must be in [0, 1], got {}",
            settings.denoise
        )));
    }
    let solver = Solver::from_parts(settings.solver, settings.steps, settings.tolerance)?;
    let b = latent.shape[0];
    let labels = batch_labels(settings, b, cfg.num_classes)?;
    let dit = model.dit(device_name)?;
    let dev = dit.device().clone();
    let labels = sample::labels(&labels, cfg.num_classes, &dev)?;
    let x = nchw_to_nhwc(latent, cfg.latent_scale, &dev)?;
    let t_start = 1.0 - settings.denoise;
    let x_start = if settings.add_noise {
        let z = sample::noise(x.dims(), settings.seed, &dev)?;
        sample::noised_start(&x, &z, t_start)?
    } else {
        x
    };
    let last_v = LastVelocity::default();
    let mut field = Recording {
        inner: Guided::new(&dit, &labels, settings.cfg)?,
        last_v: last_v.clone(),
    };
    let mut hook = Hook {
        on_progress,
        last_v,
    };
    let (x1, _stats) = solve(&mut field, &x_start, t_start, &solver, &mut hook)?;
    nhwc_to_nchw(&x1, cfg.latent_scale)
}

impl EvalHook for Hook<'_> {
    fn on_eval(&mut self, e: &EvalEvent) -> Result<()> {
        let last_v = self.last_v.borrow().clone();
        let pred = match last_v {
            Some(v) if v.dims() == e.x.dims() => (e.x + v.affine(1.0 - e.t, 0.0)?)?,
            _ => e.x.clone(),
        };
        let preview = preview_nhwc(&pred).ok();
        let keep_going = (self.on_progress)(Progress {
            value: e.nfe as u64,
            max: e.total.max(e.nfe) as u64,
            preview: preview.as_ref(),
        });
        if keep_going {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    }
}
