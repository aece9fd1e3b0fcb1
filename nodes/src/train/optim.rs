//! AdamW (decoupled weight decay, bias-corrected moments), written out so that its moments can be saved in a
//! training checkpoint and a resumed run continues exactly (candle_nn's AdamW keeps its state private).

use candle_core::{backprop::GradStore, Tensor, Var};

use crate::error::Result;

/// Hyper-parameters (official: b1 0.9, b2 0.999, eps 1e-8, weight decay 0.1).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// The optimiser state for a list of variables.
#[derive(Debug)]
pub struct AdamW {
    pub params: AdamWParams,
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    /// Number of updates done.
    pub t: u64,
}

impl AdamW {
    pub fn new(vars: &[Var], params: AdamWParams) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(AdamW {
            params,
            m: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
            v: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
            t: 0,
        })
    }

    /// One update with learning rate `lr`. Variables without a gradient (unused this step) are only decayed
    /// through their moments, as optax does with zero gradients.
    pub fn step(&mut self, vars: &[Var], grads: &GradStore, lr: f64) -> Result<()> {
        self.t += 1;
        let p = self.params;
        let bc1 = 1.0 - p.beta1.powi(self.t as i32);
        let bc2 = 1.0 - p.beta2.powi(self.t as i32);
        for (i, var) in vars.iter().enumerate() {
            let g = match grads.get(var.as_tensor()) {
                Some(g) => g.detach(),
                None => var.as_tensor().zeros_like()?,
            };
            let m = ((&self.m[i] * p.beta1)? + (&g * (1.0 - p.beta1))?)?;
            let v = ((&self.v[i] * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let mhat = (&m / bc1)?;
            let vhat = (&v / bc2)?;
            let upd = (mhat / (vhat.sqrt()? + p.eps)?)?;
            let w = var.as_tensor().detach();
            let next = ((&w * (1.0 - lr * p.weight_decay))? - (upd * lr)?)?;
            var.set(&next)?;
            // Detached: the gradients' history would otherwise keep each step's whole graph alive.
            self.m[i] = m.detach();
            self.v[i] = v.detach();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn minimises_a_quadratic() {
        let x = Var::from_tensor(&Tensor::new(&[3f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let vars = vec![x.clone()];
        let mut opt = AdamW::new(
            &vars,
            AdamWParams {
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        for _ in 0..300 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            opt.step(&vars, &g, 0.05).unwrap();
        }
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|a| a.abs() < 0.05), "{v:?}");
    }
}
