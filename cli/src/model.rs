//! `sextant model …`: building the learned descriptor model.
//!
//! `sextant model build [--config FILE] [--seed N] --out DIR` trains the int8 descriptor model
//! from the photos named in the configuration (TOML; defaults to the shipped model's settings)
//! and writes `model.onnx`, `manifest.json` and a model card into DIR. The same photos,
//! configuration and seed give byte-identical files.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// Publish a model file to the registry: blob + metadata signed by the release key.
    Publish(PublishArgs),
}

/// Flags of `sextant model publish`.
#[derive(Debug, clap::Args)]
struct PublishArgs {
    /// The model file (ONNX).
    #[arg(long)]
    model: PathBuf,
    /// Its manifest (manifest.json from `model build`); its size and sha256 must match the file.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Release number (≥ 1, never reused for other bytes).
    #[arg(long)]
    version: u64,
    /// The release key (release.key.pk8 from `sextant backend keygen`).
    #[arg(long)]
    release_key: PathBuf,
    /// Backend data directory (default: $SEXTANT_DATA_DIR, else $XDG_DATA_HOME/sextant, else
    /// ~/.local/share/sextant).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Model family label.
    #[arg(long, default_value = "descriptor")]
    family: String,
    /// Rollback floor devices adopt after installing it (default: the version itself, so no
    /// device that ran it can be sent back to an older one).
    #[arg(long)]
    floor: Option<u64>,
    /// Days until the signed metadata expires (devices refuse it afterwards).
    #[arg(long, default_value_t = 30.0)]
    expires_in_days: f64,
    /// Also make it the fleet default assignment.
    #[arg(long)]
    assign_all: bool,
}

fn publish(a: PublishArgs) -> anyhow::Result<()> {
    use sextant_backend::{pki, registry, store};
    let bytes =
        std::fs::read(&a.model).with_context(|| format!("reading {}", a.model.display()))?;
    let key = pki::ReleaseKey::load(&a.release_key)
        .with_context(|| format!("loading the release key {}", a.release_key.display()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    anyhow::ensure!(
        a.expires_in_days.is_finite(),
        "--expires-in-days must be a number"
    );
    let expires = (now as f64 + a.expires_in_days * 86_400.0).max(0.0) as u64;
    let signed = registry::sign_metadata(
        &key,
        &registry::PublishRequest {
            bytes: &bytes,
            family: &a.family,
            version: a.version,
            floor: a.floor.unwrap_or(a.version),
            issued_at_s: now.min(expires.saturating_sub(1)),
            expires_at_s: expires,
        },
    )
    .with_context(|| format!("signing model version {}", a.version))?;
    let sha: String = signed
        .metadata
        .sha256
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Some(m) = &a.manifest {
        let text =
            std::fs::read_to_string(m).with_context(|| format!("reading {}", m.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", m.display()))?;
        anyhow::ensure!(
            v.get("sha256").and_then(|s| s.as_str()) == Some(sha.as_str()),
            "{} names another sha256 than {} ({sha})",
            m.display(),
            a.model.display()
        );
        anyhow::ensure!(
            v.get("size").and_then(serde_json::Value::as_u64) == Some(bytes.len() as u64),
            "{} names another size than {} ({} bytes)",
            m.display(),
            a.model.display(),
            bytes.len()
        );
    }
    let dir = a.data.unwrap_or_else(store::default_data_dir);
    let mut data =
        store::DataDir::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    registry::register(&mut data, &bytes, &signed)
        .with_context(|| format!("publishing model version {}", a.version))?;
    if a.assign_all {
        let now_ms = (now as i64).saturating_mul(1000);
        registry::assign(&mut data, None, a.version, None, now_ms)
            .context("setting the fleet default")?;
    }
    let m = &signed.metadata;
    println!(
        "published {} version {} ({} bytes, sha256 {}, floor {}, expires at {})",
        m.family.as_str(),
        m.version.0,
        m.length,
        sha,
        m.floor.0,
        m.expires_at_s
    );
    if a.assign_all {
        println!("fleet default: model {}", m.version.0);
    }
    Ok(())
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
        ModelCommand::Publish(a) => publish(a),
    }
}
