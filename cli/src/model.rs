//! `sextant model …`: building the learned descriptor model.
//!
//! `sextant model build [--config FILE] [--seed N] --out DIR` trains the int8 descriptor model
//! from the photos named in the configuration (TOML; defaults to the shipped model's settings)
//! and writes `model.onnx`, `manifest.json` and a model card into DIR. The same photos,
//! configuration and seed give byte-identical files.

use std::path::PathBuf;

use anyhow::Context;
use sextant_backend::model::{BuildConfig, build};

/// Arguments of `sextant model`.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ModelCommand {
    /// Train, quantise, evaluate and export the descriptor model (reproducible).
    Build {
        /// TOML build configuration (missing keys take the defaults of the shipped model).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seed of every random choice in the build.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output folder (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs `sextant model …`.
pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    match args.command {
        ModelCommand::Build { config, seed, out } => {
            let cfg = match &config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    BuildConfig::from_toml(&text)
                        .with_context(|| format!("parsing {}", path.display()))?
                }
                None => BuildConfig::default(),
            };
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_message("building descriptor model (patches, fit, quantise, evaluate)");
            spinner.enable_steady_tick(std::time::Duration::from_millis(200));
            let built = build(&cfg, seed);
            spinner.finish_and_clear();
            let built = built.context("model build failed")?;
            built
                .write(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            let m = &built.manifest;
            let e = &m.evaluation;
            println!(
                "wrote {} ({} bytes, sha256 {})",
                out.join("model.onnx").display(),
                m.size,
                m.sha256
            );
            println!(
                "held-out ({} pairs): model FPR95 {:.4} NN-acc {:.4} | SIFT FPR95 {:.4} NN-acc {:.4}",
                e.heldout_pairs,
                e.model.fpr95,
                e.model.nn_accuracy,
                e.sift.fpr95,
                e.sift.nn_accuracy
            );
            if let Some(c) = e.tract_min_cosine {
                println!("tract vs runtime kernels: min cosine {c:.6}");
            }
            Ok(())
        }
    }
}
