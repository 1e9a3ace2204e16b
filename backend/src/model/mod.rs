//! The descriptor-model builder: training patches from photos, a closed-form fit, int8
//! quantisation, ONNX export, evaluation and a manifest — reproducibly.
//!
//! `build` is a pure function of (photos, [`BuildConfig`], seed): the same inputs give a
//! byte-identical `model.onnx` and `manifest.json` (everything is seeded, single-threaded and
//! sorted; no clock or path enters the files). Pieces:
//!
//! - [`data`]: photos → matching patch pairs through random homographies, photometric changes,
//!   blur and noise.
//! - [`train`]: calibration of the fixed gradient/pooling front end and the discriminative
//!   linear projection (whitening by matching-pair differences, PCA of non-matching ones).
//! - [`graph`]: the QOperator ONNX graph.
//! - [`eval`]: FPR95 and nearest-neighbour accuracy on held-out photos, against SIFT on the same
//!   patches.
//!
//! The model is run for evaluation by the runtime's own int8 kernels, so the reported figures are
//! the shipped arithmetic's; with the `tract` feature the build also checks tract's output
//! against them.

pub mod data;
pub mod eval;
pub mod graph;
pub mod rng;
pub mod train;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sextant_runtime::descriptor::{
    DESCRIPTOR_DIM, DescriptorModel, Engine, PATCH_PIXELS, PATCH_SIZE, sha256_hex,
};

use data::AugmentConfig;
use eval::Scores;
use graph::{FEATURES, ModelParams, Stage};

/// Why a model build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Reading inputs or writing outputs failed.
    #[error("i/o: {0}")]
    Io(String),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The training data is unusable (missing photos, too few pairs).
    #[error("training data: {0}")]
    Data(String),
    /// The built model failed a check (runtime load, tract parity).
    #[error("validation: {0}")]
    Validation(String),
    /// An internal step failed (a bug).
    #[error("internal: {0}")]
    Internal(String),
}

/// The builder's result type.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Everything a build depends on besides the photos' bytes and the seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildConfig {
    /// Model name written into the ONNX metadata and manifest.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Folder holding `<photo>.png` files. Not written to the manifest (the photos' digests are),
    /// so where the data lives never changes the build's output.
    #[serde(skip_serializing)]
    pub photos_dir: PathBuf,
    /// Photos to train on (file stems).
    pub train_photos: Vec<String>,
    /// Photos held out for evaluation (file stems).
    pub heldout_photos: Vec<String>,
    /// Random homographies per training photo.
    pub views_per_photo: usize,
    /// Keypoints per view.
    pub points_per_view: usize,
    /// Random homographies per held-out photo.
    pub eval_views_per_photo: usize,
    /// Candidates per nearest-neighbour query in evaluation.
    pub eval_gallery: usize,
    /// Whitening regularisation (fraction of the mean eigenvalue added to each).
    pub whitening_reg: f64,
    /// Augmentation parameters.
    pub augment: AugmentConfig,
}

impl Default for BuildConfig {
    fn default() -> Self {
        BuildConfig {
            name: "sextant-descriptor".into(),
            version: "1.0.0".into(),
            photos_dir: PathBuf::from("assets/photos"),
            train_photos: ["astronaut", "brick", "camera", "chelsea", "grass"]
                .map(String::from)
                .to_vec(),
            heldout_photos: ["coffee", "gravel"].map(String::from).to_vec(),
            views_per_photo: 48,
            points_per_view: 48,
            eval_views_per_photo: 24,
            eval_gallery: 256,
            whitening_reg: 0.05,
            augment: AugmentConfig::default(),
        }
    }
}

impl BuildConfig {
    /// Reads a TOML configuration (missing keys take defaults).
    pub fn from_toml(text: &str) -> Result<BuildConfig> {
        let c: BuildConfig = toml::from_str(text).map_err(|e| ModelError::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks ranges and that train and held-out photos are disjoint.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(ModelError::Config(m.into()));
        if self.train_photos.is_empty() || self.heldout_photos.is_empty() {
            return bad("need at least one training and one held-out photo");
        }
        if self
            .train_photos
            .iter()
            .any(|p| self.heldout_photos.contains(p))
        {
            return bad("a photo is both in training and held out");
        }
        if self.views_per_photo == 0 || self.points_per_view == 0 || self.eval_views_per_photo == 0
        {
            return bad("views and points must be positive");
        }
        if self.eval_gallery < 2 {
            return bad("eval_gallery must be at least 2");
        }
        if !(self.whitening_reg.is_finite() && self.whitening_reg > 0.0) {
            return bad("whitening_reg must be positive");
        }
        let a = &self.augment;
        if !(a.patch_scale[0] > 0.5
            && a.patch_scale[1] >= a.patch_scale[0]
            && a.patch_scale[1] < 8.0)
        {
            return bad("augment.patch_scale must be within (0.5, 8)");
        }
        if !(a.max_zoom >= 1.0 && a.max_zoom < 3.0 && a.max_tilt >= 0.0 && a.max_tilt < 1.0) {
            return bad("augment zoom/tilt out of range");
        }
        Ok(())
    }
}

/// One training input and its digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputDigest {
    /// File name (no folder, so the digest list does not depend on where the data lives).
    pub file: String,
    /// `train` or `heldout`.
    pub role: String,
    /// Lowercase hex sha256 of the file bytes.
    pub sha256: String,
}

/// Quantisation parameters of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerQuant {
    /// Node name in the ONNX graph.
    pub node: String,
    /// Operator.
    pub op: String,
    /// Input scale and zero point.
    pub input: (f32, i32),
    /// Weight scale (zero point 0), if the op has weights.
    pub weight_scale: Option<f32>,
    /// Output scale and zero point.
    pub output: (f32, i32),
}

/// Evaluation results recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Held-out matching pairs.
    pub heldout_pairs: usize,
    /// The model (int8, runtime kernels).
    pub model: Scores,
    /// SIFT on the same patches (float).
    pub sift: Scores,
    /// The unprojected front end (pooled gradients, float).
    pub front_end: Scores,
    /// The model on its own training pairs (for over-fitting checks).
    pub model_train: Scores,
    /// Lowest per-descriptor cosine between tract's and the runtime kernels' output on the
    /// held-out patches (`null` when built without tract).
    pub tract_min_cosine: Option<f64>,
    /// Fraction of descriptors tract and the kernels produce bit-identically.
    pub tract_identical_fraction: Option<f64>,
}

/// The manifest written next to `model.onnx`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub manifest_version: u32,
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// sha256 of `model.onnx`.
    pub sha256: String,
    /// Size of `model.onnx` in bytes.
    pub size: usize,
    /// Human-readable architecture summary, one entry per layer.
    pub architecture: Vec<String>,
    /// Input spec.
    pub input: String,
    /// Output spec.
    pub output: String,
    /// Per-layer quantisation.
    pub quantisation: Vec<LayerQuant>,
    /// Every training/evaluation input with its digest (lineage).
    pub training_inputs: Vec<InputDigest>,
    /// Seed of the build.
    pub seed: u64,
    /// The configuration used.
    pub config: BuildConfig,
    /// Training pairs used.
    pub training_pairs: usize,
    /// Generalised eigenvalues kept by the projection (discriminative power per dimension).
    pub projection_eigenvalues: Vec<f64>,
    /// Evaluation results.
    pub evaluation: Evaluation,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// The ONNX bytes.
    pub onnx: Vec<u8>,
    /// The manifest.
    pub manifest: Manifest,
}

impl BuildOutput {
    /// The manifest as pretty JSON (deterministic).
    pub fn manifest_json(&self) -> Result<String> {
        serde_json::to_string_pretty(&self.manifest)
            .map(|s| s + "\n")
            .map_err(|e| ModelError::Internal(e.to_string()))
    }

    /// Writes `model.onnx`, `manifest.json` and `README.md` (model card) into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let io = |e: std::io::Error| ModelError::Io(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::write(dir.join("model.onnx"), &self.onnx).map_err(io)?;
        std::fs::write(dir.join("manifest.json"), self.manifest_json()?).map_err(io)?;
        std::fs::write(dir.join("README.md"), model_card(&self.manifest)).map_err(io)?;
        Ok(())
    }
}

fn load_photos(
    cfg: &BuildConfig,
    names: &[String],
    role: &str,
    digests: &mut Vec<InputDigest>,
) -> Result<Vec<data::Photo>> {
    let mut out = Vec::new();
    for name in names {
        let path = cfg.photos_dir.join(format!("{name}.png"));
        let (photo, bytes) = data::load_photo(&path)?;
        digests.push(InputDigest {
            file: format!("{name}.png"),
            role: role.into(),
            sha256: sha256_hex(&bytes),
        });
        out.push(photo);
    }
    Ok(out)
}

fn describe(model: &mut DescriptorModel, patches: &[u8]) -> Result<Vec<i8>> {
    let n = patches.len() / PATCH_PIXELS;
    let mut out = vec![0i8; n * DESCRIPTOR_DIM];
    model
        .describe(patches, n, &mut out)
        .map_err(|e| ModelError::Validation(e.to_string()))?;
    Ok(out)
}

fn to_f32(v: &[i8]) -> Vec<f32> {
    v.iter().map(|&x| f32::from(x)).collect()
}

fn front_end_float(f: &[u8]) -> Vec<f32> {
    f.chunks_exact(FEATURES)
        .flat_map(|r| {
            let mut v: Vec<f32> = r
                .iter()
                .map(|&x| f32::from(x) - f32::from(graph::POOL_ZP))
                .collect();
            eval::normalise(&mut v);
            v
        })
        .collect()
}

/// Runs the build.
pub fn build(cfg: &BuildConfig, seed: u64) -> Result<BuildOutput> {
    cfg.validate()?;
    let mut digests = Vec::new();
    let train_photos = load_photos(cfg, &cfg.train_photos, "train", &mut digests)?;
    let heldout_photos = load_photos(cfg, &cfg.heldout_photos, "heldout", &mut digests)?;
    let tr: Vec<&data::Photo> = train_photos.iter().collect();
    let ho: Vec<&data::Photo> = heldout_photos.iter().collect();
    let train = data::make_pairs(
        &tr,
        cfg.views_per_photo,
        cfg.points_per_view,
        &cfg.augment,
        seed,
    );
    let heldout = data::make_pairs(
        &ho,
        cfg.eval_views_per_photo,
        cfg.points_per_view,
        &cfg.augment,
        seed ^ 0x05EE_D0F4_E1D0_u64,
    );
    if train.len() < 2 * FEATURES || heldout.len() < 16 {
        return Err(ModelError::Data(format!(
            "only {} training and {} held-out pairs; raise views_per_photo / points_per_view",
            train.len(),
            heldout.len()
        )));
    }
    tracing::info!(
        train = train.len(),
        heldout = heldout.len(),
        "patch pairs cut"
    );

    let mut params = ModelParams {
        dim: DESCRIPTOR_DIM,
        pool_bias: vec![0; graph::ORIENTATIONS],
        pool_scale: 1.0,
        proj: Vec::new(),
        proj_scale: 1.0,
        proj_out_scale: 1.0,
    };
    let mut both = train.a.clone();
    both.extend_from_slice(&train.b);
    train::calibrate_pool(&mut params, &both)?;
    let fa = train::features(&params, &train.a)?;
    let fb = train::features(&params, &train.b)?;
    let (p, eigen) = train::fit_projection(&fa, &fb, DESCRIPTOR_DIM, cfg.whitening_reg, seed)?;
    train::quantise_projection(&mut params, &p, &fa);

    let proto = graph::model_proto(&params, Stage::Full, &cfg.name, &cfg.version);
    let onnx = graph::encode(&proto);
    let mut model = DescriptorModel::from_onnx_bytes(&onnx)
        .map_err(|e| ModelError::Validation(e.to_string()))?;
    if !matches!(model.engine(), Engine::Kernels(_)) {
        return Err(ModelError::Validation(
            "the runtime kernels refused the built graph".into(),
        ));
    }

    let da = describe(&mut model, &heldout.a)?;
    let db = describe(&mut model, &heldout.b)?;
    let g = cfg.eval_gallery;
    let model_scores = eval::score(&to_f32(&da), &to_f32(&db), DESCRIPTOR_DIM, g, seed);
    let sift_scores = eval::score(
        &eval::sift_batch(&heldout.a),
        &eval::sift_batch(&heldout.b),
        128,
        g,
        seed,
    );
    let ha = train::features(&params, &heldout.a)?;
    let hb = train::features(&params, &heldout.b)?;
    let fe_scores = eval::score(
        &front_end_float(&ha),
        &front_end_float(&hb),
        FEATURES,
        g,
        seed,
    );
    let ta = describe(&mut model, &train.a)?;
    let tb = describe(&mut model, &train.b)?;
    let train_scores = eval::score(&to_f32(&ta), &to_f32(&tb), DESCRIPTOR_DIM, g, seed);
    let (tract_min_cosine, tract_identical_fraction) = tract_parity(&onnx, &heldout.a, &da)?;

    let quantisation = vec![
        LayerQuant {
            node: "grad".into(),
            op: "QLinearConv".into(),
            input: (graph::INPUT_SCALE, 0),
            weight_scale: Some(1.0),
            output: (graph::GRAD_SCALE, 0),
        },
        LayerQuant {
            node: "pool".into(),
            op: "QLinearConv".into(),
            input: (graph::GRAD_SCALE, 0),
            weight_scale: Some(graph::POOL_W_SCALE),
            output: (params.pool_scale, i32::from(graph::POOL_ZP)),
        },
        LayerQuant {
            node: "proj".into(),
            op: "QLinearMatMul".into(),
            input: (params.pool_scale, i32::from(graph::POOL_ZP)),
            weight_scale: Some(params.proj_scale),
            output: (params.proj_out_scale, 128),
        },
        LayerQuant {
            node: "quant".into(),
            op: "QuantizeLinear".into(),
            input: (params.proj_out_scale, 128),
            weight_scale: None,
            output: (1.0 / 127.0, 0),
        },
    ];
    let manifest = Manifest {
        manifest_version: 1,
        name: cfg.name.clone(),
        version: cfg.version.clone(),
        sha256: sha256_hex(&onnx),
        size: onnx.len(),
        architecture: vec![
            format!(
                "QLinearConv grad: 3x3, 1->{} fixed oriented-gradient filters (Sobel x, y, diagonals, both signs), pad 1; u8 out (ReLU by saturation)",
                graph::ORIENTATIONS
            ),
            format!(
                "QLinearConv pool: {k}x{k} depthwise (group {o}), stride {s}, pad {p}, tent weights (soft 4x4 binning); int32 bias centres channels; u8 out, zero point 128",
                k = graph::POOL_K,
                o = graph::ORIENTATIONS,
                s = graph::POOL_STRIDE,
                p = graph::POOL_PAD
            ),
            format!("Flatten: [N,{FEATURES}]"),
            format!(
                "QLinearMatMul proj: [{FEATURES},{DESCRIPTOR_DIM}] (int8 values stored as uint8, zero point 128), learned discriminative projection (closed form); uint8 out, zero point 128"
            ),
            "DequantizeLinear -> LpNormalization(p=2, axis=1) -> QuantizeLinear(scale 1/127, int8)"
                .into(),
        ],
        input: format!(
            "patch: uint8 [N,1,{PATCH_SIZE},{PATCH_SIZE}], oriented scale-normalised gray patch, scale 1/255"
        ),
        output: format!(
            "descriptor: int8 [N,{DESCRIPTOR_DIM}], L2-normalised to 127 (dot product = 127^2 cosine)"
        ),
        quantisation,
        training_inputs: digests,
        seed,
        config: cfg.clone(),
        training_pairs: train.len(),
        projection_eigenvalues: eigen.iter().map(|v| (v * 1e6).round() / 1e6).collect(),
        evaluation: Evaluation {
            heldout_pairs: heldout.len(),
            model: model_scores,
            sift: sift_scores,
            front_end: fe_scores,
            model_train: train_scores,
            tract_min_cosine,
            tract_identical_fraction,
        },
    };
    Ok(BuildOutput { onnx, manifest })
}

fn cosine(a: &[i8], b: &[i8]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    dot / (na * nb)
}

#[cfg(feature = "tract")]
fn tract_parity(onnx: &[u8], patches: &[u8], ours: &[i8]) -> Result<(Option<f64>, Option<f64>)> {
    use sextant_runtime::descriptor::reference::TractModel;
    let t = TractModel::from_onnx_bytes(onnx).map_err(|e| ModelError::Validation(e.to_string()))?;
    let n = patches.len() / PATCH_PIXELS;
    let mut theirs = vec![0i8; n * DESCRIPTOR_DIM];
    t.describe(patches, n, &mut theirs)
        .map_err(|e| ModelError::Validation(e.to_string()))?;
    let mut min: f64 = 1.0;
    let mut same = 0usize;
    for (a, b) in ours
        .chunks_exact(DESCRIPTOR_DIM)
        .zip(theirs.chunks_exact(DESCRIPTOR_DIM))
    {
        min = min.min(cosine(a, b));
        same += usize::from(a == b);
    }
    if min < 0.999 {
        return Err(ModelError::Validation(format!(
            "tract and kernels disagree: min cosine {min:.5}"
        )));
    }
    Ok((
        Some((min * 1e6).floor() / 1e6),
        Some(same as f64 / n.max(1) as f64),
    ))
}

#[cfg(not(feature = "tract"))]
fn tract_parity(_onnx: &[u8], _patches: &[u8], _ours: &[i8]) -> Result<(Option<f64>, Option<f64>)> {
    let _ = cosine;
    Ok((None, None))
}

/// The model card (README.md) generated from a manifest.
pub fn model_card(m: &Manifest) -> String {
    let e = &m.evaluation;
    let row =
        |name: &str, s: &Scores| format!("| {name} | {:.4} | {:.4} |\n", s.fpr95, s.nn_accuracy);
    let mut s = format!(
        "# {name} {version}\n\nLearned int8 patch descriptor of the Sextant runtime (generated by `sextant model build`; \
         see `docs/descriptor-model.md`).\n\n- File: `model.onnx`, sha256 `{sha}`, {size} bytes\n- Input: {input}\n- Output: {output}\n- Seed: {seed}; training pairs: {pairs}\n\n## Architecture\n\n",
        name = m.name,
        version = m.version,
        sha = m.sha256,
        size = m.size,
        input = m.input,
        output = m.output,
        seed = m.seed,
        pairs = m.training_pairs
    );
    for a in &m.architecture {
        s += &format!("- {a}\n");
    }
    s += &format!(
        "\n## Evaluation (held-out photos {held}; {n} pairs; NN gallery {g})\n\n| descriptor | FPR95 ↓ | NN accuracy ↑ |\n|---|---|---|\n",
        held = m.config.heldout_photos.join(", "),
        n = e.heldout_pairs,
        g = e.model.gallery
    );
    s += &row("this model (int8, runtime kernels)", &e.model);
    s += &row("SIFT on the same patches (float)", &e.sift);
    s += &row("front end without projection (float)", &e.front_end);
    s += &row("this model on its training pairs", &e.model_train);
    if let (Some(c), Some(f)) = (e.tract_min_cosine, e.tract_identical_fraction) {
        s += &format!(
            "\ntract-onnx vs runtime kernels on held-out patches: min cosine {c:.6}, bit-identical descriptors {:.1} %.\n",
            f * 100.0
        );
    }
    s += "\n## Training data\n\n";
    for d in &m.training_inputs {
        s += &format!("- `{}` ({}) sha256 `{}`\n", d.file, d.role, d.sha256);
    }
    s += "\n## Intended use and limits\n\nMatching oriented, scale-normalised 32×32 gray patches from the runtime's keypoint stage. \
          Trained on synthetic views (homographies, photometric changes, blur, noise) of seven photos: \
          no real multi-view data, no strong 3-D parallax or night/day changes. Patch-level figures above are not a \
          keypoint-level MMA; see the benchmark in the repository README for that.\n";
    s
}
