//! Evaluation of trained models on small image sets: a small CNN classifier whose features define a Fréchet
//! distance, the distance itself (with a Jacobi eigen solver, no LAPACK), sampling sweeps over steps T and
//! lengths l, and PNG output (plots, labelled sample grids, a built-in bitmap font).

pub mod classifier;
pub mod font;
pub mod frechet;
pub mod grid;
pub mod plot;
pub mod sampling;
pub mod sweep;
