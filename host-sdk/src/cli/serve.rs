//! `odelt serve`: the ComfyUI-compatible server with the built-in editor.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use odelt_host::serve::{start, ServeConfig};

use super::{fail, PluginArgs, EXIT_FAILURE};

/// Arguments of `odelt serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback exposes the server to the network.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8188")]
    listen: SocketAddr,
    #[command(flatten)]
    plugins: PluginArgs,
    #[command(flatten)]
    exec: super::ExecArgs,
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
    let plugins = match a.exec.load_plugins(&a.plugins) {
        Ok(p) => p,
        Err(e) => return fail(EXIT_FAILURE, &e, None),
    };
    for w in plugins.warnings() {
        eprintln!("warning: {w}");
    }
    let executor = a.exec.executor_config();
    let cfg = ServeConfig {
        listen: a.listen,
        executor,
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
