//! Scene files: the samples load; every kind of bad file gives a clear error, never a panic.

use sextant_sim::{Scene, SimError};

fn photo(name: &str) -> String {
    format!("{}/../assets/photos/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn load(text: &str) -> Result<Scene, SimError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.toml");
    std::fs::write(&path, text).unwrap();
    Scene::load(&path)
}

fn quad(extra: &str) -> String {
    format!("[[quad]]\ntexture = {:?}\n{extra}\n", photo("brick.png"))
}

#[test]
fn samples_load_and_are_rich() {
    let mut digests = Vec::new();
    for name in ["room", "facade", "plaza"] {
        let s = Scene::sample(name).unwrap();
        assert!(
            s.surfaces.len() >= 20,
            "{name}: {} surfaces",
            s.surfaces.len()
        );
        assert!(
            s.textures.len() >= 6,
            "{name}: {} textures",
            s.textures.len()
        );
        assert!(s.digest.starts_with("fnv1a64:"));
        digests.push(s.digest.clone());
        // The files on disk are the same scenes (textures resolved relative to the file).
        let from_file = Scene::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("../assets/scenes/{name}.toml")),
        )
        .unwrap();
        assert_eq!(from_file.digest, s.digest, "{name}");
        assert_eq!(from_file.surfaces.len(), s.surfaces.len());
    }
    digests.dedup();
    assert_eq!(digests.len(), 3);
    assert!(Scene::sample("facade").unwrap().geo_anchor.is_some());
    assert!(matches!(
        Scene::sample("attic"),
        Err(SimError::UnknownSample(_))
    ));
    assert!(Scene::open("sample:plaza").is_ok() && Scene::open("room").is_ok());
}

#[test]
fn valid_file_with_both_quad_forms_and_a_box() {
    let text = format!(
        "name = \"t\"\nbackground = [0.1, 0.2, 0.3]\n{}{}[[box]]\ntexture = {:?}\nbase = [0, 0, 0]\nsize = [1, 2, 3]\nyaw_deg = 30\ntile = 0.5\n",
        quad("origin = [0, 0, 0]\nu = [2, 0, 0]\nv = [0, 0, 1]\ntile = [0.5, 0.25]"),
        quad("center = [0, 5, 1]\nsize = [2, 1]\nnormal = [0, -1, 0]\ncrop = [0.1, 0.1, 0.5, 0.9]"),
        photo("grass.png")
    );
    let s = load(&text).unwrap();
    assert_eq!(s.name, "t");
    assert_eq!(s.surfaces.len(), 2 + 5, "box without bottom has 5 faces");
    assert_eq!(s.textures.len(), 2);
    assert_eq!(s.surfaces[0].repeats, [4.0, 4.0]);
    // The centre form faces its normal and keeps v up.
    let q = &s.surfaces[1];
    assert!((q.normal() - nalgebra::Vector3::new(0.0, -1.0, 0.0)).norm() < 1e-12);
    assert!(q.v.z > 0.99);
    // Box faces point outwards.
    let centre = nalgebra::Vector3::new(0.0, 0.0, 1.5);
    for f in &s.surfaces[2..] {
        let mid = f.origin + (f.u + f.v) / 2.0;
        assert!(f.normal().dot(&(mid - centre)) > 0.0, "{}", f.name);
    }
}

#[test]
fn bad_files_give_clear_errors() {
    let cases: Vec<(String, &str)> = vec![
        ("this is not toml".into(), "scene"),
        (
            quad("origin = [0, 0, 0]\nu = [1, 0, 0]\nv = [2, 0, 0]"),
            "degenerate",
        ),
        (
            quad("origin = [nan, 0, 0]\nu = [1, 0, 0]\nv = [0, 1, 0]"),
            "non-finite",
        ),
        (
            quad("origin = [0, 0, 0]\nu = [1, 0, 0]\nv = [0, 1, 0]\ncolour = 3"),
            "colour",
        ),
        (quad("origin = [0, 0, 0]\nu = [1, 0, 0]"), "needs all of"),
        (
            quad("origin = [0, 0, 0]\nu = [1, 0, 0]\nv = [0, 1, 0]\nnormal = [0, 0, 1]"),
            "not both",
        ),
        (quad(""), "missing geometry"),
        (
            quad("origin = [0, 0, 0]\nu = [1, 0, 0]\nv = [0, 1, 0]\ntile = -1"),
            "tile",
        ),
        (
            quad("origin = [0, 0, 0]\nu = [1, 0, 0]\nv = [0, 1, 0]\ncrop = [0.5, 0, 0.2, 1]"),
            "crop",
        ),
        (
            quad("origin = [0, 0, 0]\nu = [1, 0, 0]\nv = [0, 1, 0]\nbrightness = -2"),
            "brightness",
        ),
        (
            quad("center = [0, 0, 0]\nsize = [1, 0]\nnormal = [0, 0, 1]"),
            "size",
        ),
        (
            quad("center = [0, 0, 0]\nsize = [1, 1]\nnormal = [0, 0, 0]"),
            "zero",
        ),
        ("background = [0.1, 0.2, 0.3]\n".into(), "no surfaces"),
        (
            format!(
                "background = [2, 0, 0]\n{}",
                quad("origin = [0, 0, 0]\nu = [1, 0, 0]\nv = [0, 1, 0]")
            ),
            "background",
        ),
        (
            "[[box]]\ntexture = \"x.png\"\nbase = [0, 0, 0]\nsize = [1, -1, 1]\n".into(),
            "size",
        ),
    ];
    for (text, needle) in cases {
        let e = load(&text).expect_err(&text).to_string();
        assert!(
            e.contains(needle),
            "expected {needle:?} in error {e:?} for\n{text}"
        );
    }
    let missing = load(
        "[[quad]]\ntexture = \"nope.png\"\norigin = [0, 0, 0]\nu = [1, 0, 0]\nv = [0, 1, 0]\n",
    )
    .unwrap_err();
    assert!(
        matches!(missing, SimError::MissingTexture { .. }),
        "{missing}"
    );
    assert!(missing.to_string().contains("nope.png"));
    // A texture file that is not a PNG.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.png"), b"not a png").unwrap();
    let text =
        "[[quad]]\ntexture = \"bad.png\"\norigin = [0, 0, 0]\nu = [1, 0, 0]\nv = [0, 1, 0]\n";
    let e = Scene::from_toml_str(text, dir.path()).unwrap_err();
    assert!(matches!(e, SimError::Png { .. }), "{e}");
    assert!(matches!(
        Scene::load(std::path::Path::new("/nonexistent/scene.toml")),
        Err(SimError::Io { .. })
    ));
}
