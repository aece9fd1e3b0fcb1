//! The quality/latency sweep: for every Euler step count T and every trained length l, sample N class-balanced
//! images, and report the Fréchet distance to the test set in the classifier's feature space, the classifier's
//! accuracy on the samples (w.r.t. the conditioning labels), and the wall-clock latency per image.

use std::time::Instant;

use candle_core::{Device, Tensor};

use super::classifier::{Classifier, FEATURE_DIM};
use super::frechet::{frechet_distance, Gaussian};
use super::plot::{LinePlot, Series};
use crate::data::ImageSet;
use crate::error::Result;
use crate::model::Dit;
use crate::sample::{sample_seeded, SampleOptions, SeededBatch, Start};
use crate::solver::Solver;
use crate::util::process_cpu_seconds;

/// What to sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub steps: Vec<usize>,
    pub lengths: Vec<usize>,
    /// Samples per setting.
    pub n: usize,
    /// Images per sampling batch.
    pub batch: usize,
    pub guidance: f64,
    /// Noise seed (sample `i` uses noise stream `i`, see [`crate::sample`]).
    pub seed: u64,
    /// Step code forced at every T ([`SeededBatch::step_code`]).
    pub fixed_dt_base: Option<f64>,
}

/// One (l, T) result.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SweepRow {
    pub length: usize,
    pub steps: usize,
    pub n: usize,
    pub fd: f64,
    pub accuracy: f64,
    /// Wall-clock sampling time per image (milliseconds).
    pub latency_ms: f64,
    /// Process CPU time (user + system) of sampling per image (milliseconds; from /proc, NaN where unavailable).
    /// On shared cores this is the steadier latency measure; with one thread it equals the compute time.
    pub cpu_ms: f64,
    /// Blocks computed per image (T x effective blocks at l): the latency in units of one DiT block.
    pub block_evals: usize,
}

/// Real-vs-real calibration: `n` training images against the test-set statistics.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    pub n: usize,
    pub n_test: usize,
    pub fd_train_vs_test: f64,
    pub classifier_test_accuracy: f64,
    pub classifier_train_subset_accuracy: f64,
}

/// Feature statistics of a real set, and the classifier's accuracy on it.
pub fn real_stats(c: &Classifier, set: &ImageSet, device: &Device) -> Result<(Gaussian, f64)> {
    let (f, p) = c.features(&set.pixels, 500, device)?;
    let acc =
        p.iter().zip(&set.labels).filter(|(a, b)| a == b).count() as f64 / set.len().max(1) as f64;
    Ok((Gaussian::fit(&f, FEATURE_DIM)?, acc))
}

/// Class-balanced labels `i % classes`.
pub fn balanced_labels(n: usize, classes: usize) -> Vec<u32> {
    (0..n).map(|i| (i % classes) as u32).collect()
}

/// The samples of one (l, T) setting and the time spent drawing them.
#[derive(Debug, Clone)]
pub struct SettingSamples {
    /// The `[N, S, S, C]` NHWC model-space samples, flattened.
    pub pixels: Vec<f32>,
    /// Their labels `i % classes`.
    pub labels: Vec<u32>,
    /// Wall-clock seconds of sampling.
    pub wall_s: f64,
    /// Process CPU seconds of sampling.
    pub cpu_s: f64,
}

/// Draws the `opts.n` samples of a setting with `model` at its active length and `steps` Euler steps. Sample `i`
/// has label `i % classes` and noise stream `i` of `opts.seed` (through [`sample_seeded`], in batches of
/// `opts.batch` that change no sample's noise), so every (T, l) setting starts from the same noise, and the first
/// `rows · classes` samples start from the noise of the `odelt-model grid --rows rows` samples and of the sampler
/// node's with the same seed.
pub fn sample_setting(model: &Dit, steps: usize, opts: &SweepOptions) -> Result<SettingSamples> {
    let cfg = model.config();
    let labels = balanced_labels(opts.n, cfg.num_classes);
    let sample_opts = SampleOptions {
        cfg: opts.guidance,
        ..SampleOptions::new(Solver::Euler { steps })
    };
    let mut pixels: Vec<f32> =
        Vec::with_capacity(opts.n * cfg.input_size * cfg.input_size * cfg.in_channels);
    let mut wall_s = 0.0;
    let mut cpu_s = 0.0;
    let mut i = 0;
    while i < opts.n {
        let b = opts.batch.max(1).min(opts.n - i);
        let y = Tensor::from_slice(&labels[i..i + b], b, model.device())?;
        let batch = SeededBatch {
            seed: opts.seed,
            first: i as u64,
            labels: &y,
            start: Start::Noise,
            opts: sample_opts,
            step_code: opts.fixed_dt_base,
        };
        let t0 = Instant::now();
        let c0 = process_cpu_seconds();
        let (x, _) = sample_seeded(model, &batch, &mut ())?;
        wall_s += t0.elapsed().as_secs_f64();
        cpu_s += process_cpu_seconds() - c0;
        pixels.extend(x.flatten_all()?.to_vec1::<f32>()?);
        i += b;
    }
    Ok(SettingSamples {
        pixels,
        labels,
        wall_s,
        cpu_s,
    })
}

/// Samples `opts.n` images at (l, T) ([`sample_setting`]) and scores them.
pub fn evaluate_setting(
    model: &Dit,
    c: &Classifier,
    reference: &Gaussian,
    length: usize,
    steps: usize,
    opts: &SweepOptions,
) -> Result<SweepRow> {
    let m = model.with_length(length)?;
    let cfg = m.config().clone();
    let SettingSamples {
        pixels,
        labels,
        wall_s: sampling_s,
        cpu_s,
    } = sample_setting(&m, steps, opts)?;
    let (f, preds) = c.features(&pixels, 500, m.device())?;
    let g = Gaussian::fit(&f, FEATURE_DIM)?;
    let fd = frechet_distance(&g, reference)?;
    let acc = preds.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / opts.n as f64;
    Ok(SweepRow {
        length,
        steps,
        n: opts.n,
        fd,
        accuracy: acc,
        latency_ms: 1000.0 * sampling_s / opts.n as f64,
        cpu_ms: 1000.0 * cpu_s / opts.n as f64,
        block_evals: steps * cfg.resident_blocks(length),
    })
}

/// The table as CSV: `latency_ms_per_image` is wall-clock, `cpu_ms_per_image` the process CPU time (the latency
/// the markdown table and the plot show).
pub fn to_csv(rows: &[SweepRow]) -> String {
    let mut s = String::from(
        "length,steps,n,fd,accuracy,latency_ms_per_image,block_evals_per_image,cpu_ms_per_image\n",
    );
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{:.4},{:.4},{:.3},{},{:.3}\n",
            r.length, r.steps, r.n, r.fd, r.accuracy, r.latency_ms, r.block_evals, r.cpu_ms
        ));
    }
    s
}

/// The table as markdown: one row per T, for every l the FD, the accuracy and the latency.
pub fn to_markdown(rows: &[SweepRow], cal: &[Calibration]) -> String {
    let mut lengths: Vec<usize> = rows.iter().map(|r| r.length).collect();
    lengths.sort_unstable();
    lengths.dedup();
    lengths.reverse();
    let mut steps: Vec<usize> = rows.iter().map(|r| r.steps).collect();
    steps.sort_unstable();
    steps.dedup();
    let mut s = String::from("| T | N |");
    for l in &lengths {
        s.push_str(&format!(" FD l={l} | acc l={l} | cpu ms/img l={l} |"));
    }
    s.push_str("\n|---|---|");
    for _ in &lengths {
        s.push_str("---|---|---|");
    }
    s.push('\n');
    for t in &steps {
        let n = rows.iter().find(|r| r.steps == *t).map_or(0, |r| r.n);
        s.push_str(&format!("| {t} | {n} |"));
        for l in &lengths {
            match rows.iter().find(|r| r.length == *l && r.steps == *t) {
                Some(r) => s.push_str(&format!(
                    " {:.2} | {:.1}% | {:.2} |",
                    r.fd,
                    100.0 * r.accuracy,
                    r.cpu_ms
                )),
                None => s.push_str(" – | – | – |"),
            }
        }
        s.push('\n');
    }
    for c in cal {
        s.push_str(&format!(
            "\nReal vs real (calibration): FD(train {} images vs test {} images) = {:.3}; classifier accuracy: \
             test {:.1}%, that train subset {:.1}%.\n",
            c.n,
            c.n_test,
            c.fd_train_vs_test,
            100.0 * c.classifier_test_accuracy,
            100.0 * c.classifier_train_subset_accuracy
        ));
    }
    s
}

/// FD against latency, one curve per length (both axes log), each point labelled with T.
pub fn plot(rows: &[SweepRow], title: &str, real_fd: Option<f64>) -> LinePlot {
    let mut lengths: Vec<usize> = rows.iter().map(|r| r.length).collect();
    lengths.sort_unstable();
    lengths.dedup();
    lengths.reverse();
    let series = lengths
        .iter()
        .map(|&l| {
            let mut rs: Vec<&SweepRow> = rows.iter().filter(|r| r.length == l).collect();
            rs.sort_by_key(|r| r.steps);
            Series {
                label: format!("l = {l}"),
                points: rs.iter().map(|r| (r.cpu_ms, r.fd)).collect(),
                point_labels: rs.iter().map(|r| format!("{}", r.steps)).collect(),
            }
        })
        .collect();
    LinePlot {
        title: title.to_string(),
        x_label: "latency (CPU ms per image, log scale)".into(),
        y_label: "FD (classifier features, log scale)".into(),
        log_x: true,
        log_y: true,
        series,
        h_lines: real_fd
            .map(|v| vec![(v, format!("real vs real (train vs test): {v:.2}"))])
            .unwrap_or_default(),
        point_label_note: "point labels: Euler steps T".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(l: usize, t: usize, fd: f64) -> SweepRow {
        SweepRow {
            length: l,
            steps: t,
            n: 10,
            fd,
            accuracy: 0.5,
            latency_ms: t as f64 * l as f64,
            cpu_ms: t as f64 * l as f64,
            block_evals: t * l,
        }
    }

    #[test]
    fn tables_list_every_setting() {
        let rows = vec![
            row(2, 1, 9.0),
            row(2, 4, 5.0),
            row(4, 1, 8.0),
            row(4, 4, 3.0),
        ];
        let md = to_markdown(&rows, &[]);
        assert!(md.contains("FD l=4"));
        assert_eq!(md.lines().count(), 4);
        assert!(md.contains("| 4 | 10 | 3.00 | 50.0% | 16.00 | 5.00 |"));
        let csv = to_csv(&rows);
        assert_eq!(csv.lines().count(), 5);
        // wall-clock and CPU time both reach the CSV
        let mut wall_cpu = rows[3].clone();
        wall_cpu.latency_ms = 20.5;
        wall_cpu.cpu_ms = 16.25;
        let csv = to_csv(&[wall_cpu]);
        assert!(csv.starts_with("length,steps,n,fd,accuracy,latency_ms_per_image,block_evals_per_image,cpu_ms_per_image\n"));
        assert!(
            csv.ends_with("4,4,10,3.0000,0.5000,20.500,16,16.250\n"),
            "{csv}"
        );
        let p = plot(&rows, "t", Some(1.0));
        assert_eq!(p.series.len(), 2);
        assert_eq!(p.series[0].points, vec![(4.0, 8.0), (16.0, 3.0)]);
    }
}
