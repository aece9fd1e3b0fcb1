//! The sampler node's logic: LATENT (NCHW, raw) in, LATENT out, with the model's latent scale applied on the way in
//! and out, seeded noise, img2img starts via `denoise`, per-sample labels, and progress after every velocity
//! evaluation with a cheap preview at most every [`PREVIEW_INTERVAL`] (returning `false` from the progress callback
//! cancels within one evaluation).

use std::time::{Duration, Instant};

use super::array::{nchw_to_nhwc, nhwc_to_nchw, Array};
use super::image::{preview_nhwc, Rgb8};
use super::model::ModelHandle;
use super::noise_mask::mask_for_latent;
use crate::config::DitConfig;
use crate::error::{Error, Result};
use crate::sample::{self, SampleEvent, SampleOptions, SeededBatch, Start};
use crate::solver::{Solver, SolverKind};
use candle_core::Tensor;
use odelt_contract::{ExecContext, PreviewImage};

/// The sampler's settings (the node's widgets).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSettings {
    /// Noise seed: sample `i` of the batch starts from noise stream `i` of this seed, the same noise at every
    /// length and batch size, and the same as `odelt-model grid --seed` (see [`sample::sample_seeded`]).
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

/// The least time between two previews of a sampling run; the first and the last evaluation always get one. A
/// person watching sees at most 20 a second, and a small model's millisecond steps no longer each pay for an
/// image no one sees (its conversion, the host's copy, its PNG and the socket frame); a DiT-B step (100+ ms) still
/// gets one every step.
pub const PREVIEW_INTERVAL: Duration = Duration::from_millis(50);

/// When the sampler's next preview is due.
#[derive(Debug, Default)]
struct PreviewClock {
    last: Option<Instant>,
}

impl PreviewClock {
    /// Whether the evaluation finished at `now` gets a preview (`last_eval`: the run's last one); if so, the clock
    /// restarts from `now`.
    fn due(&mut self, now: Instant, last_eval: bool) -> bool {
        let due = last_eval
            || self
                .last
                .is_none_or(|t| now.saturating_duration_since(t) >= PREVIEW_INTERVAL);
        if due {
            self.last = Some(now);
        }
        due
    }
}

/// A progress report: `value` of `max` velocity evaluations and, when one is due ([`PREVIEW_INTERVAL`]), a preview
/// of the current prediction.
pub struct Progress<'a> {
    pub value: u64,
    pub max: u64,
    pub preview: Option<&'a Rgb8>,
}

impl Progress<'_> {
    /// Reports this progress (with its preview, if any) to the host through `ctx`: the sampler node's callback.
    /// `false` when the host cancelled the run, which stops the sampler within one evaluation.
    pub fn report(&self, ctx: &ExecContext<'_>) -> bool {
        let r = match self.preview {
            Some(img) => ctx.progress_with_preview(
                self.value,
                self.max,
                PreviewImage::rgb8(img.width, img.height, &img.data),
            ),
            None => ctx.progress(self.value, self.max),
        };
        r.is_ok()
    }
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
    run_sampler_masked(model, device_name, latent, None, settings, on_progress)
}

/// [`run_sampler`] with an optional noise mask (a MASK `[B, H, W]` or `[H, W]`, 1 = sample, 0 = keep; resampled
/// to the latent's size by [`mask_for_latent`]): outside the mask the result is `latent` itself, and during
/// sampling the state there follows `latent`'s flow path `(1 − t)·noise + t·latent` (noise = the seed's, or 0
/// with `add_noise` off); see [`Start::Masked`]. `None` is [`run_sampler`], the same samples bit for bit.
pub fn run_sampler_masked(
    model: &ModelHandle,
    device_name: &str,
    latent: &Array,
    noise_mask: Option<&Array>,
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
    let mask = match noise_mask {
        Some(m) => {
            let s = cfg.input_size;
            let m = mask_for_latent(m, b, s, s)?;
            Some(Tensor::from_vec(m.data, (b, s, s, 1), &dev)?)
        }
        None => None,
    };
    let batch = SeededBatch {
        seed: settings.seed,
        first: 0,
        labels: &labels,
        start: match &mask {
            Some(mask) => Start::Masked {
                source: &x,
                mask,
                noise: settings.add_noise,
            },
            None if settings.add_noise => Start::Noised(&x),
            None => Start::Given(&x),
        },
        opts: SampleOptions {
            solver,
            cfg: settings.cfg,
            t_start: 1.0 - settings.denoise,
        },
        step_code: None,
    };
    let mut clock = PreviewClock::default();
    let mut hook = |e: &SampleEvent<'_>| {
        let preview = if clock.due(Instant::now(), e.eval.nfe >= e.eval.total) {
            e.prediction().ok().and_then(|p| preview_nhwc(&p).ok())
        } else {
            None
        };
        let keep_going = on_progress(Progress {
            value: e.eval.nfe as u64,
            max: e.eval.total.max(e.eval.nfe) as u64,
            preview: preview.as_ref(),
        });
        if keep_going {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    };
    let (x1, _stats) = sample::sample_seeded(&dit, &batch, &mut hook)?;
    nhwc_to_nchw(&x1, cfg.latent_scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_come_first_last_and_at_most_every_interval() {
        let mut clock = PreviewClock::default();
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Evaluations every 10 ms, the last at 120 ms: previews at 0, 50, 100 and the last.
        let due: Vec<u64> = (0..=12)
            .map(|i| 10 * i)
            .filter(|&t| clock.due(ms(t), t == 120))
            .collect();
        assert_eq!(due, [0, 50, 100, 120]);
        // Slow evaluations (every 100 ms) each get one.
        let mut clock = PreviewClock::default();
        assert!((0..5).all(|i| clock.due(ms(100 * i), false)));
    }
    use crate::eval::grid::grid_samples;
    use crate::eval::sweep::{sample_setting, SweepOptions};
    use crate::model::Dit;
    use crate::pipeline::model::tests::{models_dir_with, small_config};
    use crate::pipeline::{LoadedCheckpoint, LoaderOptions, Precision};
    use candle_core::{DType, Device, Tensor};

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The seed contract across the sampling paths: the sampler node ([`run_sampler`]), `odelt-model grid`
    /// ([`grid_samples`] on a model loaded as the CLI loads it) and the evaluation ([`sample_setting`]) give
    /// bit-identical samples for the same model, seed, labels, steps, guidance and length.
    #[test]
    fn node_grid_and_eval_draw_identical_samples() {
        let cfg = small_config(); // 3 classes, lengths 2, 4, 6
        let dir = models_dir_with("seed-contract", "m.safetensors", &cfg);
        let ck = LoadedCheckpoint::open(&dir, &LoaderOptions::named("m.safetensors")).unwrap();
        let node_model = ModelHandle::new(ck, Precision::Fp32);
        // As `odelt-model` loads it: the whole model, then the length.
        let opened =
            crate::checkpoint::open(&dir.join("m.safetensors"), &Default::default()).unwrap();
        let cli_model = Dit::load(
            &opened.config,
            &*opened.source,
            &Device::Cpu,
            DType::F32,
            None,
        )
        .unwrap();
        let rows = 2;
        let n = rows * cfg.num_classes;
        let labels = "0,1,2,0,1,2";
        for (length, steps, guidance, seed) in [(6, 4, 1.0, 7), (2, 3, 1.5, 0), (4, 1, 0.0, 123)] {
            let settings = SamplerSettings {
                seed,
                steps,
                cfg: guidance,
                class_labels: Some(labels.into()),
                ..SamplerSettings::default()
            };
            let latent = empty_latent(&cfg, n).unwrap();
            let node = run_sampler(
                &node_model.with_length(length).unwrap(),
                "cpu",
                &latent,
                &settings,
                &mut |_| true,
            )
            .unwrap();
            assert_eq!(node.shape, vec![n, 1, 8, 8]);
            let m = cli_model.with_length(length).unwrap();
            let opts = SampleOptions {
                cfg: guidance,
                ..SampleOptions::new(Solver::Euler { steps })
            };
            let grid = grid_samples(&m, rows, seed, opts, None).unwrap();
            let grid = nhwc_to_nchw(&grid, cfg.latent_scale).unwrap();
            let what = format!("l={length} T={steps} w={guidance} seed={seed}");
            assert_eq!(bits(&grid.data), bits(&node.data), "grid vs node, {what}");
            // The evaluation in one batch, and cut into batches of 4 + 2 (the noise is the same; the samples too).
            for batch in [n, 4] {
                let so = SweepOptions {
                    steps: vec![steps],
                    lengths: vec![length],
                    n,
                    batch,
                    guidance,
                    seed,
                    fixed_dt_base: None,
                };
                let eval = sample_setting(&m, steps, &so).unwrap();
                assert_eq!(eval.labels, vec![0, 1, 2, 0, 1, 2]);
                let eval = nhwc_to_nchw(
                    &Tensor::from_vec(eval.pixels, (n, 8, 8, 1), &Device::Cpu).unwrap(),
                    cfg.latent_scale,
                )
                .unwrap();
                if batch == n {
                    assert_eq!(bits(&eval.data), bits(&node.data), "eval vs node, {what}");
                } else {
                    // Same noise; the model's outputs need not be bit-stable across batch sizes (they are on the
                    // CPU today), so only closeness is asserted.
                    let d = eval
                        .data
                        .iter()
                        .zip(&node.data)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(d < 1e-5, "eval in batches of {batch} vs node: {d}, {what}");
                }
            }
        }
        // Another seed, other samples.
        let other = run_sampler(
            &node_model,
            "cpu",
            &empty_latent(&cfg, n).unwrap(),
            &SamplerSettings {
                seed: 8,
                steps: 4,
                class_labels: Some(labels.into()),
                ..SamplerSettings::default()
            },
            &mut |_| true,
        )
        .unwrap();
        let m = cli_model.with_length(6).unwrap();
        let seven = grid_samples(
            &m,
            rows,
            7,
            SampleOptions::new(Solver::Euler { steps: 4 }),
            None,
        )
        .unwrap();
        assert_ne!(
            bits(&nhwc_to_nchw(&seven, 1.0).unwrap().data),
            bits(&other.data)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
