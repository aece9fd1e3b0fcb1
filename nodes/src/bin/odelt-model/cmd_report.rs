//! `odelt-model report`: merges the JSON outputs of several `eval` runs (e.g. lengths evaluated in parallel
//! processes) into one table (markdown + CSV) and one FD-vs-latency plot.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use odelt_nodes::eval::sweep::{self, Calibration, SweepRow};

use crate::common::prefixed;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// JSON files written by `odelt-model eval` (PREFIX.json); for a (T, l) present in several, the first wins.
    #[arg(long, value_delimiter = ',', required = true)]
    inputs: Vec<PathBuf>,
    /// Output prefix: PREFIX.md, PREFIX.csv, PREFIX.png and PREFIX.svg (the plot).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "Fashion-MNIST: FD vs latency")]
    title: String,
    /// Text put above the table (what was run, by which commands).
    #[arg(long, default_value = "")]
    header: String,
}

#[derive(serde::Deserialize)]
struct EvalJson {
    rows: Vec<SweepRow>,
    calibration: Vec<Calibration>,
    guidance: f64,
    /// `fp32`, `bf16`, ... (absent in files written before `eval --precision`: fp32).
    #[serde(default)]
    precision: Option<String>,
    /// The kernels that ran, in words (absent in older files).
    #[serde(default)]
    compute: Option<String>,
}

pub fn run(a: Args) -> Result<()> {
    let mut rows: Vec<SweepRow> = Vec::new();
    let mut cals: Vec<Calibration> = Vec::new();
    let mut guidance = None;
    let mut precision: Option<(String, Option<String>)> = None;
    for p in &a.inputs {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let e: EvalJson =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        if guidance.is_some_and(|g| g != e.guidance) {
            bail!("{} was sampled with another guidance scale", p.display());
        }
        guidance = Some(e.guidance);
        let prec = e.precision.unwrap_or_else(|| "fp32".into());
        if precision.as_ref().is_some_and(|(q, _)| *q != prec) {
            bail!("{} was sampled in another precision ({prec})", p.display());
        }
        precision.get_or_insert((prec, e.compute));
        for r in e.rows {
            if !rows
                .iter()
                .any(|x| x.length == r.length && x.steps == r.steps)
            {
                rows.push(r);
            }
        }
        for c in e.calibration {
            if !cals.iter().any(|x| x.n == c.n) {
                cals.push(c);
            }
        }
    }
    rows.sort_by_key(|r| (std::cmp::Reverse(r.length), r.steps));
    // Only the calibrations for sample counts that some row uses.
    cals.retain(|c| rows.iter().any(|r| r.n == c.n));
    cals.sort_by_key(|c| std::cmp::Reverse(c.n));
    if let Some(d) = a.out.parent() {
        std::fs::create_dir_all(d)?;
    }
    let prec_line = match &precision {
        Some((p, Some(c))) => format!("Precision {p}: {c}.\n"),
        Some((p, None)) if p != "fp32" => format!("Precision {p}.\n"),
        _ => String::new(),
    };
    let md = format!(
        "{}{}{prec_line}Latency = CPU time (user+system) of sampling per image; the CSV has both (`latency_ms_per_image` is wall-clock, `cpu_ms_per_image` CPU time).\n\n{}",
        a.header,
        if a.header.is_empty() { "" } else { "\n\n" },
        sweep::to_markdown(&rows, &cals)
    );
    std::fs::write(prefixed(&a.out, "md"), md)?;
    std::fs::write(prefixed(&a.out, "csv"), sweep::to_csv(&rows))?;
    let title = format!("{} (w = {})", a.title, guidance.unwrap_or(1.0));
    sweep::plot(&rows, &title, cals.first().map(|c| c.fd_train_vs_test)).save(&a.out, 900, 560)?;
    println!(
        "wrote {}.{{md,csv,png,svg}} ({} settings)",
        a.out.display(),
        rows.len()
    );
    Ok(())
}
