//! Criterion benches: each stage the GPU path implements, on both backends, single thread on the
//! CPU side:
//!
//! - `gray/{cpu,gpu}`: 640×480 RGBA8 → gray;
//! - `describe_1000/{cpu,gpu}`: the embedded descriptor model on 1000 patches (upload, every
//!   dispatch, readback);
//! - `match_1000x10000_d64/{cpu,gpu}`: brute-force matching, ratio test and mutual check;
//! - `detect_640x480/{cpu,gpu}`: the detector's first stage — pyramid, corner response and local
//!   maxima of every level (on the GPU: upload, one submission, candidate readback);
//! - `keypoints_patches_640x480_1000kp/{cpu,gpu}`: keypoints and patches without descriptors (on
//!   the GPU: all three round trips, patches sampled on the GPU and read back);
//! - `pipeline_640x480_1000kp/{cpu,gpu}`: the whole `FeaturePipeline` from an RGBA8 frame (on the
//!   GPU every stage runs there, patches go straight into the descriptor plan).
//!
//! The GPU benches run on the first adapter of the platform's primary backends and are skipped
//! (with a message) without one. On a software adapter (Mesa's lavapipe) the GPU figures only show
//! that the path works: lavapipe runs the shaders on the CPU and is no faster than the CPU kernels.
//!
//! `cargo bench -p sextant-runtime --bench gpu -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sextant_runtime::backend::{Backend, BackendKind, select_on};
use sextant_runtime::descriptor::{DESCRIPTOR_DIM, DescriptorModel};
use sextant_runtime::features::homography::{SplitMix64, gaussian_blur};
use sextant_runtime::features::{
    DescriptorSet, FeatureConfig, FeatureExtractor, FeaturePipeline, MatchConfig, Matcher,
};
use sextant_runtime::gpu::{GpuContext, GpuDescriptor, GpuKeypoints, GpuMatcher, GrayConverter};
use sextant_runtime::{Frame, GrayImage, PixelFormat};

fn textured(w: u32, h: u32) -> GrayImage {
    let mut rng = SplitMix64::new(1);
    let mut g = GrayImage::new(w, h);
    for v in g.as_mut_slice() {
        *v = (rng.next_u64() % 256) as u8;
    }
    gaussian_blur(&g, 1.5)
}

fn context() -> Option<GpuContext> {
    match GpuContext::new(wgpu::Backends::PRIMARY) {
        Ok(ctx) => {
            eprintln!(
                "GPU benches on {:?} ({:?}, {:?}){}",
                ctx.adapter_info().name,
                ctx.adapter_info().backend,
                ctx.adapter_info().device_type,
                if ctx.is_software() {
                    " — a SOFTWARE adapter: its figures only show that the path works"
                } else {
                    ""
                }
            );
            Some(ctx)
        }
        Err(e) => {
            eprintln!("no GPU adapter, GPU benches skipped: {e}");
            None
        }
    }
}

fn stages(c: &mut Criterion) {
    let ctx = context();
    let g = textured(640, 480);
    let rgba: Vec<u8> = g.as_slice().iter().flat_map(|&v| [v, v, v, 255]).collect();
    let frame = Frame::new(PixelFormat::Rgba8, 640, 480, 640 * 4, &rgba).expect("frame");

    // Gray conversion.
    let mut group = c.benchmark_group("gray_640x480_rgba8");
    let mut out = GrayImage::new(640, 480);
    group.bench_function("cpu", |b| {
        b.iter(|| frame.to_gray_into(black_box(&mut out)))
    });
    if let Some(ctx) = &ctx {
        let mut gray = GrayConverter::new(ctx).expect("gray kernel");
        group.bench_function("gpu", |b| {
            b.iter(|| {
                gray.convert_into(&frame, black_box(&mut out))
                    .expect("gpu gray")
            })
        });
    }
    group.finish();

    // The detector's first stage: pyramid, response, maxima.
    let config = FeatureConfig::default();
    let mut group = c.benchmark_group("detect_640x480");
    group.sample_size(20);
    let mut ex = FeatureExtractor::new(config.clone()).expect("config");
    let cpu_count = ex.detect_candidates(&g);
    group.bench_function("cpu", |b| b.iter(|| black_box(ex.detect_candidates(&g))));
    let mut gpu_keypoints = ctx
        .as_ref()
        .map(|ctx| GpuKeypoints::new(ctx, &config).expect("gpu keypoints"));
    if let Some(gk) = &mut gpu_keypoints {
        assert_eq!(gk.detect_candidates(&g).expect("gpu"), cpu_count);
        group.bench_function("gpu", |b| {
            b.iter(|| black_box(gk.detect_candidates(&g).expect("gpu")))
        });
    }
    group.finish();

    // Keypoints and patches (no descriptors).
    let mut group = c.benchmark_group("keypoints_patches_640x480_1000kp");
    group.sample_size(10);
    let want = ex.extract_gray(&g).expect("extract").keypoints.to_vec();
    group.bench_function("cpu", |b| {
        b.iter(|| black_box(ex.extract_gray(&g).expect("extract").keypoints.len()))
    });
    if let Some(gk) = &mut gpu_keypoints {
        let (mut kps, mut patches) = (Vec::new(), Vec::new());
        gk.extract_gray(&g, &mut kps, &mut patches).expect("gpu");
        assert_eq!(kps, want, "GPU and CPU keypoints differ");
        group.bench_function("gpu", |b| {
            b.iter(|| {
                gk.extract_gray(&g, &mut kps, &mut patches).expect("gpu");
                black_box(kps.len())
            })
        });
    }
    group.finish();

    // Descriptors of 1000 real keypoint patches.
    let mut ex = FeatureExtractor::new(FeatureConfig::default()).expect("config");
    let patches = ex.extract_gray(&g).expect("extract").patches.to_vec();
    let n = patches.len() / sextant_runtime::descriptor::PATCH_PIXELS;
    let mut model = DescriptorModel::embedded_default().expect("model");
    let mut desc = vec![0i8; n * DESCRIPTOR_DIM];
    let mut group = c.benchmark_group(format!("describe_{n}"));
    group.sample_size(10);
    group.bench_function("cpu", |b| {
        b.iter(|| {
            model
                .describe(&patches, n, black_box(&mut desc))
                .expect("cpu")
        })
    });
    if let Some(ctx) = &ctx {
        let mut gpu = GpuDescriptor::from_model(ctx, &model).expect("gpu descriptor");
        let mut gdesc = vec![0i8; n * DESCRIPTOR_DIM];
        gpu.describe(&patches, n, &mut gdesc).expect("gpu");
        assert_eq!(gdesc, desc, "GPU and CPU descriptors differ");
        group.bench_function("gpu", |b| {
            b.iter(|| {
                gpu.describe(&patches, n, black_box(&mut gdesc))
                    .expect("gpu")
            })
        });
    }
    group.finish();

    // Matching.
    let dim = 64;
    let mut rng = SplitMix64::new(2);
    let train: Vec<i8> = (0..10_000 * dim).map(|_| rng.next_u64() as i8).collect();
    let query: Vec<i8> = (0..1000 * dim).map(|_| rng.next_u64() as i8).collect();
    let q = DescriptorSet::new(&query, dim).expect("q");
    let t = DescriptorSet::new(&train, dim).expect("t");
    let mut group = c.benchmark_group("match_1000x10000_d64");
    group.sample_size(10);
    let mut cpu = Matcher::new(MatchConfig::default()).expect("matcher");
    let mut matches = Vec::new();
    group.bench_function("cpu", |b| {
        b.iter(|| {
            cpu.match_sets(&q, &t, black_box(&mut matches))
                .expect("cpu")
        })
    });
    if let Some(ctx) = &ctx {
        let mut gpu = GpuMatcher::new(ctx, MatchConfig::default()).expect("gpu matcher");
        let mut gm = Vec::new();
        gpu.match_sets(&q, &t, &mut gm).expect("gpu");
        assert_eq!(gm, matches, "GPU and CPU matches differ");
        group.bench_function("gpu", |b| {
            b.iter(|| gpu.match_sets(&q, &t, black_box(&mut gm)).expect("gpu"))
        });
    }
    group.finish();

    // The whole pipeline.
    let mut group = c.benchmark_group("pipeline_640x480_1000kp");
    group.sample_size(10);
    let model = DescriptorModel::embedded_default().expect("model");
    let mut p = FeaturePipeline::new(FeatureConfig::default(), model.clone()).expect("pipeline");
    group.bench_function("cpu", |b| {
        b.iter(|| black_box(p.extract(&frame).expect("extract").descriptors.len()))
    });
    if let Some(ctx) = &ctx {
        let selection = select_on(Backend::Gpu, Ok(ctx.clone())).expect("gpu selection");
        let mut p = FeaturePipeline::with_selection(FeatureConfig::default(), model, selection)
            .expect("gpu pipeline");
        let f = p.extract(&frame).expect("extract");
        assert_eq!(f.backends.descriptors, BackendKind::Gpu);
        assert_eq!(f.backends.keypoints, BackendKind::Gpu);
        assert_eq!(f.backends.patches, BackendKind::Gpu);
        group.bench_function("gpu", |b| {
            b.iter(|| black_box(p.extract(&frame).expect("extract").descriptors.len()))
        });
    }
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
