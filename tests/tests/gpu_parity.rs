//! The GPU path against the CPU on simulator renders: every pixel format gives the same
//! keypoints, patches and int8 descriptors on both backends, matching between two frames gives
//! the same matches, and a map built on the GPU is the same file as one built on the CPU.
//!
//! Runs on whatever Vulkan adapter exists (lavapipe in CI). Without one each test prints a loud
//! skip, or fails when `SEXTANT_REQUIRE_GPU=1`.

mod common;

use sextant_runtime::backend::{Backend, BackendKind, Selection, select};
use sextant_runtime::descriptor::{DESCRIPTOR_DIM, DescriptorModel};
use sextant_runtime::features::{
    DescriptorSet, FeatureConfig, FeaturePipeline, MatchConfig, Matcher,
};
use sextant_runtime::gpu::GpuMatcher;
use sextant_runtime::map::{MapBuildConfig, MapBuilder, encode_map};
use sextant_runtime::{Camera, PixelFormat};
use sextant_sim::encode::encode;
use sextant_sim::{Capture, Capturer, Photometric, Scene, TrajectorySpec};

fn camera() -> Camera {
    Camera::pinhole(640, 480, 500.0, 500.0, 320.0, 240.0).expect("camera")
}

fn renders(scene: &str, trajectory: &str, photometric: &Photometric) -> Vec<Capture> {
    let scene = Scene::open(scene).expect("scene");
    let cam = camera();
    let traj = trajectory
        .parse::<TrajectorySpec>()
        .expect("trajectory")
        .generate(&scene, &cam, 3)
        .expect("generate");
    let mut capturer = Capturer::new(&cam);
    traj.poses
        .iter()
        .enumerate()
        .map(|(i, p)| capturer.capture(&scene, p, photometric, 3, i as u64))
        .collect()
}

/// The GPU selection, or `None` (after a loud skip) when there is no adapter.
fn gpu_or_skip(test: &str) -> Option<Selection> {
    match select(Backend::Gpu) {
        Ok(s) => Some(s),
        Err(e) if std::env::var("SEXTANT_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("SEXTANT_REQUIRE_GPU=1 but no usable GPU: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: no GPU ({e})");
            None
        }
    }
}

const FORMATS: [PixelFormat; 5] = [
    PixelFormat::Gray8,
    PixelFormat::Nv12,
    PixelFormat::Nv21,
    PixelFormat::Rgba8,
    PixelFormat::Bgra8,
];

#[test]
fn renders_in_every_pixel_format_give_the_same_features_and_matches() {
    let Some(gpu_selection) = gpu_or_skip("renders_in_every_pixel_format") else {
        return;
    };
    let model = DescriptorModel::embedded_default().expect("model");
    let config = FeatureConfig::default();
    let mut cpu = FeaturePipeline::new(config.clone(), model.clone()).expect("cpu");
    let mut gpu =
        FeaturePipeline::with_selection(config, model, gpu_selection.clone()).expect("gpu");
    // A textured room and the plaza at dusk (darker, noisier).
    let mut frames = renders("room", "walk:frames=2", &Photometric::nominal());
    frames.extend(renders(
        "plaza",
        "walk:frames=2,height=1.5",
        &Photometric::dusk(),
    ));
    let mut descriptors = Vec::new();
    for (k, c) in frames.iter().enumerate() {
        for format in FORMATS {
            let enc = encode(&c.rgb, format).expect("encode");
            let frame = enc.as_frame().expect("frame");
            let a = cpu.extract(&frame).expect("cpu extract");
            let (kp, patches, desc) = (
                a.keypoints.to_vec(),
                a.patches.to_vec(),
                a.descriptors.to_vec(),
            );
            let b = gpu.extract(&frame).expect("gpu extract");
            assert!(
                kp.len() > 300,
                "frame {k} {format:?}: {} keypoints",
                kp.len()
            );
            assert_eq!(b.keypoints, &kp[..], "frame {k} {format:?}: keypoints");
            assert_eq!(b.patches, &patches[..], "frame {k} {format:?}: patches");
            assert_eq!(
                b.descriptors,
                &desc[..],
                "frame {k} {format:?}: descriptors"
            );
            let s = b.backends;
            assert_eq!(
                (s.gray, s.keypoints, s.patches, s.descriptors, s.fell_back),
                (
                    BackendKind::Gpu,
                    BackendKind::Gpu,
                    BackendKind::Gpu,
                    BackendKind::Gpu,
                    false
                ),
                "frame {k} {format:?}"
            );
            if format == PixelFormat::Rgba8 {
                descriptors.push(desc);
            }
        }
    }
    // Frame-to-frame matching of consecutive views, both ways round.
    let ctx = gpu_selection.gpu_context().expect("context");
    let mut gm = GpuMatcher::new(ctx, MatchConfig::default()).expect("gpu matcher");
    let mut cm = Matcher::new(MatchConfig::default()).expect("matcher");
    for pair in descriptors.windows(2) {
        let q = DescriptorSet::new(&pair[0], DESCRIPTOR_DIM).expect("q");
        let t = DescriptorSet::new(&pair[1], DESCRIPTOR_DIM).expect("t");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        cm.match_sets(&q, &t, &mut a).expect("cpu match");
        gm.match_sets(&q, &t, &mut b).expect("gpu match");
        assert_eq!(a, b);
    }
}

#[test]
fn a_map_built_on_the_gpu_is_the_map_built_on_the_cpu() {
    if gpu_or_skip("a_map_built_on_the_gpu").is_none() {
        return;
    }
    let cam = camera();
    let frames = renders("room", "walk:frames=6", &Photometric::nominal());
    let build = |backend: Backend| {
        let config = MapBuildConfig {
            backend,
            ..MapBuildConfig::default()
        };
        let model = DescriptorModel::embedded_default().expect("model");
        let mut builder = MapBuilder::new(config, model).expect("builder");
        for c in &frames {
            common::add_capture(&mut builder, &cam, c);
        }
        let (contents, _) = builder.build().expect("build");
        encode_map(&contents).expect("encode")
    };
    let (cpu, gpu) = (build(Backend::Cpu), build(Backend::Gpu));
    assert!(cpu.len() > 10_000, "{} bytes", cpu.len());
    assert!(
        cpu == gpu,
        "the GPU-built map differs from the CPU-built one"
    );
}
