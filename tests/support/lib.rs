//! Shared helpers for the end-to-end tests: where the built artifacts are, a temporary models/output tree with
//! small checkpoints made from the golden parameters (the project's safetensors format and the official pickle
//! layout), a tiny VAE and a tiny pixel-space "fashion" model, and a host executor with the plugin loaded.
//!
//! The tests build nothing: they expect `cargo build --release --workspace` to have produced
//! `target/release/libodelt_plugin.so` (and `odelt`) in the target directory of the running tests
//! ([`release_dir`], shared with the host's tests: tests/fixtures/artifacts.rs).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{DType, Tensor};
use odelt_host::{
    CancelToken, Event, Executor, ExecutorConfig, PluginSet, RunError, RunOptions, RunOutcome,
    Workflow,
};
use odelt_nodes::checkpoint::safetensors_format;
use odelt_nodes::DitConfig;
use serde_json::Value as Json;

/// Where the build put things (shared with the host's test helpers), and the test plugins of tests/fixtures.
#[path = "../fixtures/artifacts.rs"]
pub mod artifacts;

/// The repository root; `<target>/release` of the running tests (`$CARGO_TARGET_DIR`, relative or not, or
/// `--target` included).
pub use artifacts::{release_dir, repo_root};

/// A built artifact in the release directory, or a panic saying how to build it.
pub fn artifact(file: &str) -> PathBuf {
    let p = release_dir().join(file);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first with `cargo build --release --workspace`",
        p.display()
    );
    p
}

/// The plugin library.
pub fn plugin_path() -> PathBuf {
    artifact(&format!(
        "{}odelt_plugin{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

/// The `odelt` binary.
pub fn odelt_bin() -> PathBuf {
    artifact(&format!("odelt{}", std::env::consts::EXE_SUFFIX))
}

/// Golden data copied from ../shared/golden (nodes/tests/data).
pub fn golden_dir() -> PathBuf {
    repo_root().join("nodes/tests/data")
}

/// The golden npz.
pub struct Golden(candle_core::npy::NpzTensors);

impl Golden {
    pub fn open() -> Golden {
        Golden(
            candle_core::npy::NpzTensors::new(golden_dir().join("tiny.npz"))
                .expect("open nodes/tests/data/tiny.npz"),
        )
    }

    pub fn get(&self, name: &str) -> Tensor {
        self.0
            .get(name)
            .unwrap_or_else(|e| panic!("npz read {name}: {e}"))
            .unwrap_or_else(|| panic!("npz has no {name}"))
    }

    /// Every `param/<name>` entry.
    pub fn params(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .0
            .names()
            .iter()
            .filter_map(|n| {
                n.strip_prefix("param/")
                    .map(|p| (p.to_string(), self.get(n)))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// `in/labels` as integers.
    pub fn labels(&self) -> Vec<i64> {
        self.get("in/labels")
            .to_dtype(DType::I64)
            .and_then(|t| t.to_vec1::<i64>())
            .expect("in/labels is a vector")
    }
}

/// The configuration of the tiny pixel-space stand-in for the Fashion-MNIST model (28x28x1, 10 classes, lengths
/// 2, 4, 6 like the trained model).
pub fn fashion_like_config() -> DitConfig {
    DitConfig {
        input_size: 28,
        in_channels: 1,
        patch_size: 4,
        hidden_size: 32,
        depth: 6,
        num_heads: 2,
        mlp_hidden: 64,
        num_classes: 10,
        depth_group: 2,
        depth_min: 2,
        length_embedding: true,
        latent_scale: 1.0,
    }
}

/// Deterministic, bounded parameters for `cfg` (`odelt_nodes::params::random_params`, seed 0).
pub fn synthetic_params(cfg: &DitConfig) -> Vec<(String, Tensor)> {
    odelt_nodes::params::random_params(cfg, 0).expect("random parameters")
}

/// The tiny VAE configuration used by the tests (2x upsampling, 4 latent channels).
pub fn tiny_vae_config() -> odelt_nodes::vae::VaeConfig {
    odelt_nodes::vae::VaeConfig::tiny()
}

/// Names of the files in the test models directory.
pub mod names {
    /// Golden parameters in the project's safetensors format.
    pub const GOLDEN_ST: &str = "golden-tiny.safetensors";
    /// The golden parameters as an official pickle (no stored configuration).
    pub const GOLDEN_PKL: &str = "checkpoints/tiny.pkl";
    /// The pixel-space stand-in for the trained model (the name the example workflows use).
    pub const FASHION: &str = "fashion-dit.safetensors";
    /// A tiny random VAE (4 latent channels) with its sidecar configuration.
    pub const VAE: &str = "vae/tiny-vae.safetensors";
    /// A VAE with 16 latent channels (mismatching every model here).
    pub const VAE16: &str = "vae/wide-vae.safetensors";
}

/// The test tree: models, output and temp directories.
pub struct Fixture {
    pub root: PathBuf,
    pub models: PathBuf,
    pub output: PathBuf,
    pub temp: PathBuf,
    pub plugins: Arc<PluginSet>,
}

fn write_vae(path: &Path, cfg: &odelt_nodes::vae::VaeConfig, seed: u64) {
    odelt_nodes::vae::write_random_vae(path, cfg, seed).expect("write random VAE");
    std::fs::write(
        path.with_extension("json"),
        serde_json::to_string_pretty(cfg).expect("VAE config to JSON"),
    )
    .expect("write VAE sidecar");
}

/// Removes the trees earlier test processes left behind (their process is gone).
fn remove_stale_trees() {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("odelt-e2e-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new("/proc").is_dir() && Path::new(&format!("/proc/{pid}")).exists();
        if pid != std::process::id() && Path::new("/proc").is_dir() && !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn build_fixture() -> Fixture {
    remove_stale_trees();
    let root = std::env::temp_dir().join(format!("odelt-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let models = root.join("models");
    let output = root.join("output");
    let temp = root.join("temp");
    for d in [
        &models,
        &output,
        &temp,
        &models.join("checkpoints"),
        &models.join("vae"),
    ] {
        std::fs::create_dir_all(d).expect("create test dirs");
    }
    let g = Golden::open();
    safetensors_format::save(
        &models.join(names::GOLDEN_ST),
        &DitConfig::golden_tiny(),
        &g.params(),
        &[],
    )
    .expect("save golden safetensors");
    std::fs::copy(
        golden_dir().join("tiny.pkl"),
        models.join(names::GOLDEN_PKL),
    )
    .expect("copy tiny.pkl");
    let fcfg = fashion_like_config();
    safetensors_format::save(
        &models.join(names::FASHION),
        &fcfg,
        &synthetic_params(&fcfg),
        &[],
    )
    .expect("save fashion-like checkpoint");
    write_vae(&models.join(names::VAE), &tiny_vae_config(), 3);
    let wide = odelt_nodes::vae::VaeConfig {
        latent_channels: 16,
        ..tiny_vae_config()
    };
    write_vae(&models.join(names::VAE16), &wide, 4);

    // The plugin lists checkpoint choices from the host's models directory (and validation reads it).
    let mut set = PluginSet::for_host(odelt_host::HostDirs {
        models_dir: models.clone(),
        output_dir: output.clone(),
        temp_dir: temp.clone(),
        ..odelt_host::HostDirs::default()
    });
    set.load_file(&plugin_path()).expect("load the plugin");
    Fixture {
        root,
        models,
        output,
        temp,
        plugins: Arc::new(set),
    }
}

/// The process-wide fixture (the plugin is loaded once per test binary).
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build_fixture)
}

impl Fixture {
    /// An executor over the fixture's directories (a fresh cache each time).
    pub fn executor(&self) -> Executor {
        Executor::new(
            self.plugins.clone(),
            ExecutorConfig {
                workers: 2,
                device: "cpu".into(),
                output_dir: self.output.clone(),
                temp_dir: self.temp.clone(),
                models_dir: self.models.clone(),
                cache_runs: 1,
                ..ExecutorConfig::default()
            },
        )
    }

    /// A fresh output sub-folder name for one test (prefixes under it never collide).
    pub fn out_dir(&self, test: &str) -> PathBuf {
        self.output.join(test)
    }
}

/// Loads an example workflow from examples/workflows.
pub fn example(name: &str) -> Workflow {
    Workflow::load(&repo_root().join("examples/workflows").join(name))
        .unwrap_or_else(|e| panic!("example workflow {name}: {e}"))
}

/// Events of one run.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<Event>>);

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// Runs a workflow, recording its events.
pub fn run(
    exec: &Executor,
    wf: &Workflow,
    extra_pnginfo: Option<Json>,
) -> (Result<RunOutcome, RunError>, Vec<Event>) {
    let rec = Recorder::default();
    let sink = |e: &Event| {
        if let Ok(mut v) = rec.0.lock() {
            v.push(e.clone());
        }
    };
    let prompt = wf.to_prompt().expect("workflow parses");
    let opts = RunOptions {
        extra_pnginfo,
        ..RunOptions::default()
    };
    let r = exec.run(&prompt, &opts, &sink, &CancelToken::new());
    (r, rec.events())
}

/// Runs a workflow that must succeed.
pub fn run_ok(exec: &Executor, wf: &Workflow) -> RunOutcome {
    match run(exec, wf, None).0 {
        Ok(o) => o,
        Err(RunError::Validation(v)) => panic!(
            "validation failed: {}",
            serde_json::Value::Object(v.node_errors.clone())
        ),
        Err(e) => panic!("run failed: {e}"),
    }
}

/// The f32 tensor output `index` of node `id`: (shape, values).
pub fn tensor_output(o: &RunOutcome, id: &str, index: usize) -> (Vec<usize>, Vec<f32>) {
    let vals = o
        .values(id)
        .unwrap_or_else(|| panic!("node {id} has no recorded output"));
    match &vals[index] {
        odelt_host::odelt_contract::Value::Tensor(t) => {
            (t.dims(), t.f32_values().expect("f32 tensor").into_owned())
        }
        other => panic!(
            "node {id} output {index} is {}, not a tensor",
            other.kind_name()
        ),
    }
}

/// The files a SaveImage-like node reported: (filename, subfolder, type).
pub fn ui_images(o: &RunOutcome, id: &str, key: &str) -> Vec<(String, String, String)> {
    let ui = o
        .output(id)
        .and_then(|r| r.ui())
        .unwrap_or_else(|| panic!("node {id} returned no UI payload"));
    ui[key]
        .as_array()
        .unwrap_or_else(|| panic!("UI of node {id} has no `{key}` list: {ui}"))
        .iter()
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap_or_default().to_string();
            (s("filename"), s("subfolder"), s("type"))
        })
        .collect()
}

/// Width, height and tEXt chunks of a PNG file.
pub fn png_info(path: &Path) -> (u32, u32, Vec<(String, String)>) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let r = png::Decoder::new(std::io::BufReader::new(f))
        .read_info()
        .unwrap_or_else(|e| panic!("decode {}: {e}", path.display()));
    let info = r.info();
    let texts = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    (info.width, info.height, texts)
}

/// Relative L2 error ‖a − b‖ / ‖b‖.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "compared arrays differ in length");
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// The loader inputs for a checkpoint with every setting automatic.
pub fn loader_inputs(ckpt: &str) -> Vec<(&'static str, Json)> {
    vec![
        ("ckpt_name", ckpt.into()),
        ("weights", "params".into()),
        ("preset", "auto".into()),
        ("num_heads", 0.into()),
        ("depth_group", 0.into()),
        ("depth_min", 0.into()),
        ("input_size", 0.into()),
        ("latent_scale", 0.0.into()),
        ("precision", "fp32".into()),
    ]
}

/// The loader inputs for the golden pickle (which records no head count, length grid or input size).
pub fn pickle_loader_inputs() -> Vec<(&'static str, Json)> {
    vec![
        ("ckpt_name", names::GOLDEN_PKL.into()),
        ("weights", "params".into()),
        ("preset", "custom".into()),
        ("num_heads", 4.into()),
        ("depth_group", 2.into()),
        ("depth_min", 2.into()),
        ("input_size", 8.into()),
        ("latent_scale", 1.0.into()),
        ("precision", "fp32".into()),
    ]
}

/// The sampler inputs (model and latent linked by the caller).
pub fn sampler_inputs(
    seed: u64,
    steps: i64,
    denoise: f64,
    add_noise: bool,
) -> Vec<(&'static str, Json)> {
    vec![
        ("seed", seed.into()),
        ("steps", steps.into()),
        ("solver", "euler".into()),
        ("tolerance", 0.001.into()),
        ("cfg", 1.0.into()),
        ("class_label", (-1).into()),
        ("denoise", denoise.into()),
        ("add_noise", add_noise.into()),
    ]
}

/// Asserts a child process succeeded, showing its status and output otherwise.
pub fn assert_success(o: &std::process::Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
