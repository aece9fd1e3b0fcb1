//! Training ODE_t(ODE_l) from scratch in candle (spec §5): flow matching, the time-consistency (shortcut) bootstrap
//! from the EMA teacher, the length-consistency targets at random lengths, and label dropout for guidance.
//!
//! - [`init`]: the official initialisation of every parameter (spec §1.4).
//! - [`objective`]: one batch of inputs and regression targets (spec §5.1, §5.2).
//! - [`optim`]: AdamW with state that can be saved and resumed.
//! - [`ema`]: the exponential moving average of the weights (the teacher and the shipped model).
//! - [`schedule`]: learning-rate warm-up, constant, cosine tail.
//! - [`state`]: resumable training checkpoints.
//! - [`trainer`]: the loop.

pub mod ema;
pub mod init;
pub mod objective;
pub mod optim;
pub mod schedule;
pub mod state;
pub mod trainer;

pub use objective::ObjectiveConfig;
pub use trainer::{TrainOptions, Trainer};
