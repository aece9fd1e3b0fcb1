//! `odelt-model score`: FD and class accuracy of images made elsewhere — e.g. an `odelt batch` run spread over a
//! cluster and gathered by `odelt batch merge --npz` — against the Fashion-MNIST test statistics, with the same
//! classifier features as `eval`. So an N = 50,000 evaluation can be sampled by many shards and scored once.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use odelt_nodes::data::fashion_mnist::Split;
use odelt_nodes::eval::classifier::{Classifier, FEATURE_DIM};
use odelt_nodes::eval::frechet::{frechet_distance, Gaussian};
use odelt_nodes::eval::sweep;

use crate::common::DataArgs;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  odelt batch run examples/workflows/generate.json --output-dir runs/n5000 --sweep 4.seed=0..499\n  odelt batch merge runs/n5000 --npz\n  odelt-model score --npz runs/n5000/merged/all.npz --labels-cycle 10\n\nImages are uint8 [N, 28, 28, C] (C = 1, or 3 with equal channels as ODEt Decode writes them).\nLabels: --labels-cycle K when every item's batch holds the classes 0..K-1 in order (generate.json's\nclass_labels \"0,...,9\"), or --labels-array NAME for an integer array of N labels in the .npz."
)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// The images: an .npz with an `images` array (what `odelt batch merge --npz` writes).
    #[arg(long, value_name = "FILE")]
    npz: PathBuf,
    /// Name of the image array in the .npz.
    #[arg(long, default_value = "images")]
    images: String,
    /// Image i has class i mod K.
    #[arg(long, value_name = "K", conflicts_with = "labels_array")]
    labels_cycle: Option<u32>,
    /// Name of an integer array of N labels in the .npz.
    #[arg(long, value_name = "NAME")]
    labels_array: Option<String>,
    #[arg(long, default_value = "models/classifier.safetensors")]
    classifier: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// uint8 NHWC images (C = 1 or 3) as the classifier's input: one channel, scaled to [-1, 1] like the data sets.
fn to_classifier_pixels(raw: &[u8], dims: &[usize]) -> Result<Vec<f32>> {
    let [n, h, w, c] = dims else {
        bail!("the images are {dims:?}: expected [N, H, W, C]");
    };
    if (*h, *w) != (28, 28) || !(*c == 1 || *c == 3) {
        bail!("the images are {dims:?}: the classifier takes 28x28 with 1 or 3 channels");
    }
    Ok((0..n * h * w)
        .map(|p| raw[p * c] as f32 / 255.0 * 2.0 - 1.0)
        .collect())
}

pub fn run(a: Args) -> Result<()> {
    let device = Device::Cpu;
    let npz = candle_core::npy::NpzTensors::new(&a.npz)
        .with_context(|| format!("opening {}", a.npz.display()))?;
    let images = npz
        .get(&a.images)?
        .with_context(|| format!("{} has no `{}` array", a.npz.display(), a.images))?;
    let dims = images.dims().to_vec();
    let raw: Vec<u8> = images
        .to_dtype(DType::U8)?
        .flatten_all()?
        .to_vec1()
        .context("reading the images as uint8")?;
    let pixels = to_classifier_pixels(&raw, &dims)?;
    let n = dims[0];
    let labels: Option<Vec<u32>> = match (&a.labels_array, a.labels_cycle) {
        (Some(name), _) => {
            let t = npz
                .get(name)?
                .with_context(|| format!("{} has no `{name}` array", a.npz.display()))?;
            let l: Vec<i64> = t.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
            if l.len() != n {
                bail!("`{name}` has {} labels for {n} images", l.len());
            }
            Some(l.into_iter().map(|v| v.max(0) as u32).collect())
        }
        (None, Some(0)) => bail!("--labels-cycle must be at least 1"),
        (None, Some(k)) => Some((0..n as u32).map(|i| i % k).collect()),
        (None, None) => None,
    };
    let c = Classifier::load(&a.classifier, &device)
        .with_context(|| format!("loading classifier {}", a.classifier.display()))?;
    let test = a.data.load(Split::Test)?;
    let (reference, _) = sweep::real_stats(&c, &test, &device)?;
    let (f, preds) = c.features(&pixels, 500, &device)?;
    let fd = frechet_distance(&Gaussian::fit(&f, FEATURE_DIM)?, &reference)?;
    let accuracy =
        labels.map(|l| preds.iter().zip(&l).filter(|(p, y)| p == y).count() as f64 / n as f64);
    if a.json {
        println!(
            "{}",
            serde_json::json!({"n": n, "fd": fd, "accuracy": accuracy, "n_test": test.len()})
        );
    } else {
        let acc = accuracy.map_or("- (no labels given)".into(), |a| {
            format!("{:.1} %", 100.0 * a)
        });
        println!(
            "{n} images from {}: FD {fd:.3} against the {} test images, class accuracy {acc}",
            a.npz.display(),
            test.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_rgb_images_become_one_channel_in_minus_one_to_one() {
        let mut raw = vec![0u8; 28 * 28 * 3];
        raw[0..3].copy_from_slice(&[255, 255, 255]);
        let px = to_classifier_pixels(&raw, &[1, 28, 28, 3]).unwrap();
        assert_eq!(px.len(), 784);
        assert_eq!((px[0], px[1]), (1.0, -1.0));
        assert!(to_classifier_pixels(&raw, &[1, 28, 14, 6]).is_err());
    }
}
