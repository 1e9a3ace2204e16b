//! `sextant features extract|match`: the runtime's keypoints, descriptors and matches as JSON
//! files (`/work/shared/formats/features.md`: `sextant-features/1`, `sextant-matches/1`), so
//! they can be compared with other extractors on the same images.
//!
//! Images are PNG (8/16-bit gray, gray+alpha, RGB, RGBA, palette), reduced to gray with the
//! runtime's `rgb_to_luma`. Descriptors come from the runtime's embedded descriptor model.
//!
//! `--backend auto|cpu|gpu` chooses where descriptors and matches are computed (the runtime's
//! `backend::select`; the choice and its reason are logged). GPU and CPU results are
//! bit-identical; a GPU failure at run time is logged and that image falls back to the CPU.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sextant_runtime::GrayImage;
use sextant_runtime::backend::{self, Backend, BackendKind, Selection, StageBackends};
use sextant_runtime::descriptor::{DESCRIPTOR_DIM, DescriptorModel, ModelInfo};
use sextant_runtime::features::{
    DescriptorSet, FeatureConfig, FeatureExtractor, FeaturePipeline, Keypoint, Match, MatchConfig,
    Matcher,
};
use sextant_runtime::gpu::GpuMatcher;

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
    /// The GPU if a hardware adapter passes the start-up self-test, else the CPU.
    Auto,
    /// The CPU kernels.
    Cpu,
    /// The wgpu compute path (an error when no adapter passes the self-test).
    Gpu,
}

impl From<BackendChoice> for Backend {
    fn from(c: BackendChoice) -> Backend {
        match c {
            BackendChoice::Auto => Backend::Auto,
            BackendChoice::Cpu => Backend::Cpu,
            BackendChoice::Gpu => Backend::Gpu,
        }
    }
}

/// Options shared by `extract` and `match`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtractOptions {
    /// Most keypoints per image.
    #[arg(long, default_value_t = 1000)]
    pub max_keypoints: usize,
    #[command(flatten)]
    pub detector: DetectorOptions,
    /// Where to compute descriptors and matches (results are identical on every backend).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
}

/// Detector settings that differ from the runtime's defaults (`FeatureConfig::default`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DetectorOptions {
    /// Most pyramid levels, 1 to 16 (default 16).
    #[arg(long)]
    pub levels: Option<usize>,
    /// Scale factor between pyramid levels, 1.05 to 2.0 (default 1.1).
    #[arg(long)]
    pub scale_factor: Option<f32>,
    /// Smallest side of the cells keypoints are spread over, level-0 pixels (default 16).
    #[arg(long)]
    pub grid_cell: Option<u32>,
    /// Grid cells per keypoint of a level's budget; 0 keeps `--grid-cell` cells (default 4).
    #[arg(long)]
    pub cells_per_keypoint: Option<u32>,
}

impl ExtractOptions {
    /// The detector settings these options ask for (the runtime's defaults otherwise).
    pub fn feature_config(&self) -> FeatureConfig {
        let d = FeatureConfig::default();
        let o = &self.detector;
        FeatureConfig {
            max_keypoints: self.max_keypoints,
            levels: o.levels.unwrap_or(d.levels),
            scale_factor: o.scale_factor.unwrap_or(d.scale_factor),
            grid_cell: o.grid_cell.unwrap_or(d.grid_cell),
            cells_per_keypoint: o.cells_per_keypoint.unwrap_or(d.cells_per_keypoint),
            ..d
        }
    }
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
    /// Which backend ran each stage.
    pub backends: StageBackends,
}

/// Extractor plus descriptor model: the CLI's end-to-end feature pipeline, on the chosen backend.
pub struct Pipeline {
    extractor: FeatureExtractor,
    features: Option<FeaturePipeline>,
    model_info: Option<ModelInfo>,
    model_error: Option<String>,
    selection: Selection,
    matcher: Option<GpuMatcher>,
}

impl Pipeline {
    /// A pipeline with the embedded descriptor model (an error when it does not load, or when
    /// `--backend gpu` finds no usable GPU).
    pub fn new(options: &ExtractOptions) -> anyhow::Result<Pipeline> {
        let p = Pipeline::new_optional(options)?;
        if let Some(e) = &p.model_error {
            bail!("loading the embedded descriptor model: {e}");
        }
        Ok(p)
    }

    /// Like [`Pipeline::new`], but without descriptors when the model does not load.
    pub fn new_optional(options: &ExtractOptions) -> anyhow::Result<Pipeline> {
        let config = options.feature_config();
        let extractor = FeatureExtractor::new(config.clone())?;
        let requested = Backend::from(options.backend);
        let mut selection =
            backend::select(requested).with_context(|| format!("backend {requested} requested"))?;
        let (features, model_info, model_error) = match DescriptorModel::embedded_default() {
            Ok(m) => {
                let info = m.info().clone();
                let p = FeaturePipeline::with_selection(config, m, selection.clone())
                    .with_context(|| format!("backend {requested} requested"))?;
                selection = p.selection().clone();
                (Some(p), Some(info), None)
            }
            Err(e) => (None, None, Some(e.to_string())),
        };
        let mut matcher = None;
        if let Some(ctx) = selection.gpu_context() {
            match GpuMatcher::new(ctx, MatchConfig::default()) {
                Ok(m) => matcher = Some(m),
                Err(e) if requested == Backend::Gpu => {
                    bail!("backend gpu requested, but the GPU matcher failed: {e}")
                }
                Err(e) => tracing::warn!("GPU matcher unavailable, matching on the CPU: {e}"),
            }
        }
        tracing::info!(
            "feature backend: {} (requested {requested}): {}",
            selection.kind(),
            selection.reason()
        );
        Ok(Pipeline {
            extractor,
            features,
            model_info,
            model_error,
            selection,
            matcher,
        })
    }

    /// The backend choice and its reason.
    pub fn selection(&self) -> &Selection {
        &self.selection
    }

    /// The descriptor model's identity, when it loaded.
    pub fn model_info(&self) -> Option<&ModelInfo> {
        self.model_info.as_ref()
    }

    /// Why the descriptor model did not load, if it did not.
    pub fn model_error(&self) -> Option<&str> {
        self.model_error.as_deref()
    }

    /// Keypoints and descriptors of a gray image (no descriptors without a model).
    pub fn run(&mut self, gray: &GrayImage) -> anyhow::Result<Described> {
        match &mut self.features {
            Some(p) => {
                let f = p.extract_gray(gray)?;
                let d = Described {
                    keypoints: f.keypoints.to_vec(),
                    descriptors: f.descriptors.to_vec(),
                    backends: f.backends,
                };
                if d.backends.fell_back {
                    tracing::warn!(
                        "GPU descriptor stage failed, this image used the CPU: {}",
                        p.last_fallback().unwrap_or("unknown error")
                    );
                }
                Ok(d)
            }
            None => {
                let f = self.extractor.extract_gray(gray)?;
                Ok(Described {
                    keypoints: f.keypoints.to_vec(),
                    descriptors: Vec::new(),
                    backends: StageBackends::CPU,
                })
            }
        }
    }

    /// [`match_described`] on this pipeline's backend: the GPU matcher when the GPU was selected
    /// (falling back to the CPU, logged, if it fails), else the CPU. Returns the matches and the
    /// backend that computed them; both backends give identical matches.
    pub fn match_pair(
        &mut self,
        a: &Described,
        b: &Described,
    ) -> anyhow::Result<(Vec<Match>, BackendKind)> {
        if let Some(m) = &mut self.matcher {
            let qa = DescriptorSet::new(&a.descriptors, DESCRIPTOR_DIM)?;
            let qb = DescriptorSet::new(&b.descriptors, DESCRIPTOR_DIM)?;
            let mut out = Vec::new();
            match m.match_sets(&qa, &qb, &mut out) {
                Ok(()) => return Ok((out, BackendKind::Gpu)),
                Err(e) => tracing::warn!("GPU matching failed, matching on the CPU: {e}"),
            }
        }
        Ok((match_described(a, b)?, BackendKind::Cpu))
    }
}

/// The runtime's default image-to-image matching (ratio test and mutual check) on the CPU.
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
    println!(
        "{} keypoints -> {} (descriptors on {})",
        d.keypoints.len(),
        args.out.display(),
        d.backends.descriptors
    );
    Ok(())
}

fn run_match(args: MatchArgs) -> anyhow::Result<()> {
    let mut pipeline = Pipeline::new(&args.options)?;
    let a = pipeline.run(&load_gray(&args.image_a)?)?;
    let b = pipeline.run(&load_gray(&args.image_b)?)?;
    let (matches, match_backend) = pipeline.match_pair(&a, &b)?;
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
        "{} x {} keypoints, {} matches -> {} (descriptors on {}, matching on {match_backend})",
        a.keypoints.len(),
        b.keypoints.len(),
        matches.len(),
        args.out.display(),
        b.backends.descriptors
    );
    Ok(())
}
