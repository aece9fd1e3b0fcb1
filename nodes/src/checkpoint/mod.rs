//! Checkpoint formats: the official pickle (`.pkl`) files and the project's safetensors files.

pub mod official;
pub mod pickle;
