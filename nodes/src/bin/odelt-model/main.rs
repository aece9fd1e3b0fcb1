//! `odelt-model`: train, evaluate and render the project's small pixel-space ODE_t(ODE_l) models.
//!
//! One module per subcommand (`train`, `eval`, `score`, `grid`, `report`, `convert`, `inspect`, `classifier-train`); add
//! new subcommands the same way.

mod cmd_classifier;
mod cmd_convert;
mod cmd_eval;
mod cmd_grid;
mod cmd_report;
mod cmd_score;
mod cmd_train;
mod common;
mod model_io;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "odelt-model",
    version,
    about = "Train, evaluate and sample the ODE_t(ODE_l) models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a class-conditional model on Fashion-MNIST (or a synthetic set) with the ODE_t(ODE_l) objective.
    Train(cmd_train::Args),
    /// Sweep steps T and lengths l: FD in classifier feature space, class accuracy, latency; table + plot.
    Eval(cmd_eval::Args),
    /// Render a labelled PNG grid of class-conditional samples.
    Grid(cmd_grid::Args),
    /// Merge the JSON outputs of several `eval` runs into one table and plot.
    Report(cmd_report::Args),
    /// FD and class accuracy of images made elsewhere (e.g. `odelt batch merge --npz`), as `eval` scores its own.
    Score(cmd_score::Args),
    /// Convert a checkpoint (e.g. an official .pkl) to the project's safetensors format.
    Convert(cmd_convert::ConvertArgs),
    /// Print a checkpoint's format, configuration and lengths.
    Inspect(cmd_convert::InspectArgs),
    /// Train the small CNN classifier used for FD features and sample accuracy.
    ClassifierTrain(cmd_classifier::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Train(a) => cmd_train::run(a),
        Command::Eval(a) => cmd_eval::run(a),
        Command::Grid(a) => cmd_grid::run(a),
        Command::Report(a) => cmd_report::run(a),
        Command::Score(a) => cmd_score::run(a),
        Command::ClassifierTrain(a) => cmd_classifier::run(a),
        Command::Convert(a) => cmd_convert::convert(a),
        Command::Inspect(a) => cmd_convert::inspect(a),
    }
}
