//! One training batch of the ODE_t(ODE_l) objective (spec §5.1 and §5.2), at any batch size B:
//!
//! ```text
//! rows [0, nb)        time consistency: dt_base ~ U{0..6} (or drawn with the weights `dt_weights`), t on the
//!                     2^dt_base grid, target = mean of two half-steps of the EMA teacher at full length with code
//!                     dt_base + 1; real labels
//! rows [nb, B)        flow matching: t = floor(128 U) / 128, dt_base = 7, target v = x1 - x0,
//!                     labels dropped to null with probability class_dropout
//! rows [B - nl, B)    (a subset of the flow rows) length consistency: target = EMA teacher at an independent
//!                     random length, same inputs
//! every row           student length b ~ U{depth_min + group k}
//! ```
//! with `nb = B / bootstrap_every`, `nl = B / length_bootstrap_every`, x_t = (1 - t) x0 + t x1, x0 ~ N(0, I).
//! Loss = mean over rows of the per-row mean squared error.

use candle_core::{Device, Tensor};
use rand::Rng;
use rand_distr::weighted::WeightedIndex;
use rand_distr::{Distribution, StandardNormal};

use crate::config::DitConfig;
use crate::error::{Error, Result};
use crate::model::Dit;

/// Which terms are on, and their row shares.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ObjectiveConfig {
    /// One in `bootstrap_every` rows is a time-consistency row (0: no time-consistency term).
    pub bootstrap_every: usize,
    /// One in `length_bootstrap_every` rows gets a length-consistency target (0: no length-consistency term).
    pub length_bootstrap_every: usize,
    /// Probability of replacing a flow row's label with the null class.
    pub class_dropout: f64,
    /// log2 of the finest step count (7: 128 steps).
    pub log2_steps: u32,
    /// Relative weights of the step codes 0..log2_steps-1 drawn for the time-consistency rows; `None`: uniform, as
    /// in the official code. Larger weights on the first codes train the one- and two-step shortcuts harder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dt_weights: Option<Vec<f64>>,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        ObjectiveConfig {
            bootstrap_every: 8,
            length_bootstrap_every: 8,
            class_dropout: 0.1,
            log2_steps: 7,
            dt_weights: None,
        }
    }
}

impl ObjectiveConfig {
    /// Checks the options that a batch cannot be built without.
    pub fn validate(&self) -> Result<()> {
        self.dt_sampler().map(|_| ())
    }

    /// The distribution of step codes for the time-consistency rows: `None` for uniform, else `dt_weights`
    /// (one weight per code, checked).
    fn dt_sampler(&self) -> Result<Option<WeightedIndex<f64>>> {
        let Some(w) = &self.dt_weights else {
            return Ok(None);
        };
        if w.len() != self.log2_steps as usize {
            return Err(Error::invalid(format!(
                "dt_weights: {} weights given, one per step code 0..{} is needed",
                w.len(),
                self.log2_steps.saturating_sub(1)
            )));
        }
        // rand refuses negative and all-zero weights, but panics when their sum is not finite
        if !w.iter().sum::<f64>().is_finite() {
            return Err(Error::invalid(format!(
                "dt_weights {w:?}: the weights must be finite"
            )));
        }
        WeightedIndex::new(w)
            .map(Some)
            .map_err(|e| Error::invalid(format!("dt_weights {w:?}: {e}")))
    }

    /// The step code a model trained with this objective should be sampled with at `steps` Euler steps: log2 T,
    /// or the finest code when the time-consistency term is off (the model has only seen that code).
    pub fn sampling_dt_base(&self, steps: usize) -> f32 {
        if self.bootstrap_every == 0 {
            self.log2_steps as f32
        } else {
            (steps.max(1) as f32).log2()
        }
    }
}

/// Inputs and targets of one batch (row layout in the module docs).
#[derive(Debug)]
pub struct Batch {
    pub t: Tensor,
    pub x_t: Tensor,
    pub dt_base: Tensor,
    pub y: Tensor,
    pub lengths: Vec<usize>,
    pub target: Tensor,
    /// Number of time-consistency rows (first rows).
    pub n_time: usize,
    /// Number of length-consistency rows (last rows).
    pub n_length: usize,
}

/// Per-term losses of one step (each the mean per-row MSE over that term's rows; NaN when it has no rows).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct LossTerms {
    pub total: f64,
    pub flow: f64,
    pub time: f64,
    pub length: f64,
}

fn normal_vec<R: Rng>(rng: &mut R, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// A random trained length `depth_min + group * k`, k uniform.
pub fn random_length<R: Rng>(cfg: &DitConfig, rng: &mut R) -> usize {
    let ls = cfg.trained_lengths();
    ls[rng.random_range(0..ls.len())]
}

/// Builds one batch from clean images `x1` (NHWC, flattened, `labels.len()` images) using the EMA `teacher`
/// (loaded at full length).
pub fn build_batch<R: Rng>(
    cfg: &DitConfig,
    obj: &ObjectiveConfig,
    teacher: &Dit,
    x1: &[f32],
    labels: &[u32],
    rng: &mut R,
    device: &Device,
) -> Result<Batch> {
    let b = labels.len();
    let s = cfg.input_size;
    let c = cfg.in_channels;
    let n = s * s * c;
    if x1.len() != b * n {
        return Err(Error::invalid(format!(
            "batch: {} values for {b} images of {s}x{s}x{c}",
            x1.len()
        )));
    }
    let nb = b.checked_div(obj.bootstrap_every).unwrap_or(0);
    let nl = b.checked_div(obj.length_bootstrap_every).unwrap_or(0);
    if nb + nl > b {
        return Err(Error::invalid("batch too small for its bootstrap rows"));
    }
    let dt_pick = obj.dt_sampler()?;
    let null = cfg.num_classes as u32;
    let fine = obj.log2_steps;
    let fine_steps = (1u32 << fine) as f32;

    let x0 = normal_vec(rng, b * n);
    let mut t = vec![0f32; b];
    let mut dtb = vec![fine as f32; b];
    let mut y = labels.to_vec();
    for i in 0..b {
        if i < nb {
            let d = match &dt_pick {
                Some(pick) => pick.sample(rng) as u32,
                None => rng.random_range(0..fine),
            };
            let sections = (1u32 << d) as f32;
            dtb[i] = d as f32;
            t[i] = (sections * rng.random::<f32>()).floor() / sections;
        } else {
            t[i] = (fine_steps * rng.random::<f32>()).floor() / fine_steps;
            if rng.random::<f64>() < obj.class_dropout {
                y[i] = null;
            }
        }
    }
    let lengths: Vec<usize> = (0..b).map(|_| random_length(cfg, rng)).collect();
    let teacher_lengths: Vec<usize> = (0..nl).map(|_| random_length(cfg, rng)).collect();

    let mut xt = vec![0f32; b * n];
    let mut target = vec![0f32; b * n];
    for (i, &ti) in t.iter().enumerate().take(b) {
        for k in 0..n {
            let j = i * n + k;
            xt[j] = (1.0 - ti) * x0[j] + ti * x1[j];
            target[j] = x1[j] - x0[j];
        }
    }
    let shape = (b, s, s, c);
    let xt_t = Tensor::from_vec(xt, shape, device)?;
    let t_t = Tensor::from_vec(t.clone(), b, device)?;
    let dtb_t = Tensor::from_vec(dtb.clone(), b, device)?;
    let y_t = Tensor::from_vec(y.clone(), b, device)?;
    let mut target_t = Tensor::from_vec(target, shape, device)?;

    let mut parts: Vec<Tensor> = Vec::new();
    if nb > 0 {
        let tb = t_t.narrow(0, 0, nb)?;
        let xb = xt_t.narrow(0, 0, nb)?;
        let db = (dtb_t.narrow(0, 0, nb)? + 1.0)?;
        let yb = y_t.narrow(0, 0, nb)?;
        let half: Vec<f32> = dtb[..nb]
            .iter()
            .map(|&d| 1.0 / (2.0 * 2f32.powf(d)))
            .collect();
        let half = Tensor::from_vec(half, nb, device)?;
        let v1 = teacher.forward(&tb, &xb, &db, &yb)?;
        let x2 = (&xb + v1.broadcast_mul(&half.reshape((nb, 1, 1, 1))?)?)?;
        let v2 = teacher.forward(&(&tb + &half)?, &x2, &db, &yb)?;
        parts.push(((v1 + v2)? * 0.5)?);
    }
    let mid = b - nb - nl;
    if mid > 0 {
        parts.push(target_t.narrow(0, nb, mid)?);
    }
    if nl > 0 {
        let o = b - nl;
        let v = teacher.forward_lengths(
            &t_t.narrow(0, o, nl)?,
            &xt_t.narrow(0, o, nl)?,
            &dtb_t.narrow(0, o, nl)?,
            &y_t.narrow(0, o, nl)?,
            &teacher_lengths,
        )?;
        parts.push(v);
    }
    if nb > 0 || nl > 0 {
        target_t = Tensor::cat(&parts, 0)?.detach();
    }
    Ok(Batch {
        t: t_t,
        x_t: xt_t,
        dt_base: dtb_t,
        y: y_t,
        lengths,
        target: target_t,
        n_time: nb,
        n_length: nl,
    })
}

/// The student's loss on a batch: returns the scalar loss tensor (differentiable) and the per-term values.
pub fn loss(student: &Dit, batch: &Batch) -> Result<(Tensor, LossTerms)> {
    let pred = student.forward_lengths(
        &batch.t,
        &batch.x_t,
        &batch.dt_base,
        &batch.y,
        &batch.lengths,
    )?;
    let b = batch.lengths.len();
    let per_row = (pred - &batch.target)?.sqr()?.reshape((b, ()))?.mean(1)?;
    let total = per_row.mean_all()?;
    let rows: Vec<f32> = per_row.detach().to_vec1()?;
    let mean = |r: &[f32]| {
        if r.is_empty() {
            f64::NAN
        } else {
            r.iter().map(|&v| v as f64).sum::<f64>() / r.len() as f64
        }
    };
    let terms = LossTerms {
        total: mean(&rows),
        time: mean(&rows[..batch.n_time]),
        flow: mean(&rows[batch.n_time..b - batch.n_length]),
        length: mean(&rows[b - batch.n_length..]),
    };
    Ok((total, terms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::TensorMap;
    use crate::train::init::init_params;
    use rand::SeedableRng;

    fn tiny() -> DitConfig {
        DitConfig {
            input_size: 8,
            in_channels: 1,
            patch_size: 4,
            hidden_size: 32,
            depth: 4,
            num_heads: 2,
            mlp_hidden: 64,
            num_classes: 3,
            depth_group: 2,
            depth_min: 2,
            length_embedding: true,
            latent_scale: 1.0,
        }
    }

    fn model(cfg: &DitConfig, seed: u64) -> Dit {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let p = init_params(cfg, &mut rng, &Device::Cpu).unwrap();
        // Non-zero final layer so the teacher's output is not trivially zero.
        let p: Vec<_> = p
            .into_iter()
            .map(|(n, t)| {
                if n.starts_with("FinalLayer_0") {
                    let r = Tensor::randn(0f32, 0.1, t.dims(), &Device::Cpu).unwrap();
                    (n, r)
                } else {
                    (n, t)
                }
            })
            .collect();
        Dit::load(
            cfg,
            &TensorMap(p.into_iter().collect()),
            &Device::Cpu,
            candle_core::DType::F32,
            None,
        )
        .unwrap()
    }

    #[test]
    fn batch_shapes_and_row_layout() {
        let cfg = tiny();
        let teacher = model(&cfg, 1);
        let b = 16;
        let x1: Vec<f32> = (0..b * 64).map(|i| (i % 7) as f32 / 7.0).collect();
        let labels: Vec<u32> = (0..b as u32).map(|i| i % 3).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let obj = ObjectiveConfig {
            class_dropout: 0.5,
            ..Default::default()
        };
        let batch =
            build_batch(&cfg, &obj, &teacher, &x1, &labels, &mut rng, &Device::Cpu).unwrap();
        assert_eq!(batch.x_t.dims(), &[b, 8, 8, 1]);
        assert_eq!(batch.target.dims(), &[b, 8, 8, 1]);
        assert_eq!((batch.n_time, batch.n_length), (2, 2));
        let t: Vec<f32> = batch.t.to_vec1().unwrap();
        let d: Vec<f32> = batch.dt_base.to_vec1().unwrap();
        let y: Vec<u32> = batch.y.to_vec1().unwrap();
        for i in 0..b {
            assert!(batch.lengths[i] == 2 || batch.lengths[i] == 4);
            if i < 2 {
                assert!(d[i] < 7.0 && d[i] >= 0.0);
                let sec = 2f32.powf(d[i]);
                assert_eq!((t[i] * sec).fract(), 0.0);
                assert_eq!(y[i], labels[i], "time rows keep their labels");
            } else {
                assert_eq!(d[i], 7.0);
                assert_eq!((t[i] * 128.0).fract(), 0.0);
                assert!(y[i] == labels[i] || y[i] == 3);
            }
        }
        assert!(y[2..].contains(&3), "some labels dropped at p=0.5");
    }

    #[test]
    #[allow(clippy::needless_range_loop)] // rows are indexed like the batch layout they check
    fn targets_follow_their_definitions() {
        let cfg = tiny();
        let teacher = model(&cfg, 2);
        let b = 8;
        let x1: Vec<f32> = (0..b * 64)
            .map(|i| ((i * 13) % 11) as f32 / 11.0 - 0.5)
            .collect();
        let labels: Vec<u32> = vec![0, 1, 2, 0, 1, 2, 0, 1];
        let obj = ObjectiveConfig {
            bootstrap_every: 4,
            length_bootstrap_every: 4,
            class_dropout: 0.0,
            log2_steps: 7,
            dt_weights: None,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let bt = build_batch(&cfg, &obj, &teacher, &x1, &labels, &mut rng, &Device::Cpu).unwrap();
        // Flow rows: target = x1 - x0 with x_t = (1-t) x0 + t x1  =>  x1 = x_t + (1 - t) * target.
        let xt = bt.x_t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let tg = bt.target.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let t: Vec<f32> = bt.t.to_vec1().unwrap();
        for i in 2..6 {
            for k in 0..64 {
                let j = i * 64 + k;
                assert!((xt[j] + (1.0 - t[i]) * tg[j] - x1[j]).abs() < 1e-5);
            }
        }
        // Time rows: the mean of two teacher half-steps with code dt_base + 1.
        let d: Vec<f32> = bt.dt_base.to_vec1().unwrap();
        for i in 0..2 {
            let h = 1.0 / (2.0 * 2f32.powf(d[i]));
            let xi = bt.x_t.narrow(0, i, 1).unwrap();
            let ti = Tensor::new(&[t[i]], &Device::Cpu).unwrap();
            let di = Tensor::new(&[d[i] + 1.0], &Device::Cpu).unwrap();
            let yi = Tensor::new(&[labels[i]], &Device::Cpu).unwrap();
            let v1 = teacher.forward(&ti, &xi, &di, &yi).unwrap();
            let x2 = (&xi + (&v1 * h as f64).unwrap()).unwrap();
            let v2 = teacher
                .forward(&(&ti + h as f64).unwrap(), &x2, &di, &yi)
                .unwrap();
            let want = ((v1 + v2).unwrap() * 0.5).unwrap();
            let got = bt.target.narrow(0, i, 1).unwrap();
            let err = crate::test_util::max_abs_diff(&want, &got);
            assert!(err < 1e-5, "{err}");
        }
        // Length rows: the teacher's output at some trained length, not the flow target.
        for i in 6..8 {
            let got = bt.target.narrow(0, i, 1).unwrap();
            let args = (
                bt.t.narrow(0, i, 1).unwrap(),
                bt.x_t.narrow(0, i, 1).unwrap(),
                bt.dt_base.narrow(0, i, 1).unwrap(),
                bt.y.narrow(0, i, 1).unwrap(),
            );
            let matches = cfg.trained_lengths().into_iter().any(|l| {
                let v = teacher
                    .with_length(l)
                    .unwrap()
                    .forward(&args.0, &args.1, &args.2, &args.3)
                    .unwrap();
                crate::test_util::max_abs_diff(&v, &got) < 1e-5
            });
            assert!(matches, "row {i} is a teacher output");
        }
    }

    #[test]
    fn dt_weights_pick_the_step_codes() {
        let cfg = tiny();
        let teacher = model(&cfg, 2);
        let b = 16;
        let x1 = vec![0.25f32; b * 64];
        let labels = vec![1u32; b];
        // all weight on code 0 (the one-step shortcut): every time row has dt_base 0 and t = 0
        let obj = ObjectiveConfig {
            bootstrap_every: 2,
            dt_weights: Some(vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
            ..Default::default()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let bt = build_batch(&cfg, &obj, &teacher, &x1, &labels, &mut rng, &Device::Cpu).unwrap();
        let dtb: Vec<f32> = bt.dt_base.to_vec1().unwrap();
        let t: Vec<f32> = bt.t.to_vec1().unwrap();
        assert_eq!(bt.n_time, 8);
        assert!(dtb[..8].iter().all(|&d| d == 0.0), "{dtb:?}");
        assert!(t[..8].iter().all(|&t| t == 0.0), "{t:?}");
        assert!(dtb[8..].iter().all(|&d| d == 7.0), "{dtb:?}");

        for bad in [
            vec![1.0; 3],
            vec![0.0; 7],
            vec![1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            vec![f64::INFINITY, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            vec![1e308, 1e308, 1.0, 1.0, 1.0, 1.0, 1.0],
            vec![f64::NAN, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
        ] {
            let obj = ObjectiveConfig {
                dt_weights: Some(bad.clone()),
                ..Default::default()
            };
            let err = build_batch(&cfg, &obj, &teacher, &x1, &labels, &mut rng, &Device::Cpu)
                .err()
                .unwrap();
            assert!(err.to_string().contains("dt_weights"), "{bad:?}: {err}");
        }
        // options stored before the field existed still load
        let old: ObjectiveConfig = serde_json::from_str(
            r#"{"bootstrap_every":8,"length_bootstrap_every":8,"class_dropout":0.1,"log2_steps":7}"#,
        )
        .unwrap();
        assert!(old.dt_weights.is_none());
    }
}
