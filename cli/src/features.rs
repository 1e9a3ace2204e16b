//! `sextant features extract|match`: the runtime's keypoints, descriptors and matches as JSON
//! files (`/work/shared/formats/features.md`: `sextant-features/1`, `sextant-matches/1`), so
//! they can be compared with other extractors on the same images.
//!
//! Images are PNG (8/16-bit gray, gray+alpha, RGB, RGBA, palette), reduced to gray with the
//! runtime's `rgb_to_luma`. Descriptors come from the runtime's embedded descriptor model.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sextant_runtime::GrayImage;
use sextant_runtime::descriptor::{DESCRIPTOR_DIM, DescriptorModel, ModelInfo};
use sextant_runtime::features::{
    DescriptorSet, FeatureConfig, FeatureExtractor, Keypoint, Match, MatchConfig, Matcher,
};

/// Arguments of `sextant features`.
#[derive(Debug, clap::Args)]
pub struct FeaturesArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: FeaturesCommand,
}

/// The `features` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum FeaturesCommand {
    /// Keypoints and descriptors of one image (`sextant-features/1`).
    Extract(ExtractArgs),
    /// Matches between two images (`sextant-matches/1`).
    Match(MatchArgs),
}

/// Where features are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// The CPU kernels.
    Cpu,
    /// The wgpu compute path.
    Gpu,
}

/// Options shared by `extract` and `match`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtractOptions {
    /// Most keypoints per image.
    #[arg(long, default_value_t = 1000)]
    pub max_keypoints: usize,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    pub backend: BackendChoice,
}

/// Arguments of `sextant features extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// The image (PNG).
    pub image: PathBuf,
    /// Output JSON file.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub options: ExtractOptions,
}

/// Arguments of `sextant features match`.
#[derive(Debug, clap::Args)]
pub struct MatchArgs {
    /// First image (PNG).
    pub image_a: PathBuf,
    /// Second image (PNG).
    pub image_b: PathBuf,
    /// Output JSON file.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub options: ExtractOptions,
}

/// Runs `sextant features`.
pub fn run(args: FeaturesArgs) -> anyhow::Result<()> {
    match args.what {
        FeaturesCommand::Extract(a) => run_extract(a),
        FeaturesCommand::Match(a) => run_match(a),
    }
}

/// Loads an image file as gray.
pub fn load_gray(path: &Path) -> anyhow::Result<GrayImage> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if !bytes.starts_with(b"\x89PNG") {
        bail!("{}: only PNG images are supported", path.display());
    }
    let img = sextant_sim::png_io::decode_png(&bytes, &path.display().to_string())
        .with_context(|| format!("decoding {}", path.display()))?;
    Ok(img.to_gray())
}

/// Keypoints with descriptors (`keypoints.len() * DESCRIPTOR_DIM` values).
#[derive(Debug, Clone)]
pub struct Described {
    /// The keypoints.
    pub keypoints: Vec<Keypoint>,
    /// Their descriptors, row-major.
    pub descriptors: Vec<i8>,
}

/// Extractor plus descriptor model: the CLI's end-to-end feature pipeline.
pub struct Pipeline {
    extractor: FeatureExtractor,
    model: Option<DescriptorModel>,
    model_error: Option<String>,
}

impl Pipeline {
    /// A CPU pipeline with the embedded descriptor model (an error when it does not load).
    pub fn new(options: &ExtractOptions) -> anyhow::Result<Pipeline> {
        let p = Pipeline::new_optional(options)?;
        if let Some(e) = &p.model_error {
            bail!("loading the embedded descriptor model: {e}");
        }
        Ok(p)
    }

    /// Like [`Pipeline::new`], but without descriptors when the model does not load.
    pub fn new_optional(options: &ExtractOptions) -> anyhow::Result<Pipeline> {
        if options.backend == BackendChoice::Gpu {
            bail!("GPU backend not available yet");
        }
        let extractor = FeatureExtractor::new(FeatureConfig {
            max_keypoints: options.max_keypoints,
            ..FeatureConfig::default()
        })?;
        let (model, model_error) = match DescriptorModel::embedded_default() {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Ok(Pipeline {
            extractor,
            model,
            model_error,
        })
    }

    /// The descriptor model's identity, when it loaded.
    pub fn model_info(&self) -> Option<&ModelInfo> {
        self.model.as_ref().map(|m| m.info())
    }

    /// Why the descriptor model did not load, if it did not.
    pub fn model_error(&self) -> Option<&str> {
        self.model_error.as_deref()
    }

    /// Keypoints and descriptors of a gray image (no descriptors without a model).
    pub fn run(&mut self, gray: &GrayImage) -> anyhow::Result<Described> {
        let f = self.extractor.extract_gray(gray)?;
        let n = f.keypoints.len();
        let mut descriptors = Vec::new();
        if let Some(model) = &mut self.model {
            descriptors = vec![0i8; n * DESCRIPTOR_DIM];
            model
                .describe(f.patches, n, &mut descriptors)
                .map_err(|e| anyhow::anyhow!("describing {n} patches: {e}"))?;
        }
        Ok(Described {
            keypoints: f.keypoints.to_vec(),
            descriptors,
        })
    }
}

/// The runtime's default image-to-image matching (ratio test and mutual check).
pub fn match_described(a: &Described, b: &Described) -> anyhow::Result<Vec<Match>> {
    let qa = DescriptorSet::new(&a.descriptors, DESCRIPTOR_DIM)?;
    let qb = DescriptorSet::new(&b.descriptors, DESCRIPTOR_DIM)?;
    let mut matcher = Matcher::new(MatchConfig::default())?;
    let mut out = Vec::new();
    matcher.match_sets(&qa, &qb, &mut out)?;
    Ok(out)
}

fn round3(v: f32) -> f64 {
    (f64::from(v) * 1000.0).round() / 1000.0
}

fn write_json(path: &Path, v: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string(v)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn run_extract(args: ExtractArgs) -> anyhow::Result<()> {
    let mut pipeline = Pipeline::new(&args.options)?;
    let gray = load_gray(&args.image)?;
    let d = pipeline.run(&gray)?;
    let info = pipeline.model_info().context("descriptor model missing")?;
    let keypoints: Vec<Value> = d
        .keypoints
        .iter()
        .map(|k| {
            json!([
                round3(k.x),
                round3(k.y),
                round3(k.size),
                round3(k.angle),
                k.score
            ])
        })
        .collect();
    let descriptors: Vec<&[i8]> = d.descriptors.chunks_exact(DESCRIPTOR_DIM).collect();
    let v = json!({
        "format": "sextant-features/1",
        "image": file_name(&args.image),
        "width": gray.width(),
        "height": gray.height(),
        "model": {"name": info.name, "version": info.version, "sha256": info.sha256},
        "keypoints": keypoints,
        "dim": DESCRIPTOR_DIM,
        "descriptors": descriptors,
    });
    write_json(&args.out, &v)?;
    println!("{} keypoints -> {}", d.keypoints.len(), args.out.display());
    Ok(())
}

fn run_match(args: MatchArgs) -> anyhow::Result<()> {
    let mut pipeline = Pipeline::new(&args.options)?;
    let a = pipeline.run(&load_gray(&args.image_a)?)?;
    let b = pipeline.run(&load_gray(&args.image_b)?)?;
    let matches = match_described(&a, &b)?;
    let xy = |d: &Described| -> Vec<Value> {
        d.keypoints
            .iter()
            .map(|k| json!([round3(k.x), round3(k.y)]))
            .collect()
    };
    let v = json!({
        "format": "sextant-matches/1",
        "image_a": file_name(&args.image_a),
        "image_b": file_name(&args.image_b),
        "keypoints_a": xy(&a),
        "keypoints_b": xy(&b),
        "matches": matches.iter().map(|m| json!([m.query, m.train, m.distance])).collect::<Vec<_>>(),
    });
    write_json(&args.out, &v)?;
    println!(
        "{} x {} keypoints, {} matches -> {}",
        a.keypoints.len(),
        b.keypoints.len(),
        matches.len(),
        args.out.display()
    );
    Ok(())
}
