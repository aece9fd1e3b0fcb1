//! Fixed-step solvers: Euler (the official ODE_{T|l,d} sampler) and Heun.
//!
//! From `t0` in `T` steps of `h = (1 - t0)/T`, step `i` starts at `t_i = t0 + (1 - t0)·(i/T)` (for `t0 = 0`
//! exactly the official `t = ti/T`, passed to the model as f32 like JAX does) and the last one ends at 1.
//! The step code is [`dt_base_for_step`]`(h)` (= `log2(T)` for the official power-of-two `T` from noise).

use candle_core::Tensor;

use super::{dt_base_for_step, EvalEvent, EvalHook, SolveStats, VelocityField};
use crate::error::Result;

fn grid(t0: f64, steps: usize) -> impl Fn(usize) -> f64 {
    move |i| {
        if i == steps {
            1.0
        } else {
            t0 + (1.0 - t0) * (i as f64 / steps as f64)
        }
    }
}

/// `x ← x + h·v(t_i, x)` for i in 0..T, one evaluation per step.
pub fn euler(
    field: &mut dyn VelocityField,
    x: &Tensor,
    t0: f64,
    steps: usize,
    hook: &mut dyn EvalHook,
) -> Result<(Tensor, SolveStats)> {
    let h = (1.0 - t0) / steps as f64;
    let dt_base = dt_base_for_step(h);
    let t_at = grid(t0, steps);
    let mut x = x.clone();
    for i in 0..steps {
        let v = field.velocity(t_at(i), &x, dt_base)?;
        x = (x + v.affine(h, 0.0)?)?;
        hook.on_eval(&EvalEvent {
            nfe: i + 1,
            total: steps,
            exact_total: true,
            t: t_at(i + 1),
            x: &x,
        })?;
    }
    Ok((
        x,
        SolveStats {
            nfe: steps,
            steps,
            accepted: steps,
            rejected: 0,
        },
    ))
}

/// Heun's predictor–corrector on every step (the last one included, so `2T` evaluations):
/// `k1 = v(t_i, x)`, `x̃ = x + h·k1`, `k2 = v(t_{i+1}, x̃)`, `x ← x + h/2·(k1 + k2)`; both evaluations use the
/// step code of `h`. Second order.
pub fn heun(
    field: &mut dyn VelocityField,
    x: &Tensor,
    t0: f64,
    steps: usize,
    hook: &mut dyn EvalHook,
) -> Result<(Tensor, SolveStats)> {
    let h = (1.0 - t0) / steps as f64;
    let dt_base = dt_base_for_step(h);
    let t_at = grid(t0, steps);
    let total = 2 * steps;
    let mut x = x.clone();
    for i in 0..steps {
        let (ta, tb) = (t_at(i), t_at(i + 1));
        let k1 = field.velocity(ta, &x, dt_base)?;
        hook.on_eval(&EvalEvent {
            nfe: 2 * i + 1,
            total,
            exact_total: true,
            t: ta,
            x: &x,
        })?;
        let pred = (&x + k1.affine(h, 0.0)?)?;
        let k2 = field.velocity(tb, &pred, dt_base)?;
        x = (x + (k1 + k2)?.affine(0.5 * h, 0.0)?)?;
        hook.on_eval(&EvalEvent {
            nfe: 2 * i + 2,
            total,
            exact_total: true,
            t: tb,
            x: &x,
        })?;
    }
    Ok((
        x,
        SolveStats {
            nfe: total,
            steps,
            accepted: steps,
            rejected: 0,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::super::{solve, FnHook, Solver};
    use super::*;
    use crate::error::Error;
    use candle_core::{DType, Device};

    /// dx/dt = a·x from x(0) = x0: error at t = 1 for each step count.
    fn errors(solver: fn(usize) -> Solver, steps: &[usize]) -> Vec<f64> {
        let a: f64 = 0.8;
        let x0 = Tensor::new(&[1.0f64, -0.5, 2.0], &Device::Cpu).unwrap();
        let exact = x0.affine(a.exp(), 0.0).unwrap();
        steps
            .iter()
            .map(|&n| {
                let mut f = |_t: f64, x: &Tensor, _d: f64| Ok(x.affine(a, 0.0)?);
                let (x1, st) = solve(&mut f, &x0, 0.0, &solver(n), &mut ()).unwrap();
                assert_eq!(st.nfe, solver(n).fixed_nfe().unwrap());
                let d = (x1 - &exact).unwrap().abs().unwrap().max_all().unwrap();
                d.to_scalar::<f64>().unwrap()
            })
            .collect()
    }

    fn order(errs: &[f64]) -> Vec<f64> {
        errs.windows(2).map(|w| (w[0] / w[1]).log2()).collect()
    }

    #[test]
    fn euler_is_first_order() {
        let e = errors(|steps| Solver::Euler { steps }, &[16, 32, 64, 128]);
        for p in order(&e) {
            assert!((p - 1.0).abs() < 0.1, "observed order {p} ({e:?})");
        }
    }

    #[test]
    fn heun_is_second_order() {
        let e = errors(|steps| Solver::Heun { steps }, &[16, 32, 64, 128]);
        for p in order(&e) {
            assert!((p - 2.0).abs() < 0.1, "observed order {p} ({e:?})");
        }
        assert!(e[3] < 1e-4, "{e:?}");
    }

    /// (t, dt_base) of every evaluation and the result for v = 1 from x = 0.
    fn trace(t0: f64, steps: usize) -> (Vec<(f64, f64)>, Vec<f32>) {
        let x0 = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let mut seen = Vec::new();
        let mut f = |t: f64, x: &Tensor, d: f64| {
            seen.push((t, d));
            Ok(x.ones_like()?)
        };
        let (x1, _) = solve(&mut f, &x0, t0, &Solver::Euler { steps }, &mut ()).unwrap();
        (seen, x1.to_vec1::<f32>().unwrap())
    }

    #[test]
    fn times_and_codes_follow_the_official_sampler() {
        let (seen, x1) = trace(0.0, 4);
        assert_eq!(seen, vec![(0.0, 2.0), (0.25, 2.0), (0.5, 2.0), (0.75, 2.0)]);
        assert_eq!(x1, vec![1.0, 1.0]);
        // img2img start: 4 steps of 1/8 from t0 = 0.5.
        let (seen, x1) = trace(0.5, 4);
        assert_eq!(
            seen,
            vec![(0.5, 3.0), (0.625, 3.0), (0.75, 3.0), (0.875, 3.0)]
        );
        assert_eq!(x1, vec![0.5, 0.5]);
        // Beyond 128 steps the finest trained code.
        let (seen, _) = trace(0.0, 256);
        assert!(seen.iter().all(|&(_, d)| d == 7.0));
    }

    #[test]
    fn zero_steps_is_an_error() {
        let x0 = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let mut f = |_t: f64, x: &Tensor, _d: f64| Ok(x.clone());
        for s in [Solver::Euler { steps: 0 }, Solver::Heun { steps: 0 }] {
            let err = solve(&mut f, &x0, 0.0, &s, &mut ()).unwrap_err();
            assert!(err.to_string().contains("at least 1 step"), "{err}");
        }
    }

    #[test]
    fn cancel_stops_after_one_evaluation() {
        let x0 = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        for s in [
            Solver::Euler { steps: 8 },
            Solver::Heun { steps: 8 },
            Solver::dopri5(1e-3),
        ] {
            let mut calls = 0;
            let mut f = |_t: f64, x: &Tensor, _d: f64| {
                calls += 1;
                Ok(x.ones_like()?)
            };
            let mut events = Vec::new();
            let mut hook = FnHook(|e: &EvalEvent| {
                events.push((e.nfe, e.total));
                Err(Error::Cancelled)
            });
            let r = solve(&mut f, &x0, 0.0, &s, &mut hook);
            assert!(matches!(r, Err(Error::Cancelled)), "{s}");
            assert_eq!(calls, 1, "{s}");
            assert_eq!(events.len(), 1, "{s}");
            assert_eq!(events[0].0, 1);
            assert!(events[0].1 >= 1);
        }
    }

    #[test]
    fn hook_sees_every_evaluation() {
        let x0 = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let mut f = |_t: f64, x: &Tensor, _d: f64| Ok(x.ones_like()?);
        let mut ev = Vec::new();
        let mut hook = FnHook(|e: &EvalEvent| {
            ev.push((e.nfe, e.total, e.t));
            Ok(())
        });
        let (_, st) = solve(&mut f, &x0, 0.0, &Solver::Heun { steps: 2 }, &mut hook).unwrap();
        assert_eq!(st.nfe, 4);
        assert_eq!(ev, vec![(1, 4, 0.0), (2, 4, 0.5), (3, 4, 0.5), (4, 4, 1.0)]);
    }

    #[test]
    fn start_at_one_is_identity_and_bad_start_is_an_error() {
        let x0 = Tensor::new(&[3.0f32], &Device::Cpu).unwrap();
        let mut f =
            |_t: f64, _x: &Tensor, _d: f64| -> Result<Tensor> { panic!("no evaluation expected") };
        let (x1, st) = solve(&mut f, &x0, 1.0, &Solver::Euler { steps: 3 }, &mut ()).unwrap();
        assert_eq!(st.nfe, 0);
        assert_eq!(x1.to_vec1::<f32>().unwrap(), vec![3.0]);
        assert!(solve(&mut f, &x0, 1.5, &Solver::Euler { steps: 3 }, &mut ()).is_err());
        assert!(solve(&mut f, &x0, f64::NAN, &Solver::Euler { steps: 3 }, &mut ()).is_err());
    }
}
