//! Class-conditional sampling for evaluation: fixed noise per sample index, the project's Euler solver
//! ([`crate::solver`], ODE_{T|l,d}: `x += v(t, x, log2 T) / T`), classifier-free guidance through
//! [`crate::solver::Guided`].

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::Result;
use crate::model::Dit;
use crate::solver::{solve, Guided, Solver, VelocityField};

/// How to sample.
#[derive(Debug, Clone, Copy)]
pub struct SampleSpec {
    /// Euler steps T.
    pub steps: usize,
    /// Guidance scale (1 = conditional only, one pass).
    pub guidance: f64,
    /// Force this step code at every T (for models trained without the time-consistency term, which only know the
    /// finest code); `None`: the solver's `log2 T`.
    pub fixed_dt_base: Option<f64>,
}

/// Standard-normal noise for samples `first..first + n` (each sample's noise depends only on `seed` and its
/// index, so every (T, l) setting starts from the same noise).
pub fn indexed_noise(
    seed: u64,
    first: usize,
    n: usize,
    shape: (usize, usize, usize),
    device: &Device,
) -> Result<Tensor> {
    let per = shape.0 * shape.1 * shape.2;
    let mut v = Vec::with_capacity(n * per);
    for i in first..first + n {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(i as u64 + 1);
        v.extend((0..per).map(|_| -> f32 { StandardNormal.sample(&mut rng) }));
    }
    Ok(Tensor::from_vec(v, (n, shape.0, shape.1, shape.2), device)?)
}

/// Samples images for `labels` from `noise` with `model` at its active length.
pub fn sample(model: &Dit, noise: &Tensor, labels: &[u32], spec: &SampleSpec) -> Result<Tensor> {
    let y = Tensor::from_slice(labels, labels.len(), model.device())?;
    let mut guided = Guided::new(model, &y, spec.guidance)?;
    let solver = Solver::Euler { steps: spec.steps };
    let out = match spec.fixed_dt_base {
        None => solve(&mut guided, noise, 0.0, &solver, &mut ())?.0,
        Some(d) => {
            let mut fixed = |t: f64, x: &Tensor, _d: f64| guided.velocity(t, x, d);
            solve(&mut fixed, noise, 0.0, &solver, &mut ())?.0
        }
    };
    Ok(out)
}
