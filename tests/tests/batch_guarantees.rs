//! The guarantees of `odelt batch`, end to end on the tiny fashion model (runs of milliseconds):
//!
//! * the union of shards 0..N-1 is the unsharded run, item for item and byte for byte (and the
//!   shards ran at the same time into one directory);
//! * a shard SIGKILLed at random points and run again ends with exactly the reference files:
//!   none missing, none twice in its journal, none partial (after every kill, every file under
//!   `items/` is already byte-identical to the reference);
//! * `status` reports the killed shard; `merge` of a complete run lists every item once, and
//!   `--npz-by` gathers the images per setting.
//!
//! Needs `cargo build --release -p odelt-host -p odelt-plugin`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use odelt_tests::*;
use serde_json::Value as Json;

/// 2 seeds-axis values × 2 lengths × … : 24 items of 2 images each.
const SWEEP: &[&str] = &["--sweep", "4.seed=0..11", "--sweep", "2.active_blocks=2,4"];
const ITEMS: usize = 24;

fn batch_cmd(out: &Path, extra: &[&str]) -> Command {
    let f = fixture();
    let mut c = Command::new(odelt_bin());
    c.arg("batch")
        .arg(repo_root().join("examples/workflows/generate.json"))
        .arg("--plugins")
        .arg(plugin_path())
        .arg("--models-dir")
        .arg(&f.models)
        .arg("--output-dir")
        .arg(out)
        .args([
            "--set",
            "3.batch_size=2",
            "--set",
            "4.class_labels=\"3,7\"",
            "--set",
            "4.steps=2",
            "--workers",
            "1",
            "-q",
        ])
        .args(SWEEP)
        .args(extra);
    for v in [
        "ODELT_SHARD",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "JOB_COMPLETION_INDEX",
    ] {
        c.env_remove(v);
    }
    c
}

fn odelt(args: &[&str], dir: &Path) -> Output {
    Command::new(odelt_bin())
        .args(args)
        .arg(dir)
        .output()
        .expect("run odelt")
}

/// Every file under `dir/items`, by relative path.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&dir.join("items"), &dir.join("items"), &mut out);
    out
}

fn fresh(tag: &str) -> PathBuf {
    let d = fixture().root.join(format!("batch-{tag}"));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The unsharded run (shared by the tests) and how long it took.
fn reference() -> &'static (BTreeMap<String, Vec<u8>>, Duration) {
    static R: OnceLock<(BTreeMap<String, Vec<u8>>, Duration)> = OnceLock::new();
    R.get_or_init(|| {
        let d = fresh("reference");
        let t = Instant::now();
        let o = batch_cmd(&d, &[]).output().unwrap();
        let took = t.elapsed();
        assert_success(&o, "unsharded batch");
        let s: Json = serde_json::from_slice(&o.stdout).expect("summary JSON on stdout");
        assert_eq!(s["ran"], ITEMS);
        assert_eq!(s["shard"], "0/1");
        let t = tree(&d);
        assert_eq!(
            t.len(),
            ITEMS * 2,
            "2 images per item: {:?}",
            t.keys().collect::<Vec<_>>()
        );
        let dirs: HashSet<&str> = t.keys().map(|k| k.split('/').next().unwrap()).collect();
        assert_eq!(dirs.len(), ITEMS);
        assert!(t.keys().all(
            |k| k.ends_with("/6-generate_00001_.png") || k.ends_with("/6-generate_00002_.png")
        ));
        (t, took)
    })
}

fn journal_keys(dir: &Path) -> Vec<String> {
    let mut keys = Vec::new();
    for e in std::fs::read_dir(dir.join(".odelt-batch/journal"))
        .unwrap()
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "jsonl") {
            let text = std::fs::read_to_string(e.path()).unwrap();
            for l in text.lines() {
                let v: Json = serde_json::from_str(l).expect("whole journal lines");
                keys.push(v["key"].as_str().unwrap().to_string());
            }
        }
    }
    keys
}

#[test]
fn union_of_shards_is_the_unsharded_run_byte_for_byte() {
    let (want, _) = reference();
    let d = fresh("union");
    // Three shards at once, into one directory.
    let kids: Vec<Child> = (0..3)
        .map(|i| {
            batch_cmd(&d, &["--shard", &format!("{i}/3")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for k in kids {
        assert_success(&k.wait_with_output().unwrap(), "a shard");
    }
    let got = tree(&d);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, v) in want {
        assert!(
            got[k] == *v,
            "{k} differs between the sharded and the unsharded run"
        );
    }
    let keys = journal_keys(&d);
    assert_eq!(keys.len(), ITEMS);
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), ITEMS);

    // A rerun of a finished shard does nothing.
    let o = batch_cmd(&d, &["--shard", "1/3"]).output().unwrap();
    assert_success(&o, "rerun");
    let s: Json = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (s["ran"].as_u64(), s["skipped_done"].as_u64()),
        (Some(0), Some(8))
    );

    // status: complete; merge: every item once, in order, with its overrides and files.
    let st = odelt(&["batch", "status"], &d);
    assert_success(&st, "status");
    assert!(String::from_utf8_lossy(&st.stdout).contains(&format!("{ITEMS}/{ITEMS} items done")));
    let m = odelt(&["batch", "merge", "--npz-by", "2.active_blocks"], &d);
    assert_success(&m, "merge");
    let index = std::fs::read_to_string(d.join("index.jsonl")).unwrap();
    let lines: Vec<Json> = index
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), ITEMS);
    let mut files = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["index"], i);
        assert_eq!(l["overrides"]["4.seed"], (i / 2) as u64);
        assert_eq!(
            l["overrides"]["2.active_blocks"],
            if i % 2 == 0 { 2 } else { 4 }
        );
        for f in l["files"].as_array().unwrap() {
            let f = f.as_str().unwrap();
            assert!(d.join(f).is_file());
            files.push(f.strip_prefix("items/").unwrap().to_string());
        }
    }
    files.sort();
    assert_eq!(
        files,
        want.keys().cloned().collect::<Vec<_>>(),
        "the index lists every file once"
    );
    for (l, n) in [(2, ITEMS), (4, ITEMS)] {
        let p = d.join(format!("merged/2.active_blocks={l}.npz"));
        let z = candle_core::npy::NpzTensors::new(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let img = z.get("images").unwrap().expect("images");
        assert_eq!(
            img.dims(),
            [n, 28, 28, 3],
            "12 items × 2 images at length {l}"
        );
        let seeds = z.get("4.seed").unwrap().expect("per-image seeds");
        assert_eq!(seeds.dims(), [n]);
    }
}

/// A small deterministic generator for the kill points.
struct Lcg(u64);
impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SIGKILLs wanted, and the most attempts for them (an attempt whose process finished before
/// its kill point shortens the span kill points are drawn from, and starts over).
const KILLS: usize = 12;
const ATTEMPTS: usize = 40;

#[test]
fn a_shard_killed_at_random_points_and_rerun_ends_with_the_same_files() {
    let (want, took) = reference();
    let d = fresh("kill");
    // Shard 0/2 runs undisturbed; shard 1/2 is killed again and again.
    assert_success(
        &batch_cmd(&d, &["--shard", "0/2"]).output().unwrap(),
        "shard 0/2",
    );
    let mut rng = Lcg(0x0de1_7b47);
    let mut kills = 0;
    let mut finished_early = 0;
    let mut saw_interrupted = false;
    // Kills after the attempt had journaled items; kills in the middle of writing an item.
    let (mut progressed, mut mid_item) = (0, 0);
    let shard1_lines = |d: &Path| {
        std::fs::read_to_string(d.join(".odelt-batch/journal/shard-00001-of-00002.jsonl"))
            .map_or(0, |t| t.lines().count())
    };
    // Half the unsharded run's time is about one shard's; kill anywhere in 0..1.2 of that.
    let mut span = took.as_secs_f64() * 0.6;
    for attempt in 0..ATTEMPTS {
        if kills == KILLS {
            break;
        }
        let delay = Duration::from_secs_f64(span * rng.next_f64());
        let before = shard1_lines(&d);
        let mut child = batch_cmd(&d, &["--shard", "1/2"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            finished_early += 1;
            span *= 0.8;
            // Done: remove this shard's work and go on killing (keeps every attempt meaningful).
            if attempt + 1 < ATTEMPTS {
                reset_shard(&d, 1, 2);
            }
            continue;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        if shard1_lines(&d) > before {
            progressed += 1;
        }
        if std::fs::read_dir(d.join(".odelt-batch/staging")).is_ok_and(|mut r| r.next().is_some()) {
            mid_item += 1;
        }
        // Whatever is under items/ is already final and exact.
        for (k, v) in tree(&d) {
            assert!(
                want.get(&k) == Some(&v),
                "after a kill at {delay:?}, {k} is not a reference file"
            );
        }
        let st = odelt(&["batch", "status"], &d);
        let text = String::from_utf8_lossy(&st.stdout).into_owned();
        if st.status.code() == Some(5) {
            let row = text
                .lines()
                .find(|l| l.trim_start().starts_with("1/2"))
                .unwrap_or_default();
            assert!(
                !row.contains("complete") || row.contains("incomplete"),
                "{text}"
            );
            saw_interrupted |= row.contains("interrupted");
            assert!(text.contains("incomplete shards: 1"), "{text}");
        }
    }
    assert!(
        kills == KILLS,
        "only {kills} of {ATTEMPTS} attempts were killed mid-run ({finished_early} finished first)"
    );
    assert!(
        saw_interrupted,
        "status never reported the killed shard as interrupted"
    );
    let o = batch_cmd(&d, &["--shard", "1/2"]).output().unwrap();
    assert_success(&o, "the final rerun");
    let got = tree(&d);
    assert_eq!(got.len(), want.len(), "no file missing, none extra");
    for (k, v) in want {
        assert!(got.get(k) == Some(v), "{k} differs after kills and a rerun");
    }
    let keys = journal_keys(&d);
    assert_eq!(
        keys.len(),
        ITEMS,
        "every item journaled exactly once: {keys:?}"
    );
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), ITEMS);
    let staging: Vec<_> = std::fs::read_dir(d.join(".odelt-batch/staging"))
        .unwrap()
        .collect();
    assert!(staging.is_empty(), "no half-written item left behind");
    let st = odelt(&["batch", "status"], &d);
    assert_success(&st, "status after the rerun");
    eprintln!(
        "kill points: {kills} kills ({progressed} after finished items, {mid_item} inside an item), \
         {finished_early} runs finished before their kill point"
    );
}

/// Forgets everything shard `i`/`n` finished (its journal, its items' folders).
fn reset_shard(d: &Path, i: usize, n: usize) {
    let j = d.join(format!(".odelt-batch/journal/shard-{i:05}-of-{n:05}.jsonl"));
    let text = std::fs::read_to_string(&j).unwrap_or_default();
    for l in text.lines() {
        let v: Json = serde_json::from_str(l).unwrap();
        let _ = std::fs::remove_dir_all(d.join("items").join(v["key"].as_str().unwrap()));
    }
    let _ = std::fs::remove_file(&j);
}
