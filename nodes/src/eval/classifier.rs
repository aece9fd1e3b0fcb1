//! A small CNN classifier for 28x28 grey images, trained by the project on Fashion-MNIST. Its 128-d penultimate
//! activations are the feature space of the Fréchet distance; its predictions give the class accuracy of
//! class-conditional samples.
//!
//! ```text
//! conv 3x3 1->32 (pad 1), ReLU, max-pool 2   -> 14x14x32
//! conv 3x3 32->64 (pad 1), ReLU, max-pool 2  -> 7x7x64
//! dense 3136->128, ReLU                       -> features
//! dense 128->10                               -> logits
//! ```

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};

use crate::data::{ImageSet, Shuffler};
use crate::error::{Error, Result};

/// Width of the feature vectors.
pub const FEATURE_DIM: usize = 128;

const NAMES: [(&str, &[usize]); 8] = [
    ("conv1.weight", &[32, 1, 3, 3]),
    ("conv1.bias", &[32]),
    ("conv2.weight", &[64, 32, 3, 3]),
    ("conv2.bias", &[64]),
    ("fc1.weight", &[3136, FEATURE_DIM]),
    ("fc1.bias", &[FEATURE_DIM]),
    ("fc2.weight", &[FEATURE_DIM, 10]),
    ("fc2.bias", &[10]),
];

/// The classifier's weights.
#[derive(Debug, Clone)]
pub struct Classifier {
    w: HashMap<String, Tensor>,
}

impl Classifier {
    /// He-uniform kernels, zero biases, deterministic for `seed`.
    pub fn init(seed: u64, device: &Device) -> Result<Self> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut w = HashMap::new();
        for (name, shape) in NAMES {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with("bias") {
                vec![0.0; n]
            } else {
                let fan_in: usize = if name.starts_with("conv") {
                    shape[1..].iter().product()
                } else {
                    shape[0]
                };
                let a = (6.0 / fan_in as f64).sqrt();
                (0..n).map(|_| rng.random_range(-a..a) as f32).collect()
            };
            w.insert(name.to_string(), Tensor::from_vec(data, shape, device)?);
        }
        Ok(Classifier { w })
    }

    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let w = candle_core::safetensors::load(path, device).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            message: format!("classifier weights: {e}"),
        })?;
        for (name, shape) in NAMES {
            match w.get(name) {
                Some(t) if t.dims() == shape => {}
                Some(t) => {
                    return Err(Error::ParamShape {
                        name: name.into(),
                        found: t.dims().to_vec(),
                        expected: shape.to_vec(),
                    })
                }
                None => return Err(Error::MissingParam { name: name.into() }),
            }
        }
        Ok(Classifier { w })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        candle_core::safetensors::save(&self.w, path)?;
        Ok(())
    }

    fn p(&self, name: &str) -> &Tensor {
        &self.w[name]
    }

    /// `x`: NHWC `[B, 28, 28, 1]` in \[-1, 1\] → (features `[B, 128]`, logits `[B, 10]`).
    pub fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = x.permute((0, 3, 1, 2))?.contiguous()?;
        let conv = |x: &Tensor, k: &str| -> candle_core::Result<Tensor> {
            let b = self.p(&format!("{k}.bias")).reshape((1, (), 1, 1))?;
            x.conv2d(self.p(&format!("{k}.weight")), 1, 1, 1, 1)?
                .broadcast_add(&b)?
                .relu()?
                .max_pool2d(2)
        };
        let h = conv(&conv(&x, "conv1")?, "conv2")?;
        let b = h.dim(0)?;
        let h = h.reshape((b, ()))?;
        let f = h
            .matmul(self.p("fc1.weight"))?
            .broadcast_add(self.p("fc1.bias"))?
            .relu()?;
        let logits = f
            .matmul(self.p("fc2.weight"))?
            .broadcast_add(self.p("fc2.bias"))?;
        Ok((f, logits))
    }

    /// Features and predicted classes of flat NHWC images (`n * 784` values), in batches.
    pub fn features(
        &self,
        pixels: &[f32],
        batch: usize,
        device: &Device,
    ) -> Result<(Vec<f32>, Vec<u32>)> {
        let per = 28 * 28;
        let n = pixels.len() / per;
        let mut feats = Vec::with_capacity(n * FEATURE_DIM);
        let mut preds = Vec::with_capacity(n);
        let mut i = 0;
        while i < n {
            let m = batch.min(n - i);
            let x = Tensor::from_slice(&pixels[i * per..(i + m) * per], (m, 28, 28, 1), device)?;
            let (f, l) = self.forward(&x)?;
            feats.extend(f.flatten_all()?.to_vec1::<f32>()?);
            preds.extend(l.argmax(D::Minus1)?.to_vec1::<u32>()?);
            i += m;
        }
        Ok((feats, preds))
    }

    /// Fraction of `set` classified correctly.
    pub fn accuracy(&self, set: &ImageSet, device: &Device) -> Result<f64> {
        let (_, preds) = self.features(&set.pixels, 500, device)?;
        let ok = preds
            .iter()
            .zip(&set.labels)
            .filter(|(a, b)| a == b)
            .count();
        Ok(ok as f64 / set.len().max(1) as f64)
    }
}

/// Training settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassifierTrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub seed: u64,
}

/// Trains a classifier on `train` with cross-entropy and AdamW; `on_step(step, total, loss)` after each step.
pub fn train(
    train: &ImageSet,
    o: &ClassifierTrainOptions,
    device: &Device,
    on_step: &mut dyn FnMut(usize, usize, f64),
) -> Result<Classifier> {
    if train.size != 28 || train.channels != 1 || train.num_classes != 10 {
        return Err(Error::invalid(
            "the classifier takes 28x28x1 images with 10 classes",
        ));
    }
    let init = Classifier::init(o.seed, device)?;
    let vars: Vec<(String, Var)> = NAMES
        .iter()
        .map(|(n, _)| Ok((n.to_string(), Var::from_tensor(init.p(n))?)))
        .collect::<Result<_>>()?;
    let mut opt = AdamW::new(
        vars.iter().map(|(_, v)| v.clone()).collect(),
        ParamsAdamW {
            lr: o.lr,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let steps_per_epoch = train.len() / o.batch_size;
    let total = steps_per_epoch * o.epochs;
    let mut sh = Shuffler::new(train.len(), o.seed);
    for step in 0..total {
        let idx = sh.next_batch(o.batch_size);
        let (px, lb) = train.gather(&idx);
        let x = Tensor::from_vec(px, (idx.len(), 28, 28, 1), device)?;
        let y = Tensor::from_vec(lb, idx.len(), device)?;
        let model = Classifier {
            w: vars
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect(),
        };
        let (_, logits) = model.forward(&x)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        // Cosine decay over the run.
        let frac = step as f64 / total.max(1) as f64;
        opt.set_learning_rate(o.lr * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos()));
        opt.backward_step(&loss)?;
        on_step(step + 1, total, loss.to_scalar::<f32>()? as f64);
    }
    Ok(Classifier {
        w: vars
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().detach()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic;

    #[test]
    fn learns_synthetic_bars_and_round_trips() {
        let set = synthetic::bars(400, 28, 10, 3);
        let o = ClassifierTrainOptions {
            epochs: 2,
            batch_size: 50,
            lr: 2e-3,
            seed: 1,
        };
        let c = train(&set, &o, &Device::Cpu, &mut |_, _, _| {}).unwrap();
        let test = synthetic::bars(100, 28, 10, 4);
        assert!(c.accuracy(&test, &Device::Cpu).unwrap() > 0.9);
        let dir = std::env::temp_dir().join(format!("odelt-cls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.safetensors");
        c.save(&p).unwrap();
        let c2 = Classifier::load(&p, &Device::Cpu).unwrap();
        let (f1, _) = c.features(test.image(0), 1, &Device::Cpu).unwrap();
        let (f2, _) = c2.features(test.image(0), 1, &Device::Cpu).unwrap();
        assert_eq!(f1, f2);
        assert_eq!(f1.len(), FEATURE_DIM);
        std::fs::remove_dir_all(&dir).ok();
    }
}
