//! The `odelt` command: run ComfyUI API-format workflows with node plugins, list nodes.
//! Thin: argument parsing here, work in `cli/` and the `odelt_host` library.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    cli::main(args)
}
