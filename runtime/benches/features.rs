//! Criterion benches: feature extraction (640×480, 1000 keypoints) and brute-force matching
//! (1000 × 50,000 int8 descriptors) per kernel, single thread.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sextant_runtime::features::homography::{SplitMix64, gaussian_blur};
use sextant_runtime::features::{
    DescriptorSet, FeatureConfig, FeatureExtractor, FeaturePipeline, Kernel, MatchConfig, Matcher,
};
use sextant_runtime::{Frame, GrayImage, PixelFormat};

fn textured(w: u32, h: u32) -> GrayImage {
    let mut rng = SplitMix64::new(1);
    let mut g = GrayImage::new(w, h);
    for v in g.as_mut_slice() {
        *v = (rng.next_u64() % 256) as u8;
    }
    gaussian_blur(&g, 1.5)
}

fn extraction(c: &mut Criterion) {
    let g = textured(640, 480);
    let rgba: Vec<u8> = g.as_slice().iter().flat_map(|&v| [v, v, v, 255]).collect();
    let mut ex = FeatureExtractor::new(FeatureConfig::default()).expect("config");
    c.bench_function("extract_640x480_1000kp_gray8", |b| {
        let frame = Frame::new(PixelFormat::Gray8, 640, 480, 640, g.as_slice()).expect("frame");
        b.iter(|| black_box(ex.extract(&frame).expect("extract").keypoints.len()))
    });
    c.bench_function("extract_640x480_1000kp_rgba8", |b| {
        let frame = Frame::new(PixelFormat::Rgba8, 640, 480, 640 * 4, &rgba).expect("frame");
        b.iter(|| black_box(ex.extract(&frame).expect("extract").keypoints.len()))
    });
    // The whole pipeline with the embedded descriptor model, when it loads.
    match sextant_runtime::descriptor::DescriptorModel::embedded_default() {
        Ok(model) => {
            let mut p = FeaturePipeline::new(FeatureConfig::default(), model).expect("pipeline");
            c.bench_function("extract_describe_640x480_1000kp_gray8", |b| {
                let frame =
                    Frame::new(PixelFormat::Gray8, 640, 480, 640, g.as_slice()).expect("frame");
                b.iter(|| black_box(p.extract(&frame).expect("extract").descriptors.len()))
            });
        }
        Err(e) => eprintln!("descriptor model unavailable, skipping the full-pipeline bench: {e}"),
    }
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("match_1000x50000");
    group.sample_size(10);
    for dim in [64usize, 128] {
        let mut rng = SplitMix64::new(2);
        let train: Vec<i8> = (0..50_000 * dim).map(|_| rng.next_u64() as i8).collect();
        let query: Vec<i8> = (0..1000 * dim).map(|_| rng.next_u64() as i8).collect();
        let (q, t) = (
            DescriptorSet::new(&query, dim).expect("q"),
            DescriptorSet::new(&train, dim).expect("t"),
        );
        for kernel in Kernel::ALL
            .into_iter()
            .filter(|k| k.is_supported() && *k != Kernel::Scalar)
        {
            let mut m = Matcher::with_kernel(MatchConfig::default(), kernel).expect("kernel");
            let mut out = Vec::new();
            group.bench_function(format!("{}_d{dim}", kernel.name()), |b| {
                b.iter(|| {
                    m.match_sets(&q, &t, &mut out).expect("match");
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, extraction, matching);
criterion_main!(benches);
