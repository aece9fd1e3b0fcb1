//! `odelt run`: validate and run one workflow.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use odelt_host::{CancelToken, Executor, ExecutorConfig, RunError, RunOptions, Workflow};
use serde_json::json;

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
    /// Root directory of model files.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "models",
        env = "ODELT_MODELS_DIR"
    )]
    models_dir: PathBuf,
    /// Where output nodes write files.
    #[arg(long, value_name = "DIR", default_value = "output")]
    output_dir: PathBuf,
    /// Where preview nodes write temporary files.
    #[arg(long, value_name = "DIR", default_value = "temp")]
    temp_dir: PathBuf,
    /// Override an input: NODE.INPUT=VALUE (repeatable).
    #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
    set: Vec<String>,
    /// Device for device-bound nodes, e.g. cpu or cuda:0.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Maximum number of nodes running at once (default: number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
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
    let plugins = match {
        super::export_models_dir(&a.models_dir);
        a.plugins.load()
    } {
        Ok(p) => p,
        Err(e) => return fail(EXIT_FAILURE, &e, None),
    };
    let mut config = ExecutorConfig {
        device: a.device.clone(),
        output_dir: a.output_dir.clone(),
        temp_dir: a.temp_dir.clone(),
        models_dir: a.models_dir.clone(),
        ..ExecutorConfig::default()
    };
    if let Some(w) = a.workers {
        config.workers = w.max(1);
    }
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
    let code = report(result);
    print_warnings(&plugins);
    code
}

fn report(result: Result<odelt_host::RunOutcome, odelt_host::BatchRunError>) -> ExitCode {
    match result {
        Ok(outcome) => {
            let report = json!({
                "prompt_id": outcome.prompt_id,
                "outputs": outcome.ui_outputs(),
                "executed": outcome.executed,
                "cached": outcome.cached,
                "elapsed_ms": outcome.elapsed.as_millis() as u64,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
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
