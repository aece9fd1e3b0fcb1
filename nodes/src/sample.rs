//! Sampling in one call: seeded noise, labels, img2img starts, [`sample_seeded`] (the one seeded sampling path) and
//! [`sample`] (guided model + ODE_t solver from a given start).
//!
//! [`sample_seeded`] is what every sampler in the project calls: the plugin's sampler node
//! ([`crate::pipeline::run_sampler`]), `odelt-model grid` and the evaluation sweep ([`crate::eval::sweep`]). So the
//! same model, seed, labels, steps and length give the same samples through each of them.
//!
//! ## Noise seeds (the seed contract)
//! Sample `i` of a batch with seed `s` starts from noise stream `i` of seed `s`: `ChaCha8Rng::seed_from_u64(s)`
//! on stream `i`, drawn as standard normals in row-major order of the sample's NHWC `[S, S, C]` values
//! ([`noise`], [`noise_from`]). Consequences:
//! - sample `i` does not depend on the batch size (a batch of 8 starts with the 4 samples of a batch of 4 with
//!   the same seed; sample 0 is what a batch of 1 gives), nor on how a large set is cut into batches (a chunk
//!   starting at sample `k` draws streams `k, k+1, …`: [`SeededBatch::first`]);
//! - the noise does not depend on the active length `l`, the solver, the steps or the guidance, so one seed
//!   compares lengths and step counts from the same start;
//! - seeds `s` and `s + 1` share no samples (an "increment" seed widget after a batch of 4 does not repeat 3 of
//!   its images, as `seed + i` per sample would).
//!
//! Saved workflows depend on this: changing it changes every seeded image.

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::{Error, Result};
use crate::model::Dit;
use crate::solver::{solve, EvalEvent, EvalHook, Guided, SolveStats, Solver, VelocityField};

/// Deterministic N(0, 1) f32 noise of `shape` (dim 0 = batch): sample `i` is noise stream `i` of `seed` (see
/// the module docs). For the model use its NHWC layout `[B, S, S, C]`. Same as [`noise_from`] with `first = 0`.
pub fn noise(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    noise_from(shape, seed, 0, device)
}

/// [`noise`] for samples `first..first + B` of a larger set: sample `j` of the tensor is noise stream
/// `first + j` of `seed`, exactly the noise that sample has in one batch of the whole set.
pub fn noise_from(shape: &[usize], seed: u64, first: u64, device: &Device) -> Result<Tensor> {
    let Some((&b, rest)) = shape.split_first() else {
        return Err(Error::invalid(
            "noise needs a shape with a batch dimension, got []",
        ));
    };
    let per: usize = rest.iter().product();
    let mut vals = Vec::with_capacity(b * per);
    for i in 0..b as u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(first + i);
        vals.extend((0..per).map(|_| rng.sample::<f32, _>(StandardNormal)));
    }
    Ok(Tensor::from_vec(vals, shape, device)?)
}

/// A `[B]` u32 label tensor from class ids, mapping `-1` (unconditional) to the null label `num_classes`.
/// Other values outside `0..=num_classes` are an error.
pub fn labels(values: &[i64], num_classes: usize, device: &Device) -> Result<Tensor> {
    let ids = values
        .iter()
        .enumerate()
        .map(|(i, &v)| match v {
            -1 => Ok(num_classes as u32),
            v if (0..=num_classes as i64).contains(&v) => Ok(v as u32),
            v => Err(Error::invalid(format!(
                "class label {v} of sample {i} is outside -1..={num_classes} (-1 or {num_classes} = unconditional)"
            ))),
        })
        .collect::<Result<Vec<u32>>>()?;
    Ok(Tensor::from_vec(ids, values.len(), device)?)
}

/// The img2img start `x_t = (1 - t)·noise + t·x1` (t = 0 noise, t = 1 data; at t = 0 exactly the noise, whatever
/// `x1` holds).
pub fn noised_start(x1: &Tensor, noise: &Tensor, t_start: f64) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&t_start) {
        return Err(Error::invalid(format!(
            "t_start must be in [0, 1], got {t_start}"
        )));
    }
    if x1.dims() != noise.dims() {
        return Err(Error::invalid(format!(
            "image latent {:?} and noise {:?} differ in shape",
            x1.dims(),
            noise.dims()
        )));
    }
    if t_start == 0.0 {
        // Full denoise: the noise itself, whatever `x1` holds (the blend gives the same values for a finite `x1`,
        // in three tensor ops).
        return Ok(noise.clone());
    }
    let x1 = x1.to_dtype(noise.dtype())?;
    Ok((noise.affine(1.0 - t_start, 0.0)? + x1.affine(t_start, 0.0)?)?)
}

/// How to sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOptions {
    pub solver: Solver,
    /// Guidance scale w (0: unconditional only, 1: conditional only, else v_null + w·(v_label − v_null)).
    pub cfg: f64,
    /// Start time: 0 from pure noise; > 0 for an img2img start made with [`noised_start`].
    pub t_start: f64,
}

impl SampleOptions {
    /// From noise (t_start = 0), conditional only (cfg = 1).
    pub fn new(solver: Solver) -> Self {
        SampleOptions {
            solver,
            cfg: 1.0,
            t_start: 0.0,
        }
    }
}

/// Where a seeded batch starts.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// Pure seeded noise at t = 0 (`opts.t_start` must be 0): what `odelt-model grid`, the evaluation and the
    /// sampler node at `denoise = 1` start from.
    Noise,
    /// img2img: `(1 - t)·noise + t·x1` at `t = opts.t_start` ([`noised_start`]) with the batch's seeded noise;
    /// `x1` is the NHWC `[B, S, S, C]` model-space image latent. At `t_start = 0` this is exactly [`Start::Noise`]
    /// (for any finite `x1`).
    Noised(&'a Tensor),
    /// `x` (NHWC `[B, S, S, C]`) itself at `t = opts.t_start`: no noise is drawn and the seed is unused.
    Given(&'a Tensor),
    /// Masked sampling (inpainting) of `source` (NHWC `[B, S, S, C]`, model space) with `mask` (`[B, S, S, 1]`
    /// f32 in [0, 1]; 1 = sample, 0 = keep). With `noise` the batch's seeded noise `z` is drawn as for
    /// [`Start::Noised`]; without it `z = 0` and the seed is unused (ComfyUI's `add_noise` off). The start is
    /// `m·x_in + (1 − m)·((1 − t)·z + t·source)` at `t = opts.t_start`, where `x_in` is the start of
    /// [`Start::Noised`] (with noise) or `source` itself (without). At every evaluation the velocity is
    /// `m·v + (1 − m)·(source − z)`: outside the mask the state follows the source's flow path exactly (a
    /// straight line, which every solver integrates exactly), inside the model samples; where `m = 0` the result
    /// is the source itself. With a mask of ones and noise this is [`Start::Noised`] (up to float rounding).
    Masked {
        source: &'a Tensor,
        mask: &'a Tensor,
        noise: bool,
    },
}

/// One seeded batch: what [`sample_seeded`] samples.
#[derive(Debug, Clone, Copy)]
pub struct SeededBatch<'a> {
    /// The noise seed (see the module docs for the contract).
    pub seed: u64,
    /// Index of the batch's first sample in the set it belongs to, i.e. its noise stream: 0 for a batch on its
    /// own (the sampler node, the grid); `k` for the chunk of a larger set that starts at sample `k` (the
    /// evaluation cuts its N samples into batches), so cutting a set into batches changes no sample.
    pub first: u64,
    /// `[B]` class ids on the model's device, `num_classes` for unconditional samples ([`labels`] maps `-1`).
    /// Their number is the batch size.
    pub labels: &'a Tensor,
    pub start: Start<'a>,
    /// Solver, guidance scale and start time.
    pub opts: SampleOptions,
    /// Force this step code `dt_base` at every evaluation (for models trained without the time-consistency term,
    /// which know only their finest code); `None`: the solver's code (see [`crate::solver`]).
    pub step_code: Option<f64>,
}

impl<'a> SeededBatch<'a> {
    /// A batch on its own (`first = 0`) from pure noise, with the solver's step codes.
    pub fn new(seed: u64, labels: &'a Tensor, opts: SampleOptions) -> Self {
        SeededBatch {
            seed,
            first: 0,
            labels,
            start: Start::Noise,
            opts,
            step_code: None,
        }
    }
}

/// What a [`SampleHook`] sees after every velocity evaluation.
#[derive(Debug, Clone, Copy)]
pub struct SampleEvent<'a> {
    /// The solver's report: evaluations done and expected, the time and the state.
    pub eval: &'a EvalEvent<'a>,
    /// The velocity evaluated last (the evaluation this event reports).
    pub velocity: Option<&'a Tensor>,
}

impl SampleEvent<'_> {
    /// The data (t = 1) prediction `x + (1 - t)·v` from the state and the last velocity (the state itself when
    /// there is none of its shape); e.g. for a preview.
    pub fn prediction(&self) -> Result<Tensor> {
        let e = self.eval;
        Ok(match self.velocity {
            Some(v) if v.dims() == e.x.dims() => (e.x + v.affine(1.0 - e.t, 0.0)?)?,
            _ => e.x.clone(),
        })
    }
}

/// Called after every velocity evaluation of [`sample_seeded`] (progress, previews, cancellation); returning an
/// error (normally [`Error::Cancelled`]) stops the solve at once and the sampler returns that error.
pub trait SampleHook {
    fn on_eval(&mut self, e: &SampleEvent<'_>) -> Result<()>;
}

/// No hook.
impl SampleHook for () {
    fn on_eval(&mut self, _e: &SampleEvent<'_>) -> Result<()> {
        Ok(())
    }
}

/// A closure as a hook.
impl<F: FnMut(&SampleEvent<'_>) -> Result<()>> SampleHook for F {
    fn on_eval(&mut self, e: &SampleEvent<'_>) -> Result<()> {
        self(e)
    }
}

/// Samples one seeded batch with `model` at its active length (set with [`Dit::with_length`]): the start
/// (noise stream `batch.first + i` of `batch.seed` for sample `i`, see the module docs), then the guided model
/// integrated by `batch.opts.solver` from `batch.opts.t_start` to t = 1. Returns the NHWC `[B, S, S, C]` f32
/// model-space latent and the solver's costs.
///
/// **Seed contract**: sample `i` of a batch with seed `s` starts from noise stream `i` of seed `s` (stream
/// `first + i` for a chunk of a larger set), so its noise depends neither on the batch size nor on the active
/// length `l`. The same model, seed, labels, solver settings and length give the same batch, bit for bit, wherever
/// it is drawn: the sampler node, `odelt-model grid`, the evaluation (tested in `pipeline::sampler` and
/// `tests/tests/seed_contract.rs`).
pub fn sample_seeded(
    model: &Dit,
    batch: &SeededBatch<'_>,
    hook: &mut dyn SampleHook,
) -> Result<(Tensor, SolveStats)> {
    let cfg = model.config();
    let b = match batch.labels.dims() {
        [b] => *b,
        d => {
            return Err(Error::invalid(format!(
                "labels must have shape [B] (one class id per sample), got {d:?}"
            )))
        }
    };
    let shape = [b, cfg.input_size, cfg.input_size, cfg.in_channels];
    let check = |x: &Tensor| -> Result<()> {
        if x.dims() == shape {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "the start latent has shape {:?} but {b} labels at the model's size need {shape:?} (NHWC)",
                x.dims()
            )))
        }
    };
    let t_start = batch.opts.t_start;
    let x_start = match batch.start {
        Start::Noise => {
            if t_start != 0.0 {
                return Err(Error::invalid(format!(
                    "a start from pure noise is at t = 0, got t_start {t_start} (give the image latent to start \
                     later)"
                )));
            }
            noise_from(&shape, batch.seed, batch.first, model.device())?
        }
        Start::Noised(x1) => {
            check(x1)?;
            let z = noise_from(&shape, batch.seed, batch.first, model.device())?;
            noised_start(x1, &z, t_start)?
        }
        Start::Given(x) => {
            check(x)?;
            x.clone()
        }
        Start::Masked {
            source,
            mask,
            noise,
        } => {
            check(source)?;
            let want = [b, cfg.input_size, cfg.input_size, 1];
            if mask.dims() != want {
                return Err(Error::invalid(format!(
                    "the noise mask has shape {:?} but the batch needs {want:?} (NHWC, one channel)",
                    mask.dims()
                )));
            }
            let source = source.to_dtype(DType::F32)?;
            let mask = mask.to_dtype(DType::F32)?;
            let z = if noise {
                noise_from(&shape, batch.seed, batch.first, model.device())?
            } else {
                Tensor::zeros(&shape, DType::F32, model.device())?
            };
            let path = noised_start(&source, &z, t_start)?;
            let inside = if noise { path.clone() } else { source.clone() };
            let x_start = blend(&inside, &path, &mask)?;
            let inpaint = Inpaint {
                keep_velocity: (&source - &z)?,
                keep_exact: mask.eq(0f32)?.to_dtype(DType::F32)?.broadcast_as(&shape)?,
                source,
                mask,
            };
            let (x1, stats) = integrate_with(
                model,
                &x_start,
                batch.labels,
                &batch.opts,
                batch.step_code,
                Some(&inpaint),
                hook,
            )?;
            // Where the mask is 0 the path ends at the source: take it exactly (no rounding of the steps).
            let k = &inpaint.keep_exact;
            let x1 = ((&x1 * (1.0 - k)?)? + (&inpaint.source * k)?)?;
            return Ok((x1, stats));
        }
    };
    integrate(
        model,
        &x_start,
        batch.labels,
        &batch.opts,
        batch.step_code,
        hook,
    )
}

/// `m·a + (1 − m)·b` with `m` `[B, S, S, 1]` broadcast over the channels.
fn blend(a: &Tensor, b: &Tensor, m: &Tensor) -> Result<Tensor> {
    Ok(((a - b)?.broadcast_mul(m)? + b)?)
}

/// What masked sampling needs at every evaluation.
struct Inpaint {
    /// The source (model space, NHWC).
    source: Tensor,
    /// `[B, S, S, 1]` in [0, 1].
    mask: Tensor,
    /// `source − z`: the velocity of the source's flow path.
    keep_velocity: Tensor,
    /// 1 where the mask is exactly 0, broadcast to the state's shape.
    keep_exact: Tensor,
}

/// Integrates the guided model at its active length (set with [`Dit::with_length`]) from `x_start` (NHWC f32
/// at time `opts.t_start`) to t = 1 and returns the NHWC latent and the solver's costs. `labels`: `[B]` class
/// ids with `num_classes` for unconditional samples ([`labels`] maps `-1`). Draws no noise: seeded sampling is
/// [`sample_seeded`], which integrates through the same code.
pub fn sample(
    model: &Dit,
    x_start: &Tensor,
    labels: &Tensor,
    opts: &SampleOptions,
    hook: &mut dyn EvalHook,
) -> Result<(Tensor, SolveStats)> {
    let mut relay = |e: &SampleEvent<'_>| hook.on_eval(e.eval);
    integrate(model, x_start, labels, opts, None, &mut relay)
}

/// The guided model as a velocity field, optionally at a fixed step code, remembering its last velocity.
struct Field<'a, 'm> {
    guided: Guided<'m>,
    step_code: Option<f64>,
    last_v: &'a RefCell<Option<Tensor>>,
    inpaint: Option<&'a Inpaint>,
}

impl VelocityField for Field<'_, '_> {
    fn velocity(&mut self, t: f64, x: &Tensor, dt_base: f64) -> Result<Tensor> {
        let v = self
            .guided
            .velocity(t, x, self.step_code.unwrap_or(dt_base))?;
        let v = match self.inpaint {
            Some(ip) => blend(&v, &ip.keep_velocity, &ip.mask)?,
            None => v,
        };
        *self.last_v.borrow_mut() = Some(v.clone());
        Ok(v)
    }
}

/// Hands the solver's events and the last velocity to a [`SampleHook`].
struct Relay<'a, 'h> {
    hook: &'h mut dyn SampleHook,
    last_v: &'a RefCell<Option<Tensor>>,
}

impl EvalHook for Relay<'_, '_> {
    fn on_eval(&mut self, e: &EvalEvent) -> Result<()> {
        let v = self.last_v.borrow().clone();
        self.hook.on_eval(&SampleEvent {
            eval: e,
            velocity: v.as_ref(),
        })
    }
}

fn integrate(
    model: &Dit,
    x_start: &Tensor,
    labels: &Tensor,
    opts: &SampleOptions,
    step_code: Option<f64>,
    hook: &mut dyn SampleHook,
) -> Result<(Tensor, SolveStats)> {
    integrate_with(model, x_start, labels, opts, step_code, None, hook)
}

fn integrate_with(
    model: &Dit,
    x_start: &Tensor,
    labels: &Tensor,
    opts: &SampleOptions,
    step_code: Option<f64>,
    inpaint: Option<&Inpaint>,
    hook: &mut dyn SampleHook,
) -> Result<(Tensor, SolveStats)> {
    if let Some(d) = step_code.filter(|d| !d.is_finite()) {
        return Err(Error::invalid(format!("step code must be finite, got {d}")));
    }
    let last_v = RefCell::new(None);
    let mut field = Field {
        guided: Guided::new(model, labels, opts.cfg)?,
        step_code,
        last_v: &last_v,
        inpaint,
    };
    let mut relay = Relay {
        hook,
        last_v: &last_v,
    };
    let x = x_start.to_dtype(DType::F32)?;
    solve(&mut field, &x, opts.t_start, &opts.solver, &mut relay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_per_sample_and_deterministic() {
        let dev = Device::Cpu;
        let a = noise(&[4, 2, 2, 3], 42, &dev).unwrap();
        let b = noise(&[4, 2, 2, 3], 42, &dev).unwrap();
        let c = noise(&[2, 2, 2, 3], 42, &dev).unwrap();
        let d = noise(&[4, 2, 2, 3], 43, &dev).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v(&a), v(&b));
        assert_eq!(v(&a.narrow(0, 0, 2).unwrap()), v(&c));
        let (av, dv) = (v(&a), v(&d));
        // No sample of seed 43 repeats a sample of seed 42.
        for i in 0..4 {
            for j in 0..4 {
                assert_ne!(av[i * 12..(i + 1) * 12], dv[j * 12..(j + 1) * 12]);
            }
        }
        // Roughly standard normal.
        let big = v(&noise(&[2, 20000], 7, &dev).unwrap());
        let n = big.len() as f64;
        let mean = big.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = big.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
        assert!(noise(&[], 1, &dev).is_err());
    }

    #[test]
    fn noise_of_a_chunk_is_that_part_of_the_whole_batch() {
        let dev = Device::Cpu;
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let whole = noise(&[5, 2, 2, 1], 9, &dev).unwrap();
        let chunk = noise_from(&[3, 2, 2, 1], 9, 2, &dev).unwrap();
        assert_eq!(v(&whole.narrow(0, 2, 3).unwrap()), v(&chunk));
        assert_eq!(
            v(&noise_from(&[5, 2, 2, 1], 9, 0, &dev).unwrap()),
            v(&whole)
        );
    }

    fn tiny_model() -> Dit {
        let cfg = crate::DitConfig {
            input_size: 4,
            in_channels: 1,
            patch_size: 2,
            hidden_size: 8,
            depth: 4,
            num_heads: 2,
            mlp_hidden: 16,
            num_classes: 3,
            depth_group: 2,
            depth_min: 2,
            length_embedding: true,
            latent_scale: 1.0,
        };
        let params = crate::params::param_specs(&cfg, cfg.depth)
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let n: usize = s.shape.iter().product();
                let v: Vec<f32> = (0..n)
                    .map(|k| 0.2 * ((k + 5 * i) as f32 * 0.61).sin())
                    .collect();
                let t = Tensor::from_vec(v, s.shape.as_slice(), &Device::Cpu).unwrap();
                (s.name, t)
            })
            .collect();
        let params = crate::params::TensorMap(params);
        Dit::load(&cfg, &params, &Device::Cpu, DType::F32, None).unwrap()
    }

    #[test]
    fn every_start_of_the_seeded_path_agrees() {
        let m = tiny_model().with_length(2).unwrap();
        let dev = Device::Cpu;
        let bits = |t: &Tensor| -> Vec<u32> {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        let y = Tensor::new(&[0u32, 2, 3], &dev).unwrap();
        let opts = SampleOptions {
            cfg: 1.5,
            ..SampleOptions::new(Solver::Euler { steps: 3 })
        };
        let base = SeededBatch::new(5, &y, opts);
        let (from_noise, st) = sample_seeded(&m, &base, &mut ()).unwrap();
        assert_eq!(st.nfe, 3);
        assert_eq!(from_noise.dims(), &[3, 4, 4, 1]);
        // Noise mixed into any image at t = 0, or given as the start, is the same start.
        let z = noise(&[3, 4, 4, 1], 5, &dev).unwrap();
        let img = Tensor::ones((3, 4, 4, 1), DType::F32, &dev).unwrap();
        for start in [Start::Noised(&img), Start::Given(&z)] {
            let b = SeededBatch { start, ..base };
            assert_eq!(
                bits(&sample_seeded(&m, &b, &mut ()).unwrap().0),
                bits(&from_noise)
            );
        }
        // `sample` from that noise integrates the same way.
        assert_eq!(
            bits(&sample(&m, &z, &y, &opts, &mut ()).unwrap().0),
            bits(&from_noise)
        );
        // A chunk of a larger set: sample 1 of the set is sample 0 of the chunk starting there.
        let y1 = y.narrow(0, 1, 2).unwrap();
        let chunk = SeededBatch {
            first: 1,
            labels: &y1,
            ..base
        };
        let (c, _) = sample_seeded(&m, &chunk, &mut ()).unwrap();
        let whole = from_noise.narrow(0, 1, 2).unwrap();
        let diff = (c - &whole).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        // A fixed step code reaches the model at every evaluation.
        let fixed = SeededBatch {
            step_code: Some(0.0),
            ..base
        };
        let (xf, _) = sample_seeded(&m, &fixed, &mut ()).unwrap();
        let mut g = Guided::new(&m, &y, 1.5).unwrap();
        let mut field = |t: f64, x: &Tensor, _d: f64| g.velocity(t, x, 0.0);
        let (want, _) = solve(&mut field, &z, 0.0, &opts.solver, &mut ()).unwrap();
        assert_eq!(bits(&xf), bits(&want));
        assert_ne!(bits(&xf), bits(&from_noise));
        // Errors: pure noise after t = 0, a start of the wrong shape, a non-finite step code.
        let late = SeededBatch {
            opts: SampleOptions {
                t_start: 0.5,
                ..opts
            },
            ..base
        };
        assert!(sample_seeded(&m, &late, &mut ()).is_err());
        let wrong = Tensor::zeros((2, 4, 4, 1), DType::F32, &dev).unwrap();
        let b = SeededBatch {
            start: Start::Noised(&wrong),
            ..base
        };
        assert!(sample_seeded(&m, &b, &mut ()).is_err());
        let b = SeededBatch {
            step_code: Some(f64::NAN),
            ..base
        };
        assert!(sample_seeded(&m, &b, &mut ()).is_err());
    }

    #[test]
    fn masked_sampling_keeps_the_source_outside_and_samples_inside() {
        let m = tiny_model().with_length(2).unwrap();
        let dev = Device::Cpu;
        let y = Tensor::new(&[0u32, 3], &dev).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let source = Tensor::from_vec(
            (0..32)
                .map(|i| (i as f32 * 0.37).sin())
                .collect::<Vec<f32>>(),
            (2, 4, 4, 1),
            &dev,
        )
        .unwrap();
        // Left half sampled (1), right half kept (0).
        let mvals: Vec<f32> = (0..32).map(|i| if i % 4 < 2 { 1.0 } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mvals.clone(), (2, 4, 4, 1), &dev).unwrap();
        let opts = SampleOptions {
            t_start: 0.4,
            ..SampleOptions::new(Solver::Heun { steps: 3 })
        };
        let z = v(&noise(&[2, 4, 4, 1], 11, &dev).unwrap());
        let src = v(&source);
        let batch = SeededBatch {
            start: Start::Masked {
                source: &source,
                mask: &mask,
                noise: true,
            },
            ..SeededBatch::new(11, &y, opts)
        };
        // At every evaluation the kept half lies on the source's flow path.
        let mut worst = 0f32;
        let mut hook = |e: &SampleEvent<'_>| {
            let x = e.eval.x.flatten_all()?.to_vec1::<f32>()?;
            let t = e.eval.t as f32;
            for i in (0..32).filter(|&i| mvals[i] == 0.0) {
                worst = worst.max((x[i] - ((1.0 - t) * z[i] + t * src[i])).abs());
            }
            Ok(())
        };
        let (x1, _) = sample_seeded(&m, &batch, &mut hook).unwrap();
        assert!(worst < 1e-5, "off the path by {worst}");
        let out = v(&x1);
        for i in 0..32 {
            if mvals[i] == 0.0 {
                assert_eq!(out[i], src[i], "kept value {i}");
            }
        }
        // Inside, the model sampled: the values moved away from the source.
        let inside: f32 = (0..32)
            .filter(|&i| mvals[i] == 1.0)
            .map(|i| (out[i] - src[i]).abs())
            .sum();
        assert!(inside > 1e-3);
        // A mask of ones is img2img.
        let ones = Tensor::ones((2, 4, 4, 1), DType::F32, &dev).unwrap();
        let all = SeededBatch {
            start: Start::Masked {
                source: &source,
                mask: &ones,
                noise: true,
            },
            ..batch
        };
        let plain = SeededBatch {
            start: Start::Noised(&source),
            ..batch
        };
        let a = v(&sample_seeded(&m, &all, &mut ()).unwrap().0);
        let b = v(&sample_seeded(&m, &plain, &mut ()).unwrap().0);
        let d = a
            .iter()
            .zip(&b)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "{d}");
        // Without noise and a mask of zeros the result is the source; a mask of the wrong shape is refused.
        let zeros = Tensor::zeros((2, 4, 4, 1), DType::F32, &dev).unwrap();
        let keep = SeededBatch {
            start: Start::Masked {
                source: &source,
                mask: &zeros,
                noise: false,
            },
            ..batch
        };
        assert_eq!(v(&sample_seeded(&m, &keep, &mut ()).unwrap().0), src);
        let wrong = Tensor::zeros((1, 4, 4, 1), DType::F32, &dev).unwrap();
        let bad = SeededBatch {
            start: Start::Masked {
                source: &source,
                mask: &wrong,
                noise: true,
            },
            ..batch
        };
        assert!(sample_seeded(&m, &bad, &mut ()).is_err());
    }

    #[test]
    fn the_hook_sees_each_velocity_and_can_cancel() {
        let m = tiny_model();
        let y = Tensor::new(&[1u32], &Device::Cpu).unwrap();
        let base = SeededBatch::new(3, &y, SampleOptions::new(Solver::Euler { steps: 4 }));
        let mut seen = Vec::new();
        let mut hook = |e: &SampleEvent<'_>| {
            let v = e.velocity.expect("a velocity after every evaluation");
            let p = e.prediction()?;
            // x + (1 - t) v
            let want = (e.eval.x + v.affine(1.0 - e.eval.t, 0.0)?)?;
            assert_eq!(
                p.flatten_all()?.to_vec1::<f32>()?,
                want.flatten_all()?.to_vec1::<f32>()?
            );
            seen.push(e.eval.nfe);
            Ok(())
        };
        sample_seeded(&m, &base, &mut hook).unwrap();
        assert_eq!(seen, vec![1, 2, 3, 4]);
        let mut calls = 0;
        let mut cancel = |_: &SampleEvent<'_>| {
            calls += 1;
            Err(Error::Cancelled)
        };
        let e = sample_seeded(&m, &base, &mut cancel).unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e}");
        assert_eq!(calls, 1);
    }

    #[test]
    fn labels_map_unconditional() {
        let t = labels(&[0, 9, -1, 10], 10, &Device::Cpu).unwrap();
        assert_eq!(t.to_vec1::<u32>().unwrap(), vec![0, 9, 10, 10]);
        assert!(labels(&[11], 10, &Device::Cpu).is_err());
        assert!(labels(&[-2], 10, &Device::Cpu).is_err());
    }

    #[test]
    fn noised_start_interpolates() {
        let dev = Device::Cpu;
        let x1 = Tensor::new(&[2.0f32, 4.0], &dev).unwrap();
        let z = Tensor::new(&[-2.0f32, 0.0], &dev).unwrap();
        let x = noised_start(&x1, &z, 0.25).unwrap();
        assert_eq!(x.to_vec1::<f32>().unwrap(), vec![-1.0, 1.0]);
        assert!(noised_start(&x1, &z, 1.5).is_err());
        assert!(noised_start(&x1, &z.narrow(0, 0, 1).unwrap(), 0.5).is_err());
        // t = 0 is the noise itself, even where the image latent is not finite; shapes are still checked.
        let bad = Tensor::new(&[f32::NAN, f32::INFINITY], &dev).unwrap();
        let x = noised_start(&bad, &z, 0.0).unwrap();
        assert_eq!(x.to_vec1::<f32>().unwrap(), vec![-2.0, 0.0]);
        assert!(noised_start(&bad, &z.narrow(0, 0, 1).unwrap(), 0.0).is_err());
    }
}
