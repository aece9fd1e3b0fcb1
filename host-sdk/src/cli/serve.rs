//! `odelt serve`: the ComfyUI-compatible server with the built-in editor.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use odelt_host::serve::{start, ServeConfig};
use odelt_host::ExecutorConfig;

use super::{fail, PluginArgs, EXIT_FAILURE};

/// Arguments of `odelt serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback exposes the server to the network.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8188")]
    listen: SocketAddr,
    #[command(flatten)]
    plugins: PluginArgs,
    /// Root directory of model files (GET /models lists its folders).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "models",
        env = "ODELT_MODELS_DIR"
    )]
    models_dir: PathBuf,
    /// Where output nodes write (served by /view?type=output).
    #[arg(long, value_name = "DIR", default_value = "output")]
    output_dir: PathBuf,
    /// Where uploads go (/upload/image, /view?type=input).
    #[arg(long, value_name = "DIR", default_value = "input")]
    input_dir: PathBuf,
    /// Where preview nodes write temporary files (/view?type=temp).
    #[arg(long, value_name = "DIR", default_value = "temp")]
    temp_dir: PathBuf,
    /// Device for device-bound nodes, e.g. cpu or cuda:0.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Maximum number of nodes running at once (default: number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Most prompts waiting; more are refused with 503 until the queue drains.
    #[arg(long, default_value_t = 1000)]
    max_queue: usize,
    /// Largest upload in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 32)]
    max_upload_mb: usize,
    /// Serve a stock ComfyUI frontend build from DIR at / (the built-in editor moves to
    /// /odelt/editor).
    #[arg(long, value_name = "DIR")]
    frontend_root: Option<PathBuf>,
}

/// Runs `odelt serve` until the process is stopped.
pub fn serve(a: ServeArgs) -> ExitCode {
    super::export_models_dir(&a.models_dir);
    let plugins = match a.plugins.load() {
        Ok(p) => p,
        Err(e) => return fail(EXIT_FAILURE, &e, None),
    };
    for w in plugins.warnings() {
        eprintln!("warning: {w}");
    }
    let mut executor = ExecutorConfig {
        device: a.device.clone(),
        output_dir: a.output_dir.clone(),
        temp_dir: a.temp_dir.clone(),
        models_dir: a.models_dir.clone(),
        ..ExecutorConfig::default()
    };
    if let Some(w) = a.workers {
        executor.workers = w.max(1);
    }
    let cfg = ServeConfig {
        listen: a.listen,
        executor,
        input_dir: a.input_dir.clone(),
        max_queue: a.max_queue.max(1),
        max_upload_bytes: a.max_upload_mb.max(1) << 20,
        frontend_root: a.frontend_root.clone(),
        ..ServeConfig::default()
    };
    if !a.listen.ip().is_loopback() {
        eprintln!(
            "warning: listening on {} makes the server reachable from other machines; it has no authentication",
            a.listen
        );
    }
    let nodes: usize = plugins.plugins().iter().map(|p| p.nodes().len()).sum();
    let server = match start(plugins, cfg) {
        Ok(s) => s,
        Err(e) => return fail(EXIT_FAILURE, &e.to_string(), None),
    };
    println!(
        "odelt serve: {nodes} nodes; editor and ComfyUI API on http://{}/ (Ctrl-C to stop)",
        server.addr()
    );
    let _ = ctrlc::set_handler(|| {
        eprintln!("odelt serve: stopping");
        std::process::exit(0);
    });
    server.wait();
    ExitCode::SUCCESS
}
