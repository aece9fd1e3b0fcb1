//! `odelt nodes`: print /object_info.

use std::process::ExitCode;

use clap::Args;

use super::{fail, print_warnings, PluginArgs, EXIT_FAILURE};

/// Arguments of `odelt nodes`.
#[derive(Debug, Args)]
pub struct NodesArgs {
    #[command(flatten)]
    plugins: PluginArgs,
    /// Root directory of model files (lists of checkpoints in combo inputs come from it).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "models",
        env = "ODELT_MODELS_DIR"
    )]
    models_dir: std::path::PathBuf,
    /// Print compact JSON instead of pretty.
    #[arg(long)]
    compact: bool,
}

/// Runs `odelt nodes`.
pub fn nodes(a: NodesArgs) -> ExitCode {
    let host = odelt_host::HostDirs {
        models_dir: a.models_dir.clone(),
        ..odelt_host::HostDirs::default()
    };
    let plugins = match a.plugins.load(host) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_FAILURE, &e, None),
    };
    let info = plugins.object_info();
    let text = if a.compact {
        serde_json::to_string(&info)
    } else {
        serde_json::to_string_pretty(&info)
    };
    match text {
        Ok(t) => {
            println!("{t}");
            print_warnings(&plugins);
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_FAILURE, &format!("serializing node info: {e}"), None),
    }
}
