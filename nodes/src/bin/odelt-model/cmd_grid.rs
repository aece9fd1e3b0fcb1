//! `odelt-model grid`: a labelled PNG grid of class-conditional samples (one column per class), optionally the raw
//! samples as a `.latent` file. Sample `i` (row `i / classes`, class `i % classes`) uses noise stream `i` of
//! `--seed`, as the sampler node does: its first row is the node's batch of one sample per class with the same seed.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Device;
use odelt_nodes::data::fashion_mnist::CLASS_NAMES;
use odelt_nodes::eval::grid::{grid_samples, labelled_grid};
use odelt_nodes::pipeline::array::nhwc_to_nchw;
use odelt_nodes::pipeline::latent_file::write_latent;
use odelt_nodes::sample::SampleOptions;
use odelt_nodes::solver::Solver;

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
    /// Noise seed: sample i uses noise stream i of it, the sampler node's noise for the same seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pixel zoom of each 28x28 sample.
    #[arg(long, default_value_t = 3)]
    zoom: usize,
    /// Also write the samples, in grid order, as a ComfyUI `.latent` file (NCHW, raw: the sampler node's LATENT,
    /// for LoadLatent or a comparison with the node).
    #[arg(long, value_name = "FILE")]
    latent: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let device = Device::Cpu;
    let (model, trained) = load_model(&a.model, &device)?;
    let cfg = model.config().clone();
    let l = a.length.unwrap_or(cfg.depth);
    let m = model.with_length(l)?;
    let k = cfg.num_classes;
    if a.rows == 0 {
        bail!("--rows must be at least 1");
    }
    let n = a.rows * k;
    let opts = SampleOptions {
        cfg: a.guidance,
        ..SampleOptions::new(Solver::Euler { steps: a.steps })
    };
    let t0 = Instant::now();
    let x = grid_samples(&m, a.rows, a.seed, opts, fixed_dt_base(&trained))?;
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
    let title = format!("T = {}, l = {l}, w = {}", a.steps, a.guidance);
    let cv = labelled_grid(&pixels, cfg.input_size, k, a.rows, &names, a.zoom, &title)?;
    ensure_parent(&a.out)?;
    cv.save_png(&a.out)?;
    if let Some(p) = &a.latent {
        ensure_parent(p)?;
        write_latent(p, &nhwc_to_nchw(&x, cfg.latent_scale)?, &[])?;
        println!("wrote {} ({n} samples, NCHW)", p.display());
    }
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
