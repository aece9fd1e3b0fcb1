//! The training loop: per step, a batch from the shuffled data, targets from the EMA teacher, the student's loss,
//! backpropagation, AdamW, and the EMA update. Deterministic for a seed: the data order depends on (seed, epoch)
//! and every other random draw of step s on (seed, s), so resuming from a checkpoint continues the same run.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::ema::Ema;
use super::init::init_params;
use super::objective::{build_batch, loss, LossTerms, ObjectiveConfig};
use super::optim::{AdamW, AdamWParams};
use super::schedule::{ema_decay, lr_at};
use super::state::{self, TrainState};
use crate::config::DitConfig;
use crate::data::{ImageSet, Shuffler};
use crate::error::{Error, Result};
use crate::model::Dit;
use crate::params::TensorMap;

/// Everything that defines a run besides the model config.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainOptions {
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup: u64,
    pub adam: AdamWParams,
    /// Upper bound of the EMA decay (reached after the warm-up `(1+s)/(10+s)`).
    pub ema_decay: f64,
    pub seed: u64,
    pub objective: ObjectiveConfig,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            steps: 1000,
            batch_size: 64,
            lr: 5e-4,
            warmup: 200,
            adam: AdamWParams::default(),
            ema_decay: 0.999,
            seed: 0,
            objective: ObjectiveConfig::default(),
        }
    }
}

/// A model under training.
pub struct Trainer {
    pub cfg: DitConfig,
    pub opts: TrainOptions,
    pub names: Vec<String>,
    pub vars: Vec<Var>,
    pub ema: Ema,
    pub opt: AdamW,
    /// Steps done.
    pub step: u64,
    /// Stop after this many steps although the schedule runs to `opts.steps` (a leg of a longer run).
    pub stop_at: Option<u64>,
    shuffler: Shuffler,
    device: Device,
}

impl Trainer {
    /// A fresh run (weights initialised from the seed) over a data set of `data_len` images.
    pub fn new(
        cfg: &DitConfig,
        opts: TrainOptions,
        data_len: usize,
        device: &Device,
    ) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        let init = init_params(cfg, &mut rng, device)?;
        let names: Vec<String> = init.iter().map(|(n, _)| n.clone()).collect();
        let vars = init
            .iter()
            .map(|(_, t)| Var::from_tensor(t))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let ema = Ema::new(&names, &vars)?;
        let opt = AdamW::new(&vars, opts.adam)?;
        Ok(Trainer {
            cfg: cfg.clone(),
            shuffler: Shuffler::new(data_len, opts.seed),
            opts,
            names,
            vars,
            ema,
            opt,
            step: 0,
            stop_at: None,
            device: device.clone(),
        })
    }

    /// A fine-tuning run that starts from trained weights (the paper's recipe, spec §3 and §5.3): every parameter
    /// `init` holds is copied into both the trained weights and the EMA; parameters it lacks (e.g. the length
    /// embedding of a plain shortcut model) keep their fresh initialisation. The optimiser state, the step count
    /// and with it the EMA warm-up start from zero.
    pub fn fine_tune(
        cfg: &DitConfig,
        init: &dyn crate::params::ParamSource,
        opts: TrainOptions,
        data_len: usize,
        device: &Device,
    ) -> Result<Self> {
        let mut tr = Trainer::new(cfg, opts, data_len, device)?;
        let mut copied = 0usize;
        for (name, var) in tr.names.iter().zip(tr.vars.iter()) {
            if let Some(t) = init.get(name)? {
                let t = t.to_dtype(DType::F32)?.to_device(device)?;
                if t.dims() != var.as_tensor().dims() {
                    return Err(Error::invalid(format!(
                        "fine-tuning: `{name}` has shape {:?} in the initial weights, the model needs {:?}",
                        t.dims(),
                        var.as_tensor().dims()
                    )));
                }
                var.set(&t)?;
                copied += 1;
            }
        }
        if copied == 0 {
            return Err(Error::invalid(
                "fine-tuning: the initial weights share no parameter with the model",
            ));
        }
        tr.ema = Ema::new(&tr.names, &tr.vars)?;
        Ok(tr)
    }

    /// Continues the run saved at `path`. `steps` may extend (or shorten) the planned length.
    pub fn resume(
        path: &Path,
        data_len: usize,
        steps: Option<u64>,
        device: &Device,
    ) -> Result<Self> {
        let s = state::load(path, device)?;
        let mut opts: TrainOptions = serde_json::from_str(&s.options_json)
            .map_err(|e| Error::invalid(format!("{}: training options: {e}", path.display())))?;
        if let Some(n) = steps {
            opts.steps = n;
        }
        let vars = s
            .params
            .iter()
            .map(Var::from_tensor)
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut shuffler = Shuffler::new(data_len, opts.seed);
        shuffler.skip(s.step, opts.batch_size);
        Ok(Trainer {
            cfg: s.config,
            ema: Ema {
                names: s.names.clone(),
                values: s.ema,
            },
            opt: AdamW {
                params: opts.adam,
                m: s.m,
                v: s.v,
                t: s.adam_t,
            },
            opts,
            names: s.names,
            vars,
            step: s.step,
            stop_at: None,
            shuffler,
            device: device.clone(),
        })
    }

    /// The current weights as a parameter source whose tensors carry gradients back to the variables.
    pub fn param_map(&self) -> TensorMap {
        TensorMap(
            self.names
                .iter()
                .cloned()
                .zip(self.vars.iter().map(|v| v.as_tensor().clone()))
                .collect(),
        )
    }

    /// One optimisation step on `data`.
    pub fn train_step(&mut self, data: &ImageSet) -> Result<LossTerms> {
        let idx = self.shuffler.next_batch(self.opts.batch_size);
        let (px, labels) = data.gather(&idx);
        let mut rng = ChaCha8Rng::seed_from_u64(self.opts.seed);
        rng.set_stream(self.step + 1);
        let teacher = Dit::load(
            &self.cfg,
            &self.ema.tensor_map(),
            &self.device,
            DType::F32,
            None,
        )?;
        let batch = build_batch(
            &self.cfg,
            &self.opts.objective,
            &teacher,
            &px,
            &labels,
            &mut rng,
            &self.device,
        )?;
        let student =
            Dit::load_differentiable(&self.cfg, &self.param_map(), &self.device, DType::F32, None)?;
        let (l, terms) = loss(&student, &batch)?;
        if !terms.total.is_finite() {
            return Err(Error::invalid(format!(
                "loss is not finite at step {} ({terms:?})",
                self.step
            )));
        }
        let grads = l.backward()?;
        let lr = self.lr();
        self.opt.step(&self.vars, &grads, lr)?;
        self.ema
            .update(&self.vars, ema_decay(self.step, self.opts.ema_decay))?;
        self.step += 1;
        Ok(terms)
    }

    /// The step this run stops at: `opts.steps`, or `stop_at` when that comes first.
    pub fn end(&self) -> u64 {
        self.stop_at
            .map_or(self.opts.steps, |s| s.min(self.opts.steps))
    }

    /// Learning rate of the next step.
    pub fn lr(&self) -> f64 {
        lr_at(self.step, self.opts.steps, self.opts.lr, self.opts.warmup)
    }

    /// Saves everything needed to resume.
    pub fn save_state(&self, path: &Path) -> Result<()> {
        let options_json = serde_json::to_string(&self.opts)
            .map_err(|e| Error::invalid(format!("options to JSON: {e}")))?;
        state::save(
            path,
            &TrainState {
                config: self.cfg.clone(),
                options_json,
                step: self.step,
                adam_t: self.opt.t,
                names: self.names.clone(),
                params: self.vars.iter().map(|v| v.as_tensor().detach()).collect(),
                ema: self.ema.values.clone(),
                m: self.opt.m.clone(),
                v: self.opt.v.clone(),
            },
        )
    }

    /// Writes the model in the project's safetensors format (Flax names, config in the metadata): the EMA weights
    /// (`ema = true`, what is shipped) or the raw ones.
    pub fn export(&self, path: &Path, ema: bool, extra: &[(&str, String)]) -> Result<()> {
        let tensors: Vec<Tensor> = if ema {
            self.ema.values.clone()
        } else {
            self.vars.iter().map(|v| v.as_tensor().detach()).collect()
        };
        let options_json = serde_json::to_string(&self.opts).unwrap_or_default();
        state::export_weights(
            path,
            &self.cfg,
            &self.names,
            &tensors,
            &options_json,
            self.step,
            ema,
            extra,
        )
    }

    /// Runs until `opts.steps`, calling `on_step(step_done, terms, seconds_for_that_step)` after each step and
    /// saving the state to `state_path` every `checkpoint_every` steps and at the end.
    pub fn run(
        &mut self,
        data: &ImageSet,
        state_path: Option<&Path>,
        checkpoint_every: u64,
        on_step: &mut dyn FnMut(&Trainer, &LossTerms, f64) -> Result<()>,
    ) -> Result<()> {
        let end = self.end();
        while self.step < end {
            let t0 = Instant::now();
            let terms = self.train_step(data)?;
            on_step(self, &terms, t0.elapsed().as_secs_f64())?;
            if let Some(p) = state_path {
                if (checkpoint_every > 0 && self.step.is_multiple_of(checkpoint_every))
                    || self.step == end
                {
                    self.save_state(p)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic;

    fn tiny() -> DitConfig {
        DitConfig {
            input_size: 8,
            in_channels: 1,
            patch_size: 4,
            hidden_size: 32,
            depth: 4,
            num_heads: 2,
            mlp_hidden: 64,
            num_classes: 4,
            depth_group: 2,
            depth_min: 2,
            length_embedding: true,
            latent_scale: 1.0,
        }
    }

    fn opts(steps: u64) -> TrainOptions {
        TrainOptions {
            steps,
            batch_size: 16,
            lr: 3e-3,
            warmup: 3,
            adam: AdamWParams {
                weight_decay: 0.0,
                ..Default::default()
            },
            ema_decay: 0.9,
            seed: 7,
            objective: ObjectiveConfig::default(),
        }
    }

    #[test]
    fn loss_decreases_on_synthetic_bars() {
        let data = synthetic::bars(64, 8, 4, 1);
        let mut tr = Trainer::new(&tiny(), opts(40), data.len(), &Device::Cpu).unwrap();
        let mut losses = Vec::new();
        tr.run(&data, None, 0, &mut |_, t, _| {
            losses.push(t.total);
            Ok(())
        })
        .unwrap();
        let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
        let last: f64 = losses[35..].iter().sum::<f64>() / 5.0;
        assert!(last < 0.7 * first, "loss {first} -> {last}");
        assert!(losses.iter().all(|l| l.is_finite()));
    }

    #[test]
    fn deterministic_and_resumable() {
        let data = synthetic::bars(32, 8, 4, 2);
        let dir = std::env::temp_dir().join(format!("odelt-train-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state.safetensors");

        let run = |n: u64, save: Option<&Path>| {
            let mut tr = Trainer::new(&tiny(), opts(6), data.len(), &Device::Cpu).unwrap();
            let mut out = Vec::new();
            while tr.step < n {
                out.push(tr.train_step(&data).unwrap().total);
            }
            if let Some(p) = save {
                tr.save_state(p).unwrap();
            }
            out
        };
        let full = run(6, None);
        assert_eq!(full, run(6, None), "same seed, same losses");
        let head = run(3, Some(&state));
        let mut tr = Trainer::resume(&state, data.len(), None, &Device::Cpu).unwrap();
        assert_eq!(tr.step, 3);
        let mut tail = Vec::new();
        while tr.step < 6 {
            tail.push(tr.train_step(&data).unwrap().total);
        }
        let joined: Vec<f64> = head.into_iter().chain(tail).collect();
        assert_eq!(joined, full, "resumed run continues exactly");

        let model = dir.join("m.safetensors");
        tr.export(&model, true, &[]).unwrap();
        let ck = crate::checkpoint::SafetensorsCheckpoint::open(&model).unwrap();
        assert_eq!(ck.config().unwrap().unwrap(), tiny());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn fine_tune_starts_from_the_given_weights() {
        let data = synthetic::bars(32, 8, 4, 3);
        let mut base = Trainer::new(&tiny(), opts(4), data.len(), &Device::Cpu).unwrap();
        base.run(&data, None, 0, &mut |_, _, _| Ok(())).unwrap();
        let weights = base.ema.tensor_map();

        let mut ft =
            Trainer::fine_tune(&tiny(), &weights, opts(3), data.len(), &Device::Cpu).unwrap();
        assert_eq!(ft.step, 0);
        assert_eq!(ft.opt.t, 0);
        for (i, n) in ft.names.iter().enumerate() {
            let want = &weights.0[n];
            let raw = ft.vars[i].as_tensor();
            assert_eq!(
                crate::test_util::max_abs_diff(raw, want),
                0.0,
                "{n} (trained copy)"
            );
            assert_eq!(
                crate::test_util::max_abs_diff(&ft.ema.values[i], want),
                0.0,
                "{n} (EMA)"
            );
        }
        // the fine-tune trains: its weights move away from the start
        ft.run(&data, None, 0, &mut |_, t, _| {
            assert!(t.total.is_finite());
            Ok(())
        })
        .unwrap();
        let moved = ft.names.iter().enumerate().any(|(i, n)| {
            crate::test_util::max_abs_diff(ft.vars[i].as_tensor(), &weights.0[n]) > 0.0
        });
        assert!(moved);

        // missing parameters keep their fresh init; a source without any shared parameter is refused
        let mut partial = weights.clone();
        partial.0.remove("BlockEmbedder_0/Embed_0/embedding");
        let fresh = Trainer::new(&tiny(), opts(1), data.len(), &Device::Cpu).unwrap();
        let p = Trainer::fine_tune(&tiny(), &partial, opts(1), data.len(), &Device::Cpu).unwrap();
        let k = p
            .names
            .iter()
            .position(|n| n == "BlockEmbedder_0/Embed_0/embedding")
            .unwrap();
        assert_eq!(
            crate::test_util::max_abs_diff(p.vars[k].as_tensor(), fresh.vars[k].as_tensor()),
            0.0
        );
        let err = Trainer::fine_tune(
            &tiny(),
            &TensorMap::default(),
            opts(1),
            data.len(),
            &Device::Cpu,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("no parameter"), "{err}");

        // a parameter of the wrong shape is named
        let mut wide = tiny();
        wide.hidden_size = 48;
        wide.mlp_hidden = 96;
        let err = Trainer::fine_tune(&wide, &weights, opts(1), data.len(), &Device::Cpu)
            .err()
            .unwrap();
        assert!(err.to_string().contains("shape"), "{err}");
    }
}
