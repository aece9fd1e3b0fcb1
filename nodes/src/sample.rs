//! Sampling in one call: seeded noise, labels, img2img starts, and [`sample`] (guided model + ODE_t solver),
//! used by the plugin's sampler node and by the trainer's evaluation.
//!
//! ## Noise seeds
//! [`noise`] gives every sample of the batch its own ChaCha8 stream: sample `i` of a batch with seed `s` is
//! `ChaCha8Rng::seed_from_u64(s)` on stream `i`, drawn as standard normals in row-major order of the sample.
//! So sample `i` does not depend on the batch size (a batch of 8 starts with the 4 samples of a batch of 4
//! with the same seed; sample 0 is what a batch of 1 gives), and seeds `s` and `s + 1` share no samples (an
//! "increment" seed widget after a batch of 4 does not repeat 3 of its images, as `seed + i` per sample would).

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::{Error, Result};
use crate::model::Dit;
use crate::solver::{solve, EvalHook, Guided, SolveStats, Solver};

/// Deterministic N(0, 1) f32 noise of `shape` (dim 0 = batch; see the module docs for the per-sample streams).
/// For the model use its NHWC layout `[B, S, S, C]`.
pub fn noise(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    let Some((&b, rest)) = shape.split_first() else {
        return Err(Error::invalid(
            "noise needs a shape with a batch dimension, got []",
        ));
    };
    let per: usize = rest.iter().product();
    let mut vals = Vec::with_capacity(b * per);
    for i in 0..b {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(i as u64);
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

/// The img2img start `x_t = (1 - t)·noise + t·x1` (t = 0 noise, t = 1 data).
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

/// Integrates the guided model at its active length (set with [`Dit::with_length`]) from `x_start` (NHWC f32
/// at time `opts.t_start`) to t = 1 and returns the NHWC latent and the solver's costs. `labels`: `[B]` class
/// ids with `num_classes` for unconditional samples ([`labels`] maps `-1`).
pub fn sample(
    model: &Dit,
    x_start: &Tensor,
    labels: &Tensor,
    opts: &SampleOptions,
    hook: &mut dyn EvalHook,
) -> Result<(Tensor, SolveStats)> {
    let mut field = Guided::new(model, labels, opts.cfg)?;
    let x = x_start.to_dtype(DType::F32)?;
    solve(&mut field, &x, opts.t_start, &opts.solver, hook)
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
    }
}
