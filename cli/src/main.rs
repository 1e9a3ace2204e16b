//! `sextant`: the command-line face of Sextant — the demo, the scene simulator, and (as they land)
//! map building, localisation, pose solving, evaluation, models, the backend and the agent.
//!
//! Raw flags are parsed by clap into the `*Args` structs of each subcommand module, which turn them
//! into validated configurations before any work starts. Errors are reported with `anyhow` context
//! and a non-zero exit status.

use clap::{Parser, Subcommand};

mod agent;
mod backend;
mod demo;
mod eval;
mod eval_features;
mod eval_localize;
mod features;
mod localize;
mod map;
mod model;
mod pnp;
mod report;
mod scene;

/// Sextant: on-device visual positioning, with the machinery around it.
#[derive(Debug, Parser)]
#[command(name = "sextant", version, about, long_about = None)]
struct Cli {
    /// Log verbosity, as a tracing filter (e.g. `info`, `debug`, `sextant_sim=trace`).
    #[arg(long, global = true, default_value = "warn", env = "SEXTANT_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Solve absolute-pose problem files (pnp-problem/1) and write result files.
    Pnp(pnp::PnpArgs),
    /// Evaluations with ground truth (`eval pnp`).
    Eval(eval::EvalArgs),
    /// Keypoints, descriptors and matches of images as JSON files (`features extract|match`).
    Features(features::FeaturesArgs),
    /// Build maps from mapping sessions, inspect and cut them (`map build|info|cut`).
    Map(map::MapArgs),
    /// Localise a session's frames against a map and write the results file.
    Localize(localize::LocalizeArgs),
    /// Render simulator sessions from textured scenes (`scene render|check|list`).
    Scene(scene::SceneArgs),
    /// Render a sample scene into ./sextant-demo and report (no input files needed).
    Demo(demo::DemoArgs),
    /// The learned descriptor model (`model build`).
    Model(model::ModelArgs),
    /// Fleet PKI and the model release key (`backend ca init`, `issue-device`, `keygen`, …).
    Backend(backend::BackendArgs),
    /// A simulated device: frame path, telemetry queue and sync agent (`agent run`).
    Agent(agent::AgentArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    match run(cli.command) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Pnp(args) => pnp::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Features(args) => features::run(args),
        Command::Scene(args) => scene::run(args),
        Command::Map(args) => map::run(args),
        Command::Localize(args) => localize::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Model(args) => model::run(args),
        Command::Backend(args) => backend::run(args),
        Command::Agent(args) => agent::run(args),
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
