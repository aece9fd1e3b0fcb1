//! Exponential moving average of the trained weights: `ema = d * ema + (1 - d) * p` after every step.

use candle_core::{Tensor, Var};

use crate::error::Result;
use crate::params::TensorMap;

/// EMA copies (plain tensors, no gradient tracking), aligned with the trained variables by name.
#[derive(Debug, Clone)]
pub struct Ema {
    pub names: Vec<String>,
    pub values: Vec<Tensor>,
}

impl Ema {
    /// Starts the average at the current weights.
    pub fn new(names: &[String], vars: &[Var]) -> Result<Self> {
        Ok(Ema {
            names: names.to_vec(),
            values: vars
                .iter()
                .map(|v| v.as_tensor().detach().copy())
                .collect::<candle_core::Result<_>>()?,
        })
    }

    /// One update with decay `d`.
    pub fn update(&mut self, vars: &[Var], d: f64) -> Result<()> {
        for (e, v) in self.values.iter_mut().zip(vars) {
            *e = ((&*e * d)? + (v.as_tensor().detach() * (1.0 - d))?)?;
        }
        Ok(())
    }

    /// The averaged weights as a parameter source (for building the teacher model).
    pub fn tensor_map(&self) -> TensorMap {
        TensorMap(
            self.names
                .iter()
                .cloned()
                .zip(self.values.iter().cloned())
                .collect(),
        )
    }
}
