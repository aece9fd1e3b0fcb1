//! `odelt-model classifier-train`: the small CNN whose features define the Fréchet distance.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use indicatif::{ProgressBar, ProgressStyle};
use odelt_nodes::data::fashion_mnist::Split;
use odelt_nodes::eval::classifier::{self, ClassifierTrainOptions};

use crate::common::{ensure_parent, DataArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    #[arg(long, default_value = "models/classifier.safetensors")]
    out: PathBuf,
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: Args) -> Result<()> {
    let device = Device::Cpu;
    let train = a.data.load(Split::Train)?;
    let test = a.data.load(Split::Test)?;
    let o = ClassifierTrainOptions {
        epochs: a.epochs,
        batch_size: a.batch,
        lr: a.lr,
        seed: a.seed,
    };
    let start = Instant::now();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut avg = 0.0;
    let c = classifier::train(&train, &o, &device, &mut |step, total, loss| {
        bar.set_length(total as u64);
        bar.set_position(step as u64);
        avg = if step == 1 {
            loss
        } else {
            0.98 * avg + 0.02 * loss
        };
        bar.set_message(format!("loss {avg:.4}"));
        if bar.is_hidden() && (step % 100 == 0 || step == total) {
            eprintln!(
                "step {step}/{total} loss {avg:.4} elapsed {:.0}s",
                start.elapsed().as_secs_f64()
            );
        }
    })?;
    bar.finish();
    let train_s = start.elapsed().as_secs_f64();
    let acc = c.accuracy(&test, &device)?;
    ensure_parent(&a.out)?;
    c.save(&a.out)?;
    let summary = serde_json::json!({
        "options": o, "test_accuracy": acc, "train_seconds": train_s,
        "test_images": test.len(), "train_images": train.len(),
    });
    let js = a.out.with_extension("json");
    std::fs::write(&js, serde_json::to_string_pretty(&summary)?)?;
    println!(
        "classifier: test accuracy {:.2}% on {} images; trained {:.0}s; wrote {} and {}",
        100.0 * acc,
        test.len(),
        train_s,
        a.out.display(),
        js.display()
    );
    Ok(())
}
