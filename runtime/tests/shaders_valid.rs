//! Every `shaders/*.wgsl` parses and validates with naga (the shader compiler inside wgpu), found by
//! listing the folder at test time so a new shader is covered without touching this test. Needs no
//! GPU; runs with or without the `gpu` feature.

use std::path::{Path, PathBuf};

fn shader_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders")
}

fn wgsl_files() -> Vec<PathBuf> {
    let dir = shader_dir();
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "wgsl"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_wgsl_shader_parses_and_validates() {
    let files = wgsl_files();
    assert!(
        !files.is_empty(),
        "no .wgsl files in {}",
        shader_dir().display()
    );
    let mut failures = Vec::new();
    for path in &files {
        let source = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let name = path.display().to_string();
        let module = match naga::front::wgsl::parse_str(&source) {
            Ok(module) => module,
            Err(e) => {
                failures.push(format!(
                    "{name}: parse error\n{}",
                    e.emit_to_string(&source)
                ));
                continue;
            }
        };
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        );
        if let Err(e) = validator.validate(&module) {
            failures.push(format!(
                "{name}: validation error\n{}",
                e.emit_to_string(&source)
            ));
            continue;
        }
        if !module
            .entry_points
            .iter()
            .any(|ep| ep.stage == naga::ShaderStage::Compute)
        {
            failures.push(format!("{name}: no compute entry point"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The runtime embeds the files it validates here, not stale copies.
#[cfg(feature = "gpu")]
#[test]
fn embedded_shaders_are_the_files_on_disk() {
    let on_disk = std::fs::read_to_string(shader_dir().join("gray.wgsl")).expect("gray.wgsl");
    assert_eq!(sextant_runtime::gpu::GRAY_WGSL, on_disk);
}
