//! Localisation latency on a large map (criterion, one thread): cold start with a GPS-like
//! prior and tracking with a VIO-like prior, on 640×480 frames against a map of ≥ 50,000
//! landmarks built from simulator renders of the plaza scene.
//!
//! The map takes minutes to build, so it is cached in `target/sextant-bench/` (keyed by the
//! descriptor model, the frame counts and the keypoints) and rebuilt only when missing or
//! invalid. Besides criterion's per-iteration estimates, the bench prints p50/p95 over three
//! passes through every query frame — the figures README quotes. `SEXTANT_BENCH_BACKEND=gpu`
//! runs the features and descriptors on the GPU.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use nalgebra::Vector3;
use sextant_runtime::backend::Backend;
use sextant_runtime::clock::thread_cpu_seconds;
use sextant_runtime::descriptor::DescriptorModel;
use sextant_runtime::features::FeatureConfig;
use sextant_runtime::localize::{Localization, Localizer, LocalizerConfig, Mode, Prior, Query};
use sextant_runtime::map::{Map, MapBuildConfig, MapBuilder, encode_map};
use sextant_runtime::{Camera, GrayImage, Pose};
use sextant_sim::encode::rgb_to_gray;
use sextant_sim::{Capturer, Photometric, Scene, TrajectorySpec};

const MAP_FRAMES: usize = 200;
const KEYPOINTS: usize = 3000;
/// Names the keypoint detector's arithmetic in the cache key: bump it when the detector's
/// output changes, so a map cached by an older detector is rebuilt (its settings are in the key
/// as well).
const DETECTOR: &str = "st-int";

fn camera() -> Camera {
    Camera::pinhole(640, 480, 500.0, 500.0, 320.0, 240.0).expect("camera")
}

fn cache_path(model: &DescriptorModel) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let f = FeatureConfig::localization();
    target.join("sextant-bench").join(format!(
        "plaza-{MAP_FRAMES}x2-{KEYPOINTS}kp-{DETECTOR}-L{}s{}g{}c{}-{}.sxmap",
        f.levels,
        f.scale_factor,
        f.grid_cell,
        f.cells_per_keypoint,
        &model.info().sha256[..16]
    ))
}

fn build_map(model: &DescriptorModel) -> Map {
    let path = cache_path(model);
    if let Ok(map) = Map::open(&path) {
        return map;
    }
    eprintln!(
        "building the bench map (once; cached in {})",
        path.display()
    );
    let t = Instant::now();
    let scene = Scene::open("plaza").expect("scene");
    let cam = camera();
    let config = MapBuildConfig {
        features: FeatureConfig {
            max_keypoints: KEYPOINTS,
            ..FeatureConfig::localization()
        },
        ..MapBuildConfig::default()
    };
    let mut builder = MapBuilder::new(config, model.clone()).expect("builder");
    let mut capturer = Capturer::new(&cam);
    for (spec, seed) in [
        (format!("orbit:frames={MAP_FRAMES},radius=9"), 1),
        (format!("walk:frames={MAP_FRAMES}"), 2),
    ] {
        let traj = spec
            .parse::<TrajectorySpec>()
            .expect("trajectory")
            .generate(&scene, &cam, seed)
            .expect("generate");
        for (i, pose) in traj.poses.iter().enumerate() {
            let c = capturer.capture(&scene, pose, &Photometric::nominal(), seed, i as u64);
            common::add_capture(&mut builder, &cam, &c);
        }
    }
    let (contents, _) = builder.build().expect("build");
    let bytes = encode_map(&contents).expect("encode");
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&path, &bytes);
    eprintln!(
        "built {} landmarks in {:.0} s",
        contents.landmarks.len(),
        t.elapsed().as_secs_f64()
    );
    Map::from_bytes(&bytes).expect("map")
}

struct QueryFrame {
    gray: GrayImage,
    pose: Pose,
}

fn queries() -> Vec<QueryFrame> {
    let scene = Scene::open("plaza").expect("scene");
    let cam = camera();
    let traj = "walk:frames=24,height=1.5,head_deg=6"
        .parse::<TrajectorySpec>()
        .expect("trajectory")
        .generate(&scene, &cam, 9)
        .expect("generate");
    let mut capturer = Capturer::new(&cam);
    traj.poses
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let c = capturer.capture(&scene, p, &Photometric::nominal(), 9, i as u64);
            QueryFrame {
                gray: rgb_to_gray(&c.rgb),
                pose: c.pose,
            }
        })
        .collect()
}

/// The prior of each path for a query frame.
fn prior(q: &QueryFrame, tracking: bool) -> Prior {
    if tracking {
        // VIO-like: the true pose a few centimetres off.
        let c = q.pose.center().coords + Vector3::new(0.04, -0.03, 0.02);
        let r = *q.pose.rotation();
        Prior::Pose(Pose::from_parts(r, -(r * c)))
    } else {
        Prior::Position {
            position: q.pose.center().coords + Vector3::new(7.0, -5.0, 1.0),
            sigma_m: 10.0,
        }
    }
}

fn run(loc: &mut Localizer, q: &QueryFrame, tracking: bool) -> Localization {
    let frame = sextant_runtime::Frame::new(
        sextant_runtime::PixelFormat::Gray8,
        640,
        480,
        640,
        q.gray.as_slice(),
    )
    .expect("frame");
    loc.localize(&Query {
        frame: &frame,
        camera: &camera(),
        gravity: Some(q.pose.transform_vector(&Vector3::z())),
        prior: prior(q, tracking),
    })
    .expect("localize")
}

/// The median of `v` (sorted in place), milliseconds from seconds.
fn median_ms(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2] * 1e3
}

/// The 95th percentile of `v` (sorted in place), milliseconds from seconds.
fn p95_ms(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * 0.95).round() as usize] * 1e3
}

fn bench(c: &mut Criterion) {
    let model = DescriptorModel::embedded_default().expect("model");
    let map = Arc::new(build_map(&model));
    let qs = queries();
    // SEXTANT_BENCH_BACKEND=gpu (or auto) runs the features on the GPU.
    let backend = match std::env::var("SEXTANT_BENCH_BACKEND").as_deref() {
        Ok("gpu") => Backend::Gpu,
        Ok("auto") => Backend::Auto,
        _ => Backend::Cpu,
    };
    let config = LocalizerConfig {
        backend,
        ..LocalizerConfig::default()
    };
    let mut loc = Localizer::new(Arc::clone(&map), model, config).expect("localizer");
    eprintln!("backend: {}", loc.selection().reason());
    eprintln!(
        "map: {} landmarks, {} keyframes, {} bytes ({:.1} B/landmark)",
        map.len(),
        map.keyframes().len(),
        map.bytes().len(),
        map.bytes().len() as f64 / map.len().max(1) as f64
    );
    for (name, tracking) in [("cold_start", false), ("tracking", true)] {
        // Percentiles over three passes through all query frames.
        let mut ms = Vec::new();
        let mut cpu_ms = Vec::new();
        let mut stages: [Vec<f64>; 5] = Default::default();
        let mut ok = 0;
        let mut fallbacks = 0;
        for _ in 0..3 {
            for q in &qs {
                let (t, c) = (Instant::now(), thread_cpu_seconds());
                let r = run(&mut loc, q, tracking);
                ms.push(t.elapsed().as_secs_f64() * 1e3);
                if let (Some(c0), Some(c1)) = (c, thread_cpu_seconds()) {
                    cpu_ms.push((c1 - c0) * 1e3);
                }
                ok += usize::from(r.outcome.is_ok());
                fallbacks += usize::from(r.mode == Mode::TrackingThenColdStart);
                let s = r.timings;
                for (v, x) in stages.iter_mut().zip([
                    s.features_s,
                    s.describe_s,
                    s.retrieval_s,
                    s.matching_s,
                    s.solve_s,
                ]) {
                    v.push(x);
                }
            }
        }
        let [f, d, r, m, s] = &mut stages;
        eprintln!(
            "{name} stage medians: features {:.2} ms, describe {:.2} ms, retrieval {:.2} ms, \
             matching {:.2} ms, solve {:.2} ms",
            median_ms(f),
            median_ms(d),
            median_ms(r),
            median_ms(m),
            median_ms(s)
        );
        eprintln!(
            "{name} stage p95: features {:.2} ms, describe {:.2} ms, retrieval {:.2} ms, \
             matching {:.2} ms, solve {:.2} ms; fell back to cold start {fallbacks} times",
            p95_ms(f),
            p95_ms(d),
            p95_ms(r),
            p95_ms(m),
            p95_ms(s)
        );
        ms.sort_by(f64::total_cmp);
        cpu_ms.sort_by(f64::total_cmp);
        let pct = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        eprintln!(
            "{name}: p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms; localised {ok} of {}",
            pct(&ms, 0.5),
            pct(&ms, 0.95),
            pct(&ms, 1.0),
            ms.len()
        );
        if !cpu_ms.is_empty() {
            eprintln!(
                "{name}, thread CPU time (not counting time other processes held the core): \
                 p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
                pct(&cpu_ms, 0.5),
                pct(&cpu_ms, 0.95),
                pct(&cpu_ms, 1.0)
            );
        }
        c.bench_function(&format!("localize_640x480_{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for i in 0..iters as usize {
                    let q = &qs[i % qs.len()];
                    let t = Instant::now();
                    black_box(run(&mut loc, q, tracking).outcome.is_ok());
                    total += t.elapsed();
                }
                total
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(8));
    targets = bench
}
criterion_main!(benches);
