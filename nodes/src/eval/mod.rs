//! Evaluation of trained models on small image sets: a small CNN classifier whose features define a Fréchet
//! distance, the distance itself (with a Jacobi eigen solver, no LAPACK), sampling sweeps over steps T and
//! lengths l, and the figures (plots as PNG and SVG, labelled sample grids; drawn with plotters, text in a bundled
//! DejaVu Sans).
//!
//! Samples come from [`crate::sample::sample_seeded`], the sampler node's function: sample `i` of a setting uses
//! noise stream `i` of the seed (before the sampling paths were unified the evaluation used stream `i + 1`, so
//! tables made before that differ from a rerun by the noise only).

pub mod classifier;
pub mod frechet;
pub mod grid;
pub mod plot;
pub mod sweep;
