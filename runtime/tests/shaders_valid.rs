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

/// The runtime embeds the files it validates here, not stale copies, and every file on disk is
/// embedded.
#[cfg(feature = "gpu")]
#[test]
fn embedded_shaders_are_the_files_on_disk() {
    for (name, source) in sextant_runtime::gpu::SHADERS {
        let on_disk = std::fs::read_to_string(shader_dir().join(name))
            .unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
        assert_eq!(source, on_disk, "{name}");
    }
    let embedded: Vec<String> = sextant_runtime::gpu::SHADERS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    for path in wgsl_files() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        assert!(
            name.as_ref().is_some_and(|n| embedded.contains(n)),
            "{} is not embedded in the runtime (gpu::SHADERS)",
            path.display()
        );
    }
}

/// The portable variant of the packed dot product (what runs where `dot4I8Packed` is missing)
/// validates too, and really removes the built-in.
#[cfg(feature = "gpu")]
#[test]
fn portable_dot4_variants_validate() {
    for (name, source) in sextant_runtime::gpu::SHADERS {
        let portable = sextant_runtime::gpu::with_dot4(source, false);
        assert!(!portable.contains("dot4I8Packed(a, b)"), "{name}");
        let module = naga::front::wgsl::parse_str(&portable)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&portable)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&portable)));
    }
}

/// Every shader the GPU path needs is on disk (a renamed or deleted file is caught here, not only
/// as a failed `include_str!`), and each states its per-invocation loop budget (llvmpipe silently
/// stops an invocation after 65,535 loop iterations).
#[test]
fn gpu_shaders_are_present_and_state_their_loop_budget() {
    let files = wgsl_files();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for want in [
        "gray.wgsl",
        "detect.wgsl",
        "descriptor.wgsl",
        "matching.wgsl",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from shaders/"
        );
    }
    for path in &files {
        let source = std::fs::read_to_string(path).expect("readable shader");
        assert!(
            source.contains("Loop budget"),
            "{} does not state its loop budget",
            path.display()
        );
    }
}
