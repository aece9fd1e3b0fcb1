//! `odelt-model grid`: a labelled PNG grid of class-conditional samples (one column per class).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Device;
use odelt_nodes::data::fashion_mnist::CLASS_NAMES;
use odelt_nodes::eval::grid::labelled_grid;
use odelt_nodes::eval::sampling::{indexed_noise, sample, SampleSpec};

use crate::common::ensure_parent;
use crate::model_io::{fixed_dt_base, load_model};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, default_value = "models/fashion-dit.safetensors")]
    model: PathBuf,
    #[arg(long, default_value = "grid.png")]
    out: PathBuf,
    /// Euler steps T.
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Active length l (number of blocks); default: the full depth.
    #[arg(long)]
    length: Option<usize>,
    /// Samples per class (rows).
    #[arg(long, default_value_t = 8)]
    rows: usize,
    /// Classifier-free guidance scale (1: conditional only).
    #[arg(long, default_value_t = 1.0)]
    guidance: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pixel zoom of each 28x28 sample.
    #[arg(long, default_value_t = 3)]
    zoom: usize,
}

pub fn run(a: Args) -> Result<()> {
    let device = Device::Cpu;
    let (model, opts) = load_model(&a.model, &device)?;
    let cfg = model.config().clone();
    let l = a.length.unwrap_or(cfg.depth);
    let m = model.with_length(l)?;
    let k = cfg.num_classes;
    if a.rows == 0 {
        bail!("--rows must be at least 1");
    }
    let n = a.rows * k;
    let labels: Vec<u32> = (0..n).map(|i| (i % k) as u32).collect();
    let noise = indexed_noise(
        a.seed,
        0,
        n,
        (cfg.input_size, cfg.input_size, cfg.in_channels),
        &device,
    )?;
    let t0 = Instant::now();
    let x = sample(
        &m,
        &noise,
        &labels,
        &SampleSpec {
            steps: a.steps,
            guidance: a.guidance,
            fixed_dt_base: fixed_dt_base(&opts),
        },
    )?;
    let secs = t0.elapsed().as_secs_f64();
    let names: Vec<String> = if k == CLASS_NAMES.len() {
        CLASS_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..k).map(|i| format!("class {i}")).collect()
    };
    let pixels: Vec<f32> = if cfg.in_channels == 1 {
        x.flatten_all()?.to_vec1()?
    } else {
        // Show the first channel of multi-channel models.
        x.narrow(3, 0, 1)?.flatten_all()?.to_vec1()?
    };
    let title = format!("T={} l={} w={}", a.steps, l, a.guidance);
    let cv = labelled_grid(&pixels, cfg.input_size, k, a.rows, &names, a.zoom, &title)?;
    ensure_parent(&a.out)?;
    cv.save_png(&a.out)?;
    println!(
        "wrote {} ({}x{}): {n} samples, T={} l={l}, sampling {:.2}s",
        a.out.display(),
        cv.width,
        cv.height,
        a.steps,
        secs
    );
    Ok(())
}
