//! `odelt serve`: the ComfyUI-compatible server with the built-in editor.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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
    /// Keep the queue and history in DIR (the database file serve.redb), so that they survive
    /// a restart or a crash [default: .odelt-state beside the output directory].
    #[arg(long, value_name = "DIR", conflicts_with = "no_persist")]
    state_dir: Option<PathBuf>,
    /// Keep the queue and history in memory only: a restart loses them.
    #[arg(long)]
    no_persist: bool,
    /// Most history entries kept (the oldest go first; on disk too).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_history: usize,
    /// On SIGTERM or Ctrl-C, how long the running prompt may take to finish before it is
    /// cancelled and kept queued for the next start (a second signal does that at once).
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    shutdown_grace: f64,
}

/// `.odelt-state` beside the output directory (in the working directory for a bare name).
pub fn default_state_dir(output_dir: &Path) -> PathBuf {
    output_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(".odelt-state")
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                eprintln!("warning: cannot watch for SIGTERM ({e}); Ctrl-C still stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
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
        max_history: a.max_history.max(1),
        state_dir: if a.no_persist {
            None
        } else {
            Some(
                a.state_dir
                    .clone()
                    .unwrap_or_else(|| default_state_dir(&a.exec.output_dir)),
            )
        },
        ..ServeConfig::default()
    };
    let grace = match Duration::try_from_secs_f64(a.shutdown_grace) {
        Ok(g) => g,
        Err(_) => {
            return fail(
                EXIT_FAILURE,
                &format!(
                    "--shutdown-grace must be a number of seconds, 0 or more; got {}",
                    a.shutdown_grace
                ),
                None,
            )
        }
    };
    let signals = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                EXIT_FAILURE,
                &format!("cannot watch for stop signals: {e}"),
                None,
            )
        }
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
    signals.block_on(stop_signal());
    eprintln!(
        "odelt serve: stopping; the running prompt has {:.0} s to finish (stop again to keep it queued now)",
        grace.as_secs_f64()
    );
    let stopper = server.stopper();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let stopping = std::thread::spawn(move || {
        let requeued = server.shutdown(grace);
        let _ = done_tx.send(());
        requeued
    });
    signals.block_on(async {
        tokio::select! {
            _ = done_rx => {}
            _ = stop_signal() => stopper.requeue_now(),
        }
    });
    match stopping.join() {
        Ok(Some(id)) => eprintln!("odelt serve: prompt {id} stays queued for the next start"),
        Ok(None) => {}
        Err(_) => return fail(EXIT_FAILURE, "the server failed while stopping", None),
    }
    eprintln!("odelt serve: stopped");
    ExitCode::SUCCESS
}
