//! Command-line front end over `odelt_host`.

mod batch;
mod nodes;
mod progress;
mod run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use odelt_host::{HostDirs, PluginSearch, PluginSet};

/// Exit status: generic failure (bad arguments, unreadable or malformed workflow, plugins).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: the workflow failed validation (node_errors JSON follows on stderr).
pub const EXIT_INVALID: u8 = 3;
/// Exit status: a node failed while running.
pub const EXIT_NODE_ERROR: u8 = 4;
/// Exit status: interrupted (Ctrl-C).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Run ComfyUI API-format workflows with odelt node plugins.
#[derive(Debug, Parser)]
#[command(
    name = "odelt",
    version,
    about,
    after_help = "Examples:\n  odelt run examples/workflows/sample.json --output-dir out\n  odelt run wf.json --set 3.seed=42 --set 3.steps=8\n  odelt nodes --plugins target/release/libodelt_plugin.so\n\nPlugins are searched in the directory of the odelt executable, then in ODELT_PLUGIN_PATH\n(colon-separated files or directories), unless --plugins is given.\nExit codes: 0 ok, 1 usage/IO/plugin error, 3 validation failed, 4 node error, 130 interrupted."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow (API-format JSON, or a POST /prompt body with extra_data).
    #[command(
        after_help = "Examples:\n  odelt run wf.json\n  odelt run wf.json --models-dir ~/models --output-dir out --set 3.seed=7 --set '6.text=\"a cat\"'\n  odelt run wf.json --plugins ./plugins --plugins extra/libmy_nodes.so --device cuda:0\n\nVALUE in --set is parsed as JSON when it can be (numbers, true/false, \"quoted\"), otherwise\ntaken as a string. The run prints a short summary on stdout (files written, time, cached nodes),
or the full {prompt_id, outputs} JSON with --json; progress goes to stderr.\nCtrl-C cancels the running node at its next progress step (twice: exit at once)."
    )]
    Run(run::RunArgs),
    /// Print the /object_info JSON of every loaded node.
    #[command(
        after_help = "Examples:\n  odelt nodes\n  odelt nodes --plugins target/release/libodelt_plugin.so | jq 'keys'"
    )]
    Nodes(nodes::NodesArgs),
    /// Serve the ComfyUI HTTP/WebSocket API and the built-in editor.
    #[command(
        after_help = "Examples:\n  odelt serve\n  odelt serve --listen 127.0.0.1:8188 --plugins target/release/libodelt_plugin.so --models-dir ~/models --output-dir out\n\nOpen http://127.0.0.1:8188/ for the editor; ComfyUI clients use the same address."
    )]
    Serve(serve::ServeArgs),
    /// Run a workflow for many items (manifest or sweep), sharded and resumable; status; merge.
    #[command(after_help = batch::AFTER_HELP)]
    Batch(batch::BatchArgs),
}

/// Where plugins come from (shared by subcommands).
#[derive(Debug, Args)]
pub struct PluginArgs {
    /// Plugin library or directory of plugins (repeatable). Replaces the default search.
    #[arg(long = "plugins", value_name = "PATH")]
    plugins: Vec<PathBuf>,
}

impl PluginArgs {
    /// Loads the plugins, described for `host`. Directory-scan warnings are kept in the set;
    /// print them with [`print_warnings`] after the result, so a failure's reason stays the
    /// first line.
    pub fn load(&self, host: HostDirs) -> Result<Arc<PluginSet>, String> {
        let search = PluginSearch::from_env(self.plugins.clone());
        let set = search.load_for(host).map_err(|e| e.to_string())?;
        if set.plugins().is_empty() {
            let looked: Vec<String> = search
                .paths()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            return Err(format!(
                "no plugins found (looked in: {})",
                looked.join(", ")
            ));
        }
        Ok(Arc::new(set))
    }
}

/// Where an executor finds models and writes files, and what it runs on (shared by `run` and `serve`).
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Root directory of model files (checkpoint lists in node inputs come from it).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "models",
        env = "ODELT_MODELS_DIR"
    )]
    pub models_dir: PathBuf,
    /// Where output nodes write files.
    #[arg(long, value_name = "DIR", default_value = "output")]
    pub output_dir: PathBuf,
    /// Where nodes read user inputs and `odelt serve` keeps uploads (/upload/image, /view?type=input).
    /// LoadLatent reads only here: workflow names are relative to this folder (ComfyUI's
    /// `name [output]` reads a file the output nodes wrote); to load a file from elsewhere, point
    /// this flag at its folder.
    #[arg(long, value_name = "DIR", default_value = "input")]
    pub input_dir: PathBuf,
    /// ComfyUI's extra_model_paths.yaml: more folders of checkpoints and VAEs, searched after
    /// --models-dir (its `checkpoints` and `vae` entries; `base_path` and multi-line values as in
    /// ComfyUI).
    #[arg(long, value_name = "FILE", value_parser = parse_extra_model_paths)]
    pub extra_model_paths: Option<odelt_host::dirs::ExtraModelDirs>,
    /// Where preview nodes write temporary files.
    #[arg(long, value_name = "DIR", default_value = "temp")]
    pub temp_dir: PathBuf,
    /// Device for device-bound nodes, e.g. cpu or cuda:0.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Maximum number of nodes running at once (default: number of CPUs).
    #[arg(long)]
    pub workers: Option<usize>,
}

impl ExecArgs {
    /// The executor configuration these flags describe.
    pub fn executor_config(&self) -> odelt_host::ExecutorConfig {
        let mut config = odelt_host::ExecutorConfig {
            device: self.device.clone(),
            output_dir: self.output_dir.clone(),
            temp_dir: self.temp_dir.clone(),
            models_dir: self.models_dir.clone(),
            input_dir: self.input_dir.clone(),
            extra_model_dirs: self.extra_model_paths.clone().unwrap_or_default(),
            ..odelt_host::ExecutorConfig::default()
        };
        if let Some(w) = self.workers {
            config.workers = w.max(1);
        }
        config
    }

    /// Loads the plugins, described for the directories and device of these flags (the same
    /// ones the executor then validates and runs with).
    pub fn load_plugins(&self, plugins: &PluginArgs) -> Result<Arc<PluginSet>, String> {
        plugins.load(self.executor_config().host_dirs())
    }
}

/// Reads `--extra-model-paths FILE` while the command line is parsed, so a bad file is a usage
/// error naming the file.
fn parse_extra_model_paths(file: &str) -> Result<odelt_host::dirs::ExtraModelDirs, String> {
    odelt_host::dirs::ExtraModelDirs::load(std::path::Path::new(file)).map_err(|e| e.to_string())
}

/// Prints the plugin search warnings (skipped libraries) to stderr.
pub fn print_warnings(set: &PluginSet) {
    for w in set.warnings() {
        eprintln!("warning: {w}");
    }
}

/// Prints a one-line reason first, then optional details, and returns the exit code.
pub fn fail(code: u8, reason: &str, details: Option<&str>) -> ExitCode {
    let first = reason.lines().next().unwrap_or("failed");
    eprintln!("error: {first}");
    if let Some(d) = details {
        eprintln!("{d}");
    }
    ExitCode::from(code)
}

/// Dispatches a parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(a) => run::run(a),
        Command::Nodes(a) => nodes::nodes(a),
        Command::Serve(a) => serve::serve(a),
        Command::Batch(a) => batch::batch(a),
    }
}
