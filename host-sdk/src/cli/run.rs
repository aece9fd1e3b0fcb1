//! `odelt run`: validate and run one workflow.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use odelt_host::{CancelToken, Executor, RunError, RunOptions, Workflow};
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
    #[command(flatten)]
    exec: super::ExecArgs,
    /// Override an input: NODE.INPUT=VALUE (repeatable).
    #[arg(long = "set", value_name = "NODE.INPUT=VALUE")]
    set: Vec<String>,
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
