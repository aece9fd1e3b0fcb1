//! Peak memory: the hidden `child` command (a fresh process that loads the model at one length and runs one
//! forward) and the parent's side that spawns it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::{model, ChildArgs};

/// Fields of /proc/self/status in kB (`VmHWM`, `VmRSS`, `RssAnon`, `RssFile`, ...).
fn proc_status_kb() -> Result<BTreeMap<String, u64>> {
    let s = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status (the memory measurement needs Linux procfs)")?;
    Ok(parse_status_kb(&s))
}

fn parse_status_kb(s: &str) -> BTreeMap<String, u64> {
    s.lines()
        .filter_map(|line| {
            let (k, v) = line.split_once(':')?;
            let v = v.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

/// The child: loads the model at one length, runs one forward and prints its `child: key=value ...` report.
pub fn run(a: &ChildArgs) -> Result<()> {
    let device = model::device(&a.device)?;
    let mut fields = vec![("length".to_string(), a.length.to_string())];
    // Read while the model is still alive, so RssAnon/RssFile show what it holds.
    let st = if a.length > 0 {
        let t0 = Instant::now();
        let (cfg, dit) = model::open_model(&a.ckpt, &device, Some(a.length), a.precision.dtype())?;
        let load_ms = t0.elapsed().as_secs_f64() * 1e3;
        let inp = model::inputs(&cfg, a.batch, &device)?;
        let t1 = Instant::now();
        let out = model::forward(&dit, &inp)?;
        model::sync(&device)?;
        let fwd_ms = t1.elapsed().as_secs_f64() * 1e3;
        let checksum: f32 = out.abs()?.sum_all()?.to_scalar()?;
        if !checksum.is_finite() {
            bail!(
                "the forward at length {} produced non-finite values",
                a.length
            );
        }
        fields.push(("resident_blocks".into(), dit.resident_blocks().to_string()));
        fields.push(("load_ms".into(), format!("{load_ms:.0}")));
        fields.push(("forward_ms".into(), format!("{fwd_ms:.0}")));
        proc_status_kb()?
    } else {
        proc_status_kb()?
    };
    for k in ["VmHWM", "VmRSS", "RssAnon", "RssFile"] {
        fields.push((k.to_string(), st.get(k).copied().unwrap_or(0).to_string()));
    }
    let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("child: {}", line.join(" "));
    Ok(())
}

/// Runs the child for `length` and returns its `key=value` report.
pub fn spawn(
    ckpt: &Path,
    length: usize,
    device: &str,
    batch: usize,
    precision: odelt_nodes::pipeline::Precision,
) -> Result<BTreeMap<String, String>> {
    let exe = std::env::current_exe().context("locating the odelt-bench executable")?;
    let out = Command::new(&exe)
        .args(["child", "--ckpt"])
        .arg(ckpt)
        .args([
            "--length",
            &length.to_string(),
            "--device",
            device,
            "--batch",
            &batch.to_string(),
            "--precision",
            precision.name(),
        ])
        .output()
        .with_context(|| format!("spawning {}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "memory child at length {length} failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("child: "))
        .with_context(|| format!("memory child at length {length} printed no report: {stdout}"))?;
    Ok(line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_parser_reads_kb_fields() {
        let s = "Name:\todelt-bench\nVmHWM:\t  123456 kB\nVmRSS:\t 100 kB\nThreads:\t3\n";
        let m = parse_status_kb(s);
        assert_eq!(m.get("VmHWM"), Some(&123456));
        assert_eq!(m.get("VmRSS"), Some(&100));
        assert!(!m.contains_key("Threads"));
        assert!(!m.contains_key("Name"));
    }
}
