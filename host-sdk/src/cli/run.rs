//! `odelt run`: validate and run one workflow.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use odelt_host::{CancelToken, Executor, RunError, RunOptions, Workflow};
use serde_json::{json, Value as Json};

use super::progress::ProgressDisplay;
use super::{
    fail, print_warnings, PluginArgs, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_NODE_ERROR,
};

/// Arguments of `odelt run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workflow: ComfyUI API-format JSON (or a POST /prompt body).
    #[arg(value_name = "WORKFLOW.json")]
    workflow: PathBuf,
    #[command(flatten)]
    plugins: PluginArgs,
    #[command(flatten)]
    exec: super::ExecArgs,
    /// Override an input: NODE.INPUT=VALUE (repeatable).
    #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
    set: Vec<String>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Print the full result as JSON ({prompt_id, outputs, executed, cached, elapsed_ms})
    /// instead of the short summary.
    #[arg(long)]
    json: bool,
}

/// Runs `odelt run`.
pub fn run(a: RunArgs) -> ExitCode {
    let mut wf = match Workflow::load(&a.workflow) {
        Ok(w) => w,
        Err(e) => {
            return fail(
                EXIT_FAILURE,
                &format!("cannot use workflow {}: {e}", a.workflow.display()),
                None,
            )
        }
    };
    for s in &a.set {
        if let Err(e) = wf.apply_override(s) {
            return fail(EXIT_FAILURE, &format!("--set {s}: {e}"), None);
        }
    }
    let plugins = match a.exec.load_plugins(&a.plugins) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_FAILURE, &e, None),
    };
    let config = a.exec.executor_config();
    let exec = Executor::new(plugins.clone(), config);

    let cancel = CancelToken::new();
    let handler_token = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        if handler_token.is_cancelled() {
            eprintln!("error: interrupted again, exiting");
            std::process::exit(EXIT_INTERRUPTED as i32);
        }
        handler_token.cancel();
    });

    let display = ProgressDisplay::new(a.quiet);
    let result = wf.run(&exec, &RunOptions::default(), &display, &cancel);
    display.finish();
    let dirs = Dirs {
        output: a.exec.output_dir.clone(),
        temp: a.exec.temp_dir.clone(),
        input: a.exec.input_dir.clone(),
    };
    let code = report(result, a.json, &dirs);
    print_warnings(&plugins);
    code
}

/// Where files of each `type` of a UI output live.
struct Dirs {
    output: PathBuf,
    temp: PathBuf,
    input: PathBuf,
}

fn report(
    result: Result<odelt_host::RunOutcome, odelt_host::BatchRunError>,
    as_json: bool,
    dirs: &Dirs,
) -> ExitCode {
    match result {
        Ok(outcome) => {
            let ui = outcome.ui_outputs();
            if as_json {
                let report = json!({
                    "prompt_id": outcome.prompt_id,
                    "outputs": ui,
                    "executed": outcome.executed,
                    "cached": outcome.cached,
                    "elapsed_ms": outcome.elapsed.as_millis() as u64,
                });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", summary(&outcome, &ui, dirs));
            }
            ExitCode::SUCCESS
        }
        Err(odelt_host::BatchRunError::Prompt(e)) => {
            fail(EXIT_FAILURE, &format!("invalid workflow: {e}"), None)
        }
        Err(odelt_host::BatchRunError::Override(e)) => fail(EXIT_FAILURE, &e.to_string(), None),
        Err(odelt_host::BatchRunError::Run(e)) => match &e {
            RunError::Validation(v) => fail(
                EXIT_INVALID,
                &format!("workflow failed validation: {}", v.summary()),
                Some(&serde_json::to_string_pretty(&v.to_json()).unwrap_or_default()),
            ),
            RunError::Node { .. } => fail(EXIT_NODE_ERROR, &e.to_string(), None),
            RunError::Interrupted { .. } => fail(EXIT_INTERRUPTED, &e.to_string(), None),
        },
    }
}

/// The human summary: the files written, by output node and folder; other outputs (text) by node; then how
/// many nodes ran, how long it took and which nodes came from the cache.
fn summary(outcome: &odelt_host::RunOutcome, ui: &Json, dirs: &Dirs) -> String {
    // (output node, folder) -> file names, in order.
    let mut folders: Vec<(&str, PathBuf, Vec<String>)> = Vec::new();
    let mut other = Vec::new();
    for (node, out) in ui.as_object().into_iter().flatten() {
        for (key, value) in out.as_object().into_iter().flatten() {
            let files = value.as_array().filter(|items| {
                !items.is_empty() && items.iter().all(|f| f.get("filename").is_some())
            });
            if let Some(files) = files {
                for f in files {
                    let dir = file_dir(f, dirs);
                    let name = f["filename"].as_str().unwrap_or("?").to_string();
                    match folders.iter_mut().find(|(n, d, _)| n == node && *d == dir) {
                        Some((_, _, names)) => names.push(name),
                        None => folders.push((node, dir, vec![name])),
                    }
                }
            } else {
                other.push(format!("node {node} {key}: {}", short_value(value)));
            }
        }
    }
    let mut s = String::new();
    for (_, dir, names) in &folders {
        let what = if names.iter().all(|n| is_image(n)) {
            "image"
        } else {
            "file"
        };
        let plural = if names.len() == 1 { "" } else { "s" };
        let list = if names.len() <= 3 {
            names.join(", ")
        } else {
            format!("{} ... {}", names[0], names[names.len() - 1])
        };
        s += &format!(
            "{} {what}{plural} in {}{} ({list})\n",
            names.len(),
            dir.display(),
            std::path::MAIN_SEPARATOR
        );
    }
    for line in &other {
        s += line;
        s.push('\n');
    }
    if folders.is_empty() && other.is_empty() {
        s += "no outputs\n";
    }
    let ran = outcome.executed.len();
    s += &format!(
        "{ran} node{} ran in {}",
        if ran == 1 { "" } else { "s" },
        seconds(outcome.elapsed)
    );
    if outcome.cached.is_empty() {
        s += ", none cached\n";
    } else {
        s += &format!(", cached: {}\n", outcome.cached.join(", "));
    }
    s
}

fn file_dir(f: &Json, dirs: &Dirs) -> PathBuf {
    let base = match f["type"].as_str().unwrap_or("output") {
        "temp" => &dirs.temp,
        "input" => &dirs.input,
        _ => &dirs.output,
    };
    match f["subfolder"].as_str().filter(|s| !s.is_empty()) {
        Some(sub) => base.join(sub),
        None => base.clone(),
    }
}

fn is_image(name: &str) -> bool {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    matches!(ext.as_str(), "png" | "jpg" | "jpeg" | "webp" | "gif")
}

/// One line at most: strings as they are, a list of strings joined, else compact JSON.
fn short_value(v: &Json) -> String {
    let text = match v {
        Json::String(s) => s.clone(),
        Json::Array(items) if items.iter().all(Json::is_string) => items
            .iter()
            .filter_map(Json::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ => v.to_string(),
    };
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() > 100 {
        format!("{}...", one_line.chars().take(97).collect::<String>())
    } else {
        one_line
    }
}

fn seconds(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.2} s")
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m {:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}
