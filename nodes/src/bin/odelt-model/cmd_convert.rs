//! `odelt-model convert` and `odelt-model inspect`: official pickles to the project's safetensors format, and a
//! summary of any checkpoint.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use odelt_nodes::checkpoint::{self, ConfigOverrides, LoadOptions, WeightsSlot};
use odelt_nodes::train::state;

use crate::common::ensure_parent;

/// What a checkpoint does not record, shared by both commands.
#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// Parameter tree of an official pickle: params (what the official evaluation uses) or params_ema; of a
    /// training state (`state.safetensors` of `odelt-model train`): its raw weights (params) or their EMA.
    #[arg(long, default_value = "params")]
    weights: WeightsSlot,
    /// Configuration preset for what the file does not record: auto (recognise DiT-B / DiT-XL by shape), dit-b,
    /// dit-xl, or custom (give --num-heads, --depth-group, --depth-min, --input-size yourself).
    #[arg(long, default_value = "auto")]
    preset: String,
    #[arg(long)]
    num_heads: Option<usize>,
    #[arg(long)]
    depth_group: Option<usize>,
    #[arg(long)]
    depth_min: Option<usize>,
    /// Side of the model input in latent cells or pixels (32 for the official 256px models).
    #[arg(long)]
    input_size: Option<usize>,
    /// Latent scale (0.18215 for SD-VAE latent models, 1 for pixel models).
    #[arg(long)]
    latent_scale: Option<f64>,
}

impl ConfigArgs {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            weights: self.weights,
            overrides: ConfigOverrides {
                preset: Some(self.preset.clone()),
                num_heads: self.num_heads,
                depth_group: self.depth_group,
                depth_min: self.depth_min,
                input_size: self.input_size,
                latent_scale: self.latent_scale,
            },
        }
    }
}

/// Convert a checkpoint (typically an official .pkl) to the project's safetensors format.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  odelt-model convert celeba-shortcut-odelt.pkl models/celeba-dit-b.safetensors --preset dit-b\n  odelt-model convert xlimagenet-shortcut-odelt.pkl models/imagenet-dit-xl.safetensors --preset dit-xl\n  odelt-model convert runs/main/state.safetensors raw.safetensors --weights params   (a training state's raw weights)\n  odelt-model convert run.pkl out.safetensors --preset custom --num-heads 4 --depth-group 2 --depth-min 2 --input-size 8 --latent-scale 1"
)]
pub struct ConvertArgs {
    /// Source checkpoint (.pkl or .safetensors).
    src: PathBuf,
    /// Destination .safetensors file (the configuration goes into its metadata).
    dst: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn convert(a: ConvertArgs) -> Result<()> {
    ensure_parent(&a.dst)?;
    if state::is_state(&a.src) {
        let st = state::load(&a.src, &Device::Cpu)
            .with_context(|| format!("reading training state {}", a.src.display()))?;
        let ema = a.config.weights == WeightsSlot::ParamsEma;
        st.export(&a.dst, ema)
            .with_context(|| format!("writing {}", a.dst.display()))?;
        println!(
            "wrote {}: the {} weights of training step {}",
            a.dst.display(),
            if ema { "EMA" } else { "raw" },
            st.step
        );
        return Ok(());
    }
    let cfg = checkpoint::convert_to_safetensors(&a.src, &a.dst, &a.config.options())
        .with_context(|| format!("converting {}", a.src.display()))?;
    println!(
        "wrote {}: {}",
        a.dst.display(),
        serde_json::to_string(&cfg).unwrap_or_default()
    );
    println!("trained lengths: {:?}", cfg.trained_lengths());
    Ok(())
}

/// Print a checkpoint's format, resolved configuration and trained lengths.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Checkpoint (.pkl or .safetensors).
    path: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let ck = checkpoint::open(&a.path, &a.config.options())
        .with_context(|| format!("opening {}", a.path.display()))?;
    let cfg = &ck.config;
    println!("file:     {}", a.path.display());
    println!("format:   {:?}", ck.format);
    println!(
        "config:   {}",
        serde_json::to_string_pretty(cfg).unwrap_or_default()
    );
    println!("lengths:  {:?} (trained)", cfg.trained_lengths());
    for l in cfg.trained_lengths() {
        println!(
            "  l={l:<3} computes blocks 0..{} ({} resident)",
            cfg.resident_blocks(l),
            cfg.resident_blocks(l)
        );
    }
    let params: usize = odelt_nodes::params::param_specs(cfg, cfg.depth)
        .iter()
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    println!("params:   {params}");
    Ok(())
}
