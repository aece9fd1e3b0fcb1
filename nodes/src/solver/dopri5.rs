//! Adaptive Dormand–Prince 5(4), reproducing what the official adaptive sampler gets from diffrax 0.7.2:
//! `diffeqsolve(ODETerm(f), Dopri5(), t0, t1, dt0=None, y0, stepsize_controller=PIDController(rtol, atol))`
//! with the default `max_steps = 4096`. The official code passes `dt_base = 0` to the model on every evaluation.
//!
//! What diffrax 0.7.2 does (read from its source and checked against it, see the tests) and this module does the
//! same way:
//! - **Initial step: 0.01, no evaluations.** `PIDController.init` calls `_select_initial_step`, which runs
//!   Hairer's heuristic only `if isinstance(terms, ODETerm)`; but `diffeqsolve` has already wrapped every term in
//!   a `WrapTerm` (for the integration direction), so it returns its fallback `0.01`. The first step ends at
//!   `min(t0 + 0.01, t1)`. (The paper-spec's description of the heuristic is what diffrax's code reads like, not
//!   what it executes.)
//! - **Step**: the Shampine Dopri5 tableau (7 stages, FSAL: the last stage is the next step's first; stage
//!   times `t + c·dt`, exactly the step end where `c = 1`), `y_error = dt·Σ (b − b̂)_i f_i`.
//! - **Controller** (PID with p = 0, i = 1, d = 0, error order 5 = Dopri5's order): `e = rms(y_error /
//!   (atol + rtol·max(|y|, |y_new|)))` over the WHOLE tensor (one step size for the batch; `y` replaces a NaN
//!   `y_new`, a NaN error counts as infinite); the step is kept iff `e < 1` (strict); the next step is
//!   `dt·clip(0.9·e^(−1/5), 1, 10)` after a kept step and `dt·clip(0.9·e^(−1/5), 0.2, 0.9)` after a rejected one.
//! - **End**: a proposed step end beyond `t1 − 100 ulp` is put on `t1` after a kept step, on the midpoint of the
//!   remaining interval after a rejected one.
//! - **Float32 times**: the reference ran without x64, so its times, step sizes and factors are float32; the
//!   times here are rounded to f32 at the same operations, so the step sequence is the reference's.
//! - `num_steps` counts every attempt; `max_steps` attempts without reaching `t1` is an error.
//!
//! Cost: `nfe = 1 + 6·num_steps` (the first stage of the first step, then 6 new stages per attempt thanks to
//! FSAL). diffrax re-evaluates the first stage when the very first attempt is rejected; here it is reused (same
//! time, state and step code, so the same value).

use candle_core::Tensor;

use candle_core::DType;

use super::{has_nan, rms, EvalEvent, EvalHook, SolveStats, VelocityField};
use crate::error::{Error, Result};

/// Stage nodes c_2..c_7 (c_1 = 0).
const C: [f64; 6] = [1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];

/// Lower-triangular coefficients a_{i,j} of stages 2..7 (stage 7's row is the 5th-order solution b).
const A: [&[f64]; 6] = [
    &[1.0 / 5.0],
    &[3.0 / 40.0, 9.0 / 40.0],
    &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
    &[
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
    ],
    &[
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
    ],
    &[
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
    ],
];

/// b − b̂ (5th-order weights minus the embedded 4th-order weights) for the error estimate.
const E: [f64; 7] = [
    35.0 / 384.0 - 1951.0 / 21600.0,
    0.0,
    500.0 / 1113.0 - 22642.0 / 50085.0,
    125.0 / 192.0 - 451.0 / 720.0,
    -2187.0 / 6784.0 - -12231.0 / 42400.0,
    11.0 / 84.0 - 649.0 / 6300.0,
    -1.0 / 60.0,
];

const SAFETY: f64 = 0.9;
const FACTOR_MIN: f64 = 0.2;
const FACTOR_MAX: f64 = 10.0;
/// Dopri5's order, which diffrax uses as the error order of ODE solves.
const ERROR_ORDER: f64 = 5.0;
/// New evaluations per step attempt (7 stages, the first shared with the previous step).
const EVALS_PER_STEP: usize = 6;

/// The stage increments `k_i = dt·f_i` and their linear combinations `Σ a_i k_i`, in the reference's float32
/// arithmetic: diffrax stores the k's and combines them with `jnp.tensordot`, which XLA on CPU computes as a
/// forward chain of fused multiply-adds (one f32 rounding per term; checked bit for bit against jax). For an f32
/// state that chain is emulated in f64 (each product of two f32 is exact there) with a rounding to f32 after every
/// term, so error estimates that are mostly rounding noise (tiny early steps) come out as the reference's. Other
/// dtypes use a plain sum in their own precision.
struct Stages {
    ks: Vec<Tensor>,
    /// The k's as f64 (f32 states only).
    wide: Vec<Tensor>,
    emulate_f32: bool,
}

impl Stages {
    fn new(dtype: DType) -> Self {
        Stages {
            ks: Vec::with_capacity(7),
            wide: Vec::with_capacity(7),
            emulate_f32: dtype == DType::F32,
        }
    }

    fn push(&mut self, f: &Tensor, dt: f64) -> Result<()> {
        let k = f.affine(dt, 0.0)?;
        if self.emulate_f32 {
            self.wide.push(k.to_dtype(DType::F64)?);
        }
        self.ks.push(k);
        Ok(())
    }

    /// `Σ_j a_j k_j` over the first `a.len()` stages (`None` if every coefficient is 0).
    fn dot(&self, a: &[f64]) -> Result<Option<Tensor>> {
        let mut acc: Option<Tensor> = None;
        for (j, &aj) in a.iter().enumerate() {
            if aj == 0.0 {
                continue;
            }
            acc = Some(if self.emulate_f32 {
                let term = self.wide[j].affine(aj as f32 as f64, 0.0)?;
                let sum = match acc {
                    None => term,
                    Some(s) => (s.to_dtype(DType::F64)? + term)?,
                };
                sum.to_dtype(DType::F32)?
            } else {
                let term = self.ks[j].affine(aj, 0.0)?;
                match acc {
                    None => term,
                    Some(s) => (s + term)?,
                }
            });
        }
        Ok(acc)
    }
}

/// diffrax's step size when `dt0 = None` (see the module docs).
pub const INITIAL_STEP: f64 = 0.01;

/// Rounds to float32, the precision of the reference's times.
fn r32(t: f64) -> f64 {
    t as f32 as f64
}

/// The float32 `n` ulps below `t` (t > 0): diffrax's `t1_clip_floor`.
fn f32_ulps_below(t: f64, n: u32) -> f64 {
    let v = t as f32;
    if v <= 0.0 {
        return t;
    }
    f32::from_bits(v.to_bits() - n) as f64
}

/// Estimated evaluations still to come from `t` with step `dt` growing by `growth` per step (the last kept
/// factor; 10 before any step): a progress estimate only.
fn remaining_evals(t: f64, t1: f64, dt: f64, growth: f64) -> usize {
    if t >= t1 {
        return 0;
    }
    if dt <= 0.0 {
        return EVALS_PER_STEP;
    }
    let mut n = 0;
    let (mut s, mut h) = (t, dt);
    while s < t1 && n < 100_000 {
        s += h;
        h *= growth.max(1.0);
        n += 1;
    }
    EVALS_PER_STEP * n
}

/// See the module docs. `t0 < t1`.
#[allow(clippy::too_many_arguments)]
pub fn solve(
    field: &mut dyn VelocityField,
    y0: &Tensor,
    t0: f64,
    t1: f64,
    rtol: f64,
    atol: f64,
    max_steps: usize,
    hook: &mut dyn EvalHook,
) -> Result<(Tensor, SolveStats)> {
    const DT_BASE: f64 = 0.0;
    let (t0, t1) = (r32(t0), r32(t1));
    let mut stats = SolveStats::default();
    let report = |hook: &mut dyn EvalHook, nfe: usize, total: usize, t: f64, x: &Tensor| {
        hook.on_eval(&EvalEvent {
            nfe,
            total: total.max(nfe),
            exact_total: false,
            t,
            x,
        })
    };

    let clip_floor = f32_ulps_below(t1, 100);
    let mut tprev = t0;
    let mut tnext = r32(t0 + INITIAL_STEP).min(t1);
    let mut y = y0.clone();
    // f(tprev, y): evaluated as the first stage of the first attempt, then carried over (FSAL).
    let mut fsal: Option<Tensor> = None;
    let mut growth = FACTOR_MAX;

    while tprev < t1 {
        if stats.steps >= max_steps {
            return Err(Error::invalid(format!(
                "dopri5 reached max_steps = {max_steps} at t = {tprev:.6} before t = {t1} \
                 ({} accepted, {} rejected; the tolerances rtol = {rtol}, atol = {atol} may be too tight)",
                stats.accepted, stats.rejected
            )));
        }
        let dt = r32(tnext - tprev);
        let total =
            stats.nfe + usize::from(fsal.is_none()) + remaining_evals(tprev, t1, dt, growth);

        let f_first = match fsal.take() {
            Some(f) => f,
            None => {
                let f = field.velocity(tprev, &y, DT_BASE)?;
                stats.nfe += 1;
                report(hook, stats.nfe, total, tprev, &y)?;
                f
            }
        };
        // Stages 2..7 (stage 1 is f_first = f(tprev, y)).
        let mut ks = Stages::new(y.dtype());
        ks.push(&f_first, dt)?;
        let mut y_new = y.clone();
        let mut f_last = f_first.clone();
        for (i, (&c, a)) in C.iter().zip(A.iter()).enumerate() {
            let yi = match ks.dot(a)? {
                Some(inc) => (&y + inc)?,
                None => y.clone(),
            };
            let ti = if c == 1.0 {
                tnext
            } else {
                r32(tprev + r32(c) * dt)
            };
            let fi = field.velocity(ti, &yi, DT_BASE)?;
            stats.nfe += 1;
            ks.push(&fi, dt)?;
            f_last = fi;
            if i + 1 == C.len() {
                // The last stage is evaluated at the 5th-order solution.
                y_new = yi;
            } else {
                report(hook, stats.nfe, total, tprev, &y)?;
            }
        }

        let y_err = match ks.dot(&E)? {
            Some(e) => e,
            None => y.zeros_like()?,
        };
        let y_ref = if has_nan(&y_new)? { &y } else { &y_new };
        let denom = y.abs()?.maximum(&y_ref.abs()?)?.affine(rtol, atol)?;
        let mut e = rms(&y_err.div(&denom)?)?;
        if e.is_nan() {
            e = f64::INFINITY;
        }
        let keep = e < 1.0;
        let (fmin, fmax) = if keep {
            (1.0, FACTOR_MAX)
        } else {
            (FACTOR_MIN, SAFETY)
        };
        // In float32 like the reference: inv = 1/e, factor = clip(0.9·inv^0.2) with the f32 constants (the
        // exponent is f32(0.2) = 0.2000000030, which moves the last bit), XLA's pow being exp(y·log x) done in
        // higher precision and rounded once.
        let inv = r32(1.0 / r32(e));
        let factor =
            r32(r32(SAFETY) * r32(inv.powf(r32(1.0 / ERROR_ORDER)))).clamp(r32(fmin), r32(fmax));
        // Not rounded: the reference's `t + dt·factor` compiled to a fused multiply-add (one rounding).
        let dt_next = dt * factor;

        stats.steps += 1;
        if keep {
            stats.accepted += 1;
            growth = factor;
            tprev = tnext;
            y = y_new;
            fsal = Some(f_last);
        } else {
            stats.rejected += 1;
            fsal = Some(f_first);
        }
        tprev = tprev.min(t1);
        tnext = r32(tprev + dt_next);
        if tnext > clip_floor {
            tnext = if keep {
                t1
            } else {
                r32(tprev + r32(0.5 * r32(t1 - tprev)))
            };
        }
        let total = stats.nfe + remaining_evals(tprev, t1, r32(tnext - tprev), growth);
        report(hook, stats.nfe, total, tprev, &y)?;
    }
    Ok((y, stats))
}

#[cfg(test)]
mod tests {
    use super::super::{solve as solve_any, FnHook, Solver};
    use super::*;
    use candle_core::{DType, Device};

    fn decay(_t: f64, x: &Tensor, _d: f64) -> Result<Tensor> {
        Ok(x.neg()?)
    }

    /// `dy/dt = -60 y + sin(10 t)`: stiff enough for rejections.
    fn stiff(t: f64, x: &Tensor, _d: f64) -> Result<Tensor> {
        // In f32 like jax, whose XLA fuses `-60·y + s` into one rounding.
        let s = (10.0 * t as f32).sin() as f64;
        Ok(x.to_dtype(DType::F64)?
            .affine(-60.0, s)?
            .to_dtype(x.dtype())?)
    }

    /// `dy/dt = sin(3y)(1 + t) - y³/2 + cos(7t)`.
    fn nonlin(t: f64, x: &Tensor, _d: f64) -> Result<Tensor> {
        let a = (x.affine(3.0, 0.0)?.sin()? * (1.0 + t as f32) as f64)?;
        let b = (x.sqr()? * x)?.affine(-0.5, (7.0 * t as f32).cos() as f64)?;
        Ok((a + b)?)
    }

    fn zero(_t: f64, x: &Tensor, _d: f64) -> Result<Tensor> {
        Ok(x.zeros_like()?)
    }

    fn vec32(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn tableau_is_consistent() {
        for (i, a) in A.iter().enumerate() {
            let s: f64 = a.iter().sum();
            assert!((s - C[i]).abs() < 1e-14, "row {i}: Σa = {s}, c = {}", C[i]);
        }
        assert!(E.iter().sum::<f64>().abs() < 1e-14);
    }

    /// Step counts, accepted step ends and results of diffrax 0.7.2 (jax without x64, so float32) on small ODEs,
    /// from `diffeqsolve(ODETerm(f), Dopri5(), t0=0.0, t1=1.0, dt0=None, y0,
    /// stepsize_controller=PIDController(rtol=tol, atol=tol), saveat=SaveAt(steps=True))` and `sol.stats`.
    #[test]
    // The reference values as diffrax printed them, one tuple per case.
    #[allow(clippy::excessive_precision, clippy::type_complexity)]
    fn matches_diffrax_step_for_step() {
        type Field = fn(f64, &Tensor, f64) -> Result<Tensor>;
        let y_decay = [1.0f32, -2.0, 0.5, 3.0];
        let y_nonlin = [0.3f32, -1.2, 2.0, 0.7, -0.1, 1.5];
        #[rustfmt::skip]
        let cases: Vec<(&str, Field, &[f32], f64, (usize, usize, usize), Vec<f64>, Vec<f32>)> = vec![
            ("decay", decay, &y_decay, 1e-2, (3, 3, 0), vec![0.009999999776482582, 0.10999999940395355, 1.0],
             vec![0.36807388, -0.73614776, 0.18403694, 1.1042215]),
            ("decay", decay, &y_decay, 1e-5, (5, 5, 0),
             vec![0.009999999776482582, 0.10999999940395355, 0.5542511343955994, 0.998502254486084, 1.0],
             vec![0.36788267, -0.73576534, 0.18394133, 1.1036481]),
            ("decay", decay, &y_decay, 1e-7, (8, 8, 0),
             vec![0.009999999776482582, 0.05541662499308586, 0.21417024731636047, 0.39207494258880615,
                  0.5721819996833801, 0.7548252940177917, 0.9404625296592712, 1.0],
             vec![0.36787948, -0.73575896, 0.18393974, 1.1036385]),
            ("stiff", stiff, &[1.0], 1e-3, (25, 22, 3),
             vec![0.009999999776482582, 0.028608057647943497, 0.04782629758119583, 0.0705220103263855,
                  0.09810134023427963, 0.13337689638137817, 0.1815178245306015, 0.23575733602046967,
                  0.2913048565387726, 0.3485284745693207, 0.4057520925998688, 0.46297571063041687,
                  0.5201992988586426, 0.5774228572845459, 0.6368563175201416, 0.6984683275222778,
                  0.7456531524658203, 0.7951271533966064, 0.8489881157875061, 0.9028490781784058,
                  0.9567100405693054, 1.0],
             vec![-0.0069042109]),
            ("stiff", stiff, &[1.0], 1e-6, (68, 60, 8), vec![], vec![-0.0065540816]),
            ("nonlin", nonlin, &y_nonlin, 1e-2, (7, 5, 2),
             vec![0.009999999776482582, 0.10999999940395355, 0.4578872621059418, 0.8346862196922302, 1.0],
             vec![1.0541543, -0.86702251, 1.1172532, 1.0624465, -0.78197902, 1.0800037]),
            ("nonlin", nonlin, &y_nonlin, 1e-3, (8, 6, 2),
             vec![0.009999999776482582, 0.10999999940395355, 0.3852769136428833, 0.6744459867477417,
                  0.9283506870269775, 1.0],
             vec![1.0560632, -0.86381334, 1.0690727, 1.0610949, -0.77990741, 1.0651078]),
            ("nonlin", nonlin, &y_nonlin, 1e-4, (8, 7, 1),
             vec![0.009999999776482582, 0.10999999940395355, 0.3150402009487152, 0.5200803875923157,
                  0.6973026394844055, 0.878611147403717, 1.0],
             vec![1.0552402, -0.86356926, 1.0649595, 1.0599303, -0.7770201, 1.0630548]),
            ("nonlin", nonlin, &y_nonlin, 1e-6, (16, 14, 2), vec![],
             vec![1.0551851, -0.86353517, 1.0647674, 1.059843, -0.77677071, 1.0629293]),
            ("zero", zero, &y_decay, 1e-3, (3, 3, 0), vec![0.009999999776482582, 0.10999999940395355, 1.0],
             y_decay.to_vec()),
        ];
        for (name, field, y0, tol, counts, ts, y1) in cases {
            let mut f = field;
            let mut accepted_ts = Vec::new();
            let mut last = (0usize, 0.0f64);
            let mut hook = FnHook(|e: &EvalEvent| {
                // A step end is reported once, with the evaluation that completed the attempt.
                if e.t > last.1 {
                    accepted_ts.push(e.t);
                }
                last = (e.nfe, e.t);
                Ok(())
            });
            let (x1, st) =
                solve_any(&mut f, &vec32(y0), 0.0, &Solver::dopri5(tol), &mut hook).unwrap();
            assert_eq!(
                (st.steps, st.accepted, st.rejected),
                counts,
                "{name} tol {tol}"
            );
            assert_eq!(st.nfe, 1 + 6 * st.steps, "{name} tol {tol}");
            if !ts.is_empty() {
                assert_eq!(
                    accepted_ts.len(),
                    ts.len(),
                    "{name} tol {tol}: {accepted_ts:?}"
                );
                // `nonlin` rounds differently in jax (XLA's own sin/cos, fused ops), which moves its steps a
                // little; the other fields are evaluated as jax does and give its step ends to the bit.
                let close = if name == "nonlin" { 1e-3 } else { 1e-7 };
                for (a, b) in accepted_ts.iter().zip(&ts) {
                    assert!(
                        (a - b).abs() <= close * b,
                        "{name} tol {tol}: {accepted_ts:?} vs {ts:?}"
                    );
                }
            }
            // Different step ends (nonlin) give results that differ within the tolerance.
            let y_close = if name == "nonlin" { tol as f32 } else { 2e-6 };
            for (a, b) in x1.to_vec1::<f32>().unwrap().iter().zip(&y1) {
                assert!(
                    (a - b).abs() <= y_close * b.abs().max(1.0),
                    "{name} tol {tol}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn decay_reaches_1e6_accuracy() {
        let x0 = vec32(&[1.0, -2.0, 0.5, 3.0]);
        let (x1, st) = solve_any(&mut decay, &x0, 0.0, &Solver::dopri5(1e-7), &mut ()).unwrap();
        let exact = x0.affine((-1.0f64).exp(), 0.0).unwrap();
        let err = crate::test_util::max_abs_diff(&x1, &exact);
        assert!(err < 1e-6, "max error {err} ({st:?})");
        assert_eq!(st.steps, st.accepted + st.rejected);
    }

    #[test]
    fn f64_state_is_supported() {
        let x0 = Tensor::new(&[1.0f64, -2.0], &Device::Cpu).unwrap();
        let (x1, _) = solve_any(&mut decay, &x0, 0.0, &Solver::dopri5(1e-10), &mut ()).unwrap();
        let want = [(-1.0f64).exp(), -2.0 * (-1.0f64).exp()];
        for (a, b) in x1.to_vec1::<f64>().unwrap().iter().zip(want) {
            assert!((a - b).abs() < 1e-8, "{a} vs {b}");
        }
    }

    #[test]
    fn max_steps_is_an_error() {
        let x0 = vec32(&[1.0, -2.0]);
        let s = Solver::Dopri5 {
            rtol: 1e-7,
            atol: 1e-7,
            max_steps: 2,
        };
        let mut calls = 0;
        let mut f = |t: f64, x: &Tensor, d: f64| {
            calls += 1;
            decay(t, x, d)
        };
        let err = solve_any(&mut f, &x0, 0.0, &s, &mut ()).unwrap_err();
        assert!(err.to_string().contains("max_steps = 2"), "{err}");
        assert_eq!(calls, 1 + 6 * 2);
    }

    #[test]
    fn step_code_is_zero_and_hook_is_monotone() {
        let x0 = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
        let mut f = |t: f64, x: &Tensor, d: f64| {
            assert_eq!(d, 0.0);
            stiff(t, x, d)
        };
        let mut events = Vec::new();
        let mut hook = FnHook(|e: &EvalEvent| {
            events.push((e.nfe, e.total, e.t));
            Ok(())
        });
        let (_, st) = solve_any(&mut f, &x0, 0.0, &Solver::dopri5(1e-4), &mut hook).unwrap();
        assert!(st.rejected > 0, "{st:?}");
        assert_eq!(events.len(), st.nfe);
        assert!(events
            .windows(2)
            .all(|w| w[1].0 == w[0].0 + 1 && w[1].2 >= w[0].2 && w[1].1 >= w[1].0));
        assert_eq!(*events.last().unwrap(), (st.nfe, st.nfe, 1.0));
    }
}
