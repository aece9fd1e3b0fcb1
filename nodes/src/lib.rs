//! # odelt-nodes
//!
//! ODE_t(ODE_l) (Gudovskiy et al., arXiv 2506.21714) in candle: a DiT whose blocks are grouped into Euler steps
//! of an inner ODE over depth (ODE_l), sampled by an outer ODE over time (ODE_t) with any number of steps T and
//! any active length l.
//!
//! - [`config`]: the model configuration and the official presets.
//! - [`model`]: the DiT with the ODE_l wiring, reading like the paper.
//! - [`params`]: where weights come from (Flax names and layouts), loaded only for the blocks a length needs.
//! - [`checkpoint`]: the official pickle checkpoints (safe reader) and the project's safetensors format.
//! - [`solver`]: ODE_t solvers (Euler, Heun, Dopri5) and classifier-free guidance.
//! - [`sample`]: seeded noise, labels, img2img starts and one-call sampling.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod eval;
pub mod model;
pub mod params;
pub mod pipeline;
pub mod sample;
pub mod solver;
pub mod train;
pub mod util;
pub mod vae;

#[cfg(test)]
mod test_util;

pub use config::DitConfig;
pub use error::{Error, Result};
pub use model::Dit;
