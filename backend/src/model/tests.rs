//! Builder tests: reproducibility and the recorded evaluation, on a small configuration.

use super::*;

fn small_config() -> BuildConfig {
    BuildConfig {
        photos_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/photos")),
        views_per_photo: 6,
        points_per_view: 24,
        eval_views_per_photo: 3,
        eval_gallery: 64,
        ..BuildConfig::default()
    }
}

#[test]
fn rebuild_is_byte_identical_and_seed_matters() {
    let cfg = small_config();
    let a = build(&cfg, 7).expect("build");
    let b = build(&cfg, 7).expect("rebuild");
    assert_eq!(a.onnx, b.onnx, "ONNX bytes differ between identical builds");
    assert_eq!(
        a.manifest_json().expect("json"),
        b.manifest_json().expect("json")
    );
    let c = build(&cfg, 8).expect("other seed");
    assert_ne!(a.onnx, c.onnx, "the seed does not reach the model");
    // The files written to disk are the same bytes.
    let dir = tempfile::tempdir().expect("tempdir");
    a.write(dir.path()).expect("write");
    assert_eq!(
        std::fs::read(dir.path().join("model.onnx")).expect("read"),
        a.onnx
    );
    let m: Manifest =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).expect("read"))
            .expect("parse");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("manifest.json")).expect("read"),
        a.manifest_json().expect("json")
    );
    assert_eq!(m.sha256, sha256_hex(&a.onnx));
    assert_eq!(m.training_inputs.len(), 7);
    assert!(m.training_inputs.iter().all(|d| d.sha256.len() == 64));
}

#[test]
fn small_build_learns_something() {
    let out = build(&small_config(), 3).expect("build");
    let e = &out.manifest.evaluation;
    // Even a small build separates matching from non-matching pairs far better than chance.
    assert!(e.model.fpr95 < 0.5, "FPR95 {}", e.model.fpr95);
    assert!(
        e.model.nn_accuracy > 0.3,
        "NN accuracy {}",
        e.model.nn_accuracy
    );
    if let Some(c) = e.tract_min_cosine {
        assert!(c >= 0.999, "tract parity {c}");
    }
}

#[test]
fn invalid_configs_are_refused() {
    let mut cfg = small_config();
    cfg.heldout_photos.push("brick".into());
    assert!(matches!(build(&cfg, 1), Err(ModelError::Config(_))));
    let mut cfg = small_config();
    cfg.photos_dir = PathBuf::from("/nonexistent");
    assert!(matches!(build(&cfg, 1), Err(ModelError::Io(_))));
    assert!(BuildConfig::from_toml("views_per_photo = 0").is_err());
    assert!(BuildConfig::from_toml("unknown_key = 1").is_err());
    let c =
        BuildConfig::from_toml("views_per_photo = 3\n[augment]\nmax_zoom = 1.2\n").expect("parses");
    assert_eq!((c.views_per_photo, c.augment.max_zoom), (3, 1.2));
}

/// Builds the shipped model with the default configuration (seed 1) into
/// `$SEXTANT_MODEL_OUT` — the same as `sextant model build --seed 1 --out DIR` run from the
/// repository root. Ignored by default (it takes a while in debug builds).
#[test]
#[ignore]
fn build_default_model_into_env_dir() {
    let Ok(out) = std::env::var("SEXTANT_MODEL_OUT") else {
        return;
    };
    let cfg = BuildConfig {
        photos_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/photos")),
        ..BuildConfig::default()
    };
    let built = build(&cfg, 1).expect("build");
    built.write(Path::new(&out)).expect("write");
    println!("{}", built.manifest_json().expect("json"));
}
