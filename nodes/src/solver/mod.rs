//! ODE_t solvers: integrate the flow `dx/dt = v(t, x)` from noise (t = 0) to data (t = 1).
//!
//! - [`solve`] runs one of the [`Solver`]s on any [`VelocityField`] and reports [`SolveStats`].
//! - [`fixed`]: Euler (the official fixed-step sampler, ODE_{T|l,d}) and Heun.
//! - [`dopri5`]: adaptive Dormand–Prince 5(4) with the PID (pure I) controller of diffrax 0.7.2, as the official
//!   adaptive sampler (ODE_{t|l,d}) calls it.
//! - [`guidance`]: the model as a velocity field, with classifier-free guidance ([`Guided`]).
//!
//! Every solver calls an [`EvalHook`] after each velocity evaluation; returning an error from it (normally
//! [`Error::Cancelled`]) stops the solve at once, so a cancel costs at most the evaluation in flight.
//!
//! ## The step code `dt_base`
//! The model is conditioned on a step code `dt_base` (shortcut-models semantics: the step is `2^-dt_base` of the
//! unit interval; trained codes are 0..=7, i.e. 1 to 128 steps). The official Euler sampler passes `log2(T)`.
//! For any step size `h` the fixed-step solvers here pass [`dt_base_for_step`]`(h)` =
//! `clamp(round(log2(1/h)), 0, 7)`: exactly `log2(T)` for a power-of-two `T` from `t0 = 0` (the official
//! values), the nearest trained code otherwise (`T > 128` uses 7, the finest trained code; an img2img start
//! `t0 > 0` uses the code of its actual step `(1 - t0)/T`). Dopri5 always passes 0, as the official code does.

pub mod dopri5;
pub mod fixed;
pub mod guidance;

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

pub use guidance::Guided;

/// The finest step code the official models were trained with (128 steps).
pub const MAX_DT_BASE: f64 = 7.0;

/// Default step budget of Dopri5 (diffrax's `max_steps`).
pub const DEFAULT_MAX_STEPS: usize = 4096;

/// A velocity field `v(t, x)` of the flow ODE.
pub trait VelocityField {
    /// Velocity at time `t` ∈ \[0, 1\] (0 = noise, 1 = data) of the state `x` (NHWC `[B, S, S, C]` f32 for the
    /// model; any shape for other fields), conditioned on the step code `dt_base`. Returns a tensor of `x`'s shape.
    fn velocity(&mut self, t: f64, x: &Tensor, dt_base: f64) -> Result<Tensor>;
}

impl<F> VelocityField for F
where
    F: FnMut(f64, &Tensor, f64) -> Result<Tensor>,
{
    fn velocity(&mut self, t: f64, x: &Tensor, dt_base: f64) -> Result<Tensor> {
        self(t, x, dt_base)
    }
}

/// What a solver reports after each velocity evaluation.
#[derive(Debug, Clone, Copy)]
pub struct EvalEvent<'a> {
    /// Velocity evaluations done so far, this one included (1-based).
    pub nfe: usize,
    /// Expected total number of evaluations: exact for Euler and Heun, an estimate for Dopri5 (from the remaining
    /// interval and the current step size; never below `nfe`).
    pub total: usize,
    /// Whether `total` is exact.
    pub exact_total: bool,
    /// Time of `x`.
    pub t: f64,
    /// The current state at time `t` (after a completed step: the new state; within a step: the state it started
    /// from). Cheap to keep (`Tensor` clones share storage), e.g. for a preview.
    pub x: &'a Tensor,
}

/// Called after every velocity evaluation (progress, previews, cancellation).
pub trait EvalHook {
    /// Returning an error (normally [`Error::Cancelled`]) stops the solve and [`solve`] returns that error.
    fn on_eval(&mut self, e: &EvalEvent) -> Result<()>;
}

/// No hook.
impl EvalHook for () {
    fn on_eval(&mut self, _e: &EvalEvent) -> Result<()> {
        Ok(())
    }
}

/// A closure as a hook.
pub struct FnHook<F>(pub F);

impl<F: FnMut(&EvalEvent) -> Result<()>> EvalHook for FnHook<F> {
    fn on_eval(&mut self, e: &EvalEvent) -> Result<()> {
        (self.0)(e)
    }
}

/// The solver names accepted by [`SolverKind::from_str`] (and shown in node combos).
pub const SOLVER_NAMES: [&str; 3] = ["euler", "heun", "dopri5"];

/// The solver family, without its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverKind {
    Euler,
    Heun,
    Dopri5,
}

impl SolverKind {
    pub fn name(self) -> &'static str {
        match self {
            SolverKind::Euler => "euler",
            SolverKind::Heun => "heun",
            SolverKind::Dopri5 => "dopri5",
        }
    }
}

impl fmt::Display for SolverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SolverKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "euler" => Ok(SolverKind::Euler),
            "heun" => Ok(SolverKind::Heun),
            "dopri5" => Ok(SolverKind::Dopri5),
            other => Err(Error::invalid(format!(
                "unknown solver `{other}` (expected one of {})",
                SOLVER_NAMES.join(", ")
            ))),
        }
    }
}

/// An ODE_t solver with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Solver {
    /// `steps` Euler steps (1 evaluation each): the official ODE_{T|l,d} sampler.
    Euler { steps: usize },
    /// `steps` Heun predictor–corrector steps (2 evaluations each, the last step included).
    Heun { steps: usize },
    /// Adaptive Dormand–Prince 5(4) as diffrax 0.7.2 runs it (`PIDController(rtol, atol)`, `dt0 = None`).
    Dopri5 {
        rtol: f64,
        atol: f64,
        max_steps: usize,
    },
}

impl Solver {
    /// Dopri5 with `rtol = atol = tol` (the official usage) and the default step budget.
    pub fn dopri5(tol: f64) -> Solver {
        Solver::Dopri5 {
            rtol: tol,
            atol: tol,
            max_steps: DEFAULT_MAX_STEPS,
        }
    }

    /// Builds a solver from node-style widgets: `steps` for Euler/Heun, `tol` (= rtol = atol) for Dopri5.
    pub fn from_parts(kind: SolverKind, steps: usize, tol: f64) -> Result<Solver> {
        let s = match kind {
            SolverKind::Euler => Solver::Euler { steps },
            SolverKind::Heun => Solver::Heun { steps },
            SolverKind::Dopri5 => Solver::dopri5(tol),
        };
        s.validate()?;
        Ok(s)
    }

    pub fn kind(&self) -> SolverKind {
        match self {
            Solver::Euler { .. } => SolverKind::Euler,
            Solver::Heun { .. } => SolverKind::Heun,
            Solver::Dopri5 { .. } => SolverKind::Dopri5,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Exact number of velocity evaluations for fixed-step solvers (`None` for Dopri5). Counts evaluations of the
    /// [`VelocityField`]; with guidance 0 < w ≠ 1 each is one batched forward of twice the batch.
    pub fn fixed_nfe(&self) -> Option<usize> {
        match *self {
            Solver::Euler { steps } => Some(steps),
            Solver::Heun { steps } => Some(2 * steps),
            Solver::Dopri5 { .. } => None,
        }
    }

    /// Checks the parameters (steps ≥ 1, tolerances finite, non-negative and not both zero, max_steps ≥ 1).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Solver::Euler { steps } | Solver::Heun { steps } => {
                if steps == 0 {
                    return Err(Error::invalid(format!(
                        "{} needs at least 1 step (got steps = 0)",
                        self.name()
                    )));
                }
            }
            Solver::Dopri5 {
                rtol,
                atol,
                max_steps,
            } => {
                for (n, v) in [("rtol", rtol), ("atol", atol)] {
                    if !v.is_finite() || v < 0.0 {
                        return Err(Error::invalid(format!(
                            "dopri5 {n} must be a finite number ≥ 0 (got {v})"
                        )));
                    }
                }
                if rtol == 0.0 && atol == 0.0 {
                    return Err(Error::invalid(
                        "dopri5 needs rtol > 0 or atol > 0 (both are 0)",
                    ));
                }
                if max_steps == 0 {
                    return Err(Error::invalid("dopri5 max_steps must be at least 1"));
                }
            }
        }
        Ok(())
    }
}

/// `euler:8`, `heun:4`, `dopri5:0.001` (rtol = atol), or `dopri5:0.001:0.0001` (rtol, atol) when atol ≠ rtol;
/// `:max_steps=N` is appended when it is not the default. [`Solver::from_str`] reads the same forms.
impl fmt::Display for Solver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Solver::Euler { steps } => write!(f, "euler:{steps}"),
            Solver::Heun { steps } => write!(f, "heun:{steps}"),
            Solver::Dopri5 {
                rtol,
                atol,
                max_steps,
            } => {
                write!(f, "dopri5:{rtol}")?;
                if atol != rtol {
                    write!(f, ":{atol}")?;
                }
                if max_steps != DEFAULT_MAX_STEPS {
                    write!(f, ":max_steps={max_steps}")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for Solver {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut parts = s.split(':').map(str::trim);
        let kind: SolverKind = parts.next().unwrap_or("").parse()?;
        let rest: Vec<&str> = parts.collect();
        let bad = |what: &str| {
            Error::invalid(format!(
                "bad solver spec `{s}`: {what} (forms: euler:STEPS, heun:STEPS, dopri5:TOL, dopri5:RTOL:ATOL, \
                 optionally :max_steps=N for dopri5)"
            ))
        };
        let solver = match kind {
            SolverKind::Euler | SolverKind::Heun => {
                let [n] = rest.as_slice() else {
                    return Err(bad("expected exactly one step count"));
                };
                let steps: usize = n.parse().map_err(|_| bad("step count is not an integer"))?;
                if kind == SolverKind::Euler {
                    Solver::Euler { steps }
                } else {
                    Solver::Heun { steps }
                }
            }
            SolverKind::Dopri5 => {
                let mut max_steps = DEFAULT_MAX_STEPS;
                let mut tols = Vec::new();
                for p in rest {
                    if let Some(m) = p.strip_prefix("max_steps=") {
                        max_steps = m.parse().map_err(|_| bad("max_steps is not an integer"))?;
                    } else {
                        tols.push(
                            p.parse::<f64>()
                                .map_err(|_| bad("tolerance is not a number"))?,
                        );
                    }
                }
                let (rtol, atol) = match tols.as_slice() {
                    [t] => (*t, *t),
                    [r, a] => (*r, *a),
                    _ => return Err(bad("expected one or two tolerances")),
                };
                Solver::Dopri5 {
                    rtol,
                    atol,
                    max_steps,
                }
            }
        };
        solver.validate()?;
        Ok(solver)
    }
}

/// What a solve cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SolveStats {
    /// Velocity evaluations ([`VelocityField::velocity`] calls).
    pub nfe: usize,
    /// Step attempts (accepted + rejected), as diffrax's `num_steps`.
    pub steps: usize,
    pub accepted: usize,
    pub rejected: usize,
}

/// The step code for a step of size `h` (see the module docs): `clamp(round(log2(1/h)), 0, 7)`.
pub fn dt_base_for_step(h: f64) -> f64 {
    (1.0 / h).log2().round().clamp(0.0, MAX_DT_BASE)
}

/// Integrates `dx/dt = field(t, x)` from `t0` (0 = pure noise; > 0 for img2img starts) to 1 starting at `x`.
/// Returns the state at t = 1 and the costs. `t0 = 1` returns `x` unchanged without evaluating anything.
pub fn solve(
    field: &mut dyn VelocityField,
    x: &Tensor,
    t0: f64,
    solver: &Solver,
    hook: &mut dyn EvalHook,
) -> Result<(Tensor, SolveStats)> {
    solver.validate()?;
    if !(0.0..=1.0).contains(&t0) {
        return Err(Error::invalid(format!(
            "start time t0 must be in [0, 1] (0 = noise, 1 = data), got {t0}"
        )));
    }
    if !x.dtype().is_float() {
        return Err(Error::invalid(format!(
            "the ODE state must be a float tensor, got {:?}",
            x.dtype()
        )));
    }
    if t0 == 1.0 {
        return Ok((x.clone(), SolveStats::default()));
    }
    match *solver {
        Solver::Euler { steps } => fixed::euler(field, x, t0, steps, hook),
        Solver::Heun { steps } => fixed::heun(field, x, t0, steps, hook),
        Solver::Dopri5 {
            rtol,
            atol,
            max_steps,
        } => dopri5::solve(field, x, t0, 1.0, rtol, atol, max_steps, hook),
    }
}

/// Root mean square over every element, accumulated in f64.
pub(crate) fn rms(x: &Tensor) -> Result<f64> {
    let ms = x
        .to_dtype(DType::F64)?
        .sqr()?
        .mean_all()?
        .to_scalar::<f64>()?;
    Ok(ms.sqrt())
}

/// Whether any element is NaN.
pub(crate) fn has_nan(x: &Tensor) -> Result<bool> {
    Ok(x.ne(x)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?
        > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in SOLVER_NAMES {
            let k: SolverKind = n.parse().unwrap();
            assert_eq!(k.to_string(), n);
        }
        assert!("rk4".parse::<SolverKind>().is_err());
        for s in [
            Solver::Euler { steps: 8 },
            Solver::Heun { steps: 3 },
            Solver::dopri5(1e-3),
            Solver::Dopri5 {
                rtol: 1e-3,
                atol: 1e-4,
                max_steps: 100,
            },
        ] {
            let back: Solver = s.to_string().parse().unwrap();
            assert_eq!(back, s, "{s}");
        }
        assert!("euler".parse::<Solver>().is_err());
        assert!("euler:x".parse::<Solver>().is_err());
        assert!("euler:0".parse::<Solver>().is_err());
        assert!("dopri5:-1".parse::<Solver>().is_err());
    }

    #[test]
    fn dt_base_rule() {
        for k in 0..=7 {
            let t = (1usize << k) as f64;
            assert_eq!(dt_base_for_step(1.0 / t), k as f64);
        }
        assert_eq!(dt_base_for_step(1.0 / 256.0), 7.0);
        assert_eq!(dt_base_for_step(1.0 / 3.0), 2.0); // log2 3 = 1.58
        assert_eq!(dt_base_for_step(0.5 / 4.0), 3.0); // img2img from t0 = 0.5 in 4 steps
        assert_eq!(dt_base_for_step(1.0), 0.0);
    }
}
