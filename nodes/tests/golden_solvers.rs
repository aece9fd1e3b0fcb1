//! Golden parity of the ODE_t solvers against the official sampler (JAX, float32): every fixed-step Euler case
//! (length l, steps T, guidance w) and every adaptive Dopri5 case (diffrax 0.7.2, the same step counts) of
//! `tiny.json`, through the high-level `sample` API.

mod golden_common;

use candle_core::{DType, Tensor};
use golden_common::{device, rel_l2, Golden};
use odelt_nodes::sample::{sample, SampleOptions};
use odelt_nodes::solver::{solve, Guided, SolveStats, Solver};
use odelt_nodes::{Dit, DitConfig};

const EULER_TOL: f64 = 1e-4;
const DOPRI5_TOL: f64 = 1e-4;

fn setup(g: &Golden) -> (Dit, Tensor, Tensor) {
    let cfg = DitConfig::golden_tiny();
    let model = Dit::load(&cfg, &g.params(), &device(), DType::F32, None).unwrap();
    (model, g.get("in/x0_nhwc"), g.get("in/labels"))
}

#[test]
fn euler_matches_official_sampler() {
    let g = Golden::open();
    let (model, x0, y) = setup(&g);
    let cases = g.cases("euler");
    assert_eq!(cases.len(), 24, "expected every (l, T, w) Euler case");
    let mut worst = 0f64;
    for case in cases {
        let l = case["l"].as_u64().unwrap() as usize;
        let steps = case["steps"].as_u64().unwrap() as usize;
        let w = case["cfg"].as_f64().unwrap();
        let key = case["key"].as_str().unwrap();
        let m = model.with_length(l).unwrap();
        let opts = SampleOptions {
            solver: Solver::Euler { steps },
            cfg: w,
            t_start: 0.0,
        };
        let (x1, st) = sample(&m, &x0, &y, &opts, &mut ()).unwrap();
        assert_eq!(
            st,
            SolveStats {
                nfe: steps,
                steps,
                accepted: steps,
                rejected: 0
            }
        );
        let err = rel_l2(&x1, &g.get(key));
        eprintln!("{key}: rel L2 {err:.3e}");
        worst = worst.max(err);
        assert!(err < EULER_TOL, "{key}: rel L2 {err:e}");
    }
    eprintln!("euler: max rel L2 {worst:.3e}");
}

#[test]
fn dopri5_matches_diffrax() {
    let g = Golden::open();
    let (model, x0, y) = setup(&g);
    let cases = g.cases("dopri5");
    assert_eq!(cases.len(), 8, "expected every (l, tol, w) Dopri5 case");
    let mut worst = 0f64;
    for case in cases {
        let l = case["l"].as_u64().unwrap() as usize;
        let tol = case["tol"].as_f64().unwrap();
        let w = case["cfg"].as_f64().unwrap();
        let key = case["key"].as_str().unwrap();
        let want = (
            case["num_steps"].as_u64().unwrap() as usize,
            case["num_accepted"].as_u64().unwrap() as usize,
            case["num_rejected"].as_u64().unwrap() as usize,
        );
        let m = model.with_length(l).unwrap();
        let opts = SampleOptions {
            solver: Solver::dopri5(tol),
            cfg: w,
            t_start: 0.0,
        };
        let (x1, st) = sample(&m, &x0, &y, &opts, &mut ()).unwrap();
        assert_eq!(
            (st.steps, st.accepted, st.rejected),
            want,
            "{key}: step counts differ from diffrax ({st:?})"
        );
        assert_eq!(st.nfe, 1 + 6 * st.steps, "{key}");
        let err = rel_l2(&x1, &g.get(key));
        eprintln!("{key}: rel L2 {err:.3e}, {st:?}");
        worst = worst.max(err);
        assert!(err < DOPRI5_TOL, "{key}: rel L2 {err:e}");
    }
    eprintln!("dopri5: max rel L2 {worst:.3e}");
}

/// The batched 2B guidance pass equals two separate passes (and the golden), and guidance interpolates.
#[test]
fn batched_guidance_equals_two_passes() {
    let g = Golden::open();
    let (model, x0, y) = setup(&g);
    let m = model.with_length(4).unwrap();
    let s = Solver::Euler { steps: 4 };
    let (a, _) = solve(
        &mut Guided::new(&m, &y, 1.5).unwrap(),
        &x0,
        0.0,
        &s,
        &mut (),
    )
    .unwrap();
    let (b, _) = solve(
        &mut Guided::new(&m, &y, 1.5).unwrap().batched(false),
        &x0,
        0.0,
        &s,
        &mut (),
    )
    .unwrap();
    let err = rel_l2(&a, &b);
    eprintln!("batched vs two passes: rel L2 {err:.3e}");
    assert!(err < 1e-6, "rel L2 {err:e}");
    assert!(rel_l2(&b, &g.get("out/euler_l4_T4_w1.5")) < EULER_TOL);
    // Bad labels are rejected up front.
    let bad = Tensor::new(&[0u32, 11, 3], &device()).unwrap();
    assert!(Guided::new(&m, &bad, 1.0).is_err());
    let short = Tensor::new(&[0u32, 1], &device()).unwrap();
    let mut f = Guided::new(&m, &short, 1.0).unwrap();
    assert!(solve(&mut f, &x0, 0.0, &s, &mut ()).is_err());
}
