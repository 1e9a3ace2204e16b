//! The GPU keypoint front end (`shaders/detect.wgsl`, `gpu::GpuKeypoints`) against the CPU
//! reference, for equality, not closeness:
//!
//! - pyramid levels byte for byte and the corner response bit for bit (border zeros included) on
//!   real photos, sim-like textures and edge cases: tiny (7×7, 6×9) and odd sizes, constant
//!   images, and a maximum-contrast checkerboard that drives the response's discriminant `D` to
//!   its largest values;
//! - the whole `FeaturePipeline` on `Backend::Gpu` against `Backend::Cpu`: identical keypoints
//!   (every field), patches and descriptors for real photos in every pixel format, with every
//!   stage reported on the GPU;
//! - after warm-up, frames of a size already seen allocate no GPU buffer.
//!
//! Without a GPU adapter these tests print `SKIPPED: …` and pass, unless `SEXTANT_REQUIRE_GPU=1`.

#![cfg(feature = "gpu")]

use std::error::Error;

use sextant_runtime::backend::{Backend, BackendKind, StageBackends, select_on};
use sextant_runtime::descriptor::DescriptorModel;
use sextant_runtime::features::homography::{SplitMix64, gaussian_blur};
use sextant_runtime::features::{
    FeatureConfig, FeatureExtractor, FeaturePipeline, Keypoint, corner_response, pyramid_levels,
};
use sextant_runtime::gpu::{GpuKeypoints, test_support};
use sextant_runtime::{Frame, GrayImage, PixelFormat};

mod common {
    pub mod photos;
}
use common::photos::photo;

type TestResult = Result<(), Box<dyn Error>>;

fn noise(w: u32, h: u32, seed: u64, sigma: f64) -> GrayImage {
    let mut rng = SplitMix64::new(seed);
    let mut g = GrayImage::new(w, h);
    for v in g.as_mut_slice() {
        *v = (rng.next_u64() % 256) as u8;
    }
    if sigma > 0.0 {
        gaussian_blur(&g, sigma)
    } else {
        g
    }
}

fn checkerboard(w: u32, h: u32, cell: u32) -> GrayImage {
    let data = (0..w * h)
        .map(|i| {
            if ((i % w) / cell + (i / w) / cell).is_multiple_of(2) {
                0
            } else {
                255
            }
        })
        .collect();
    GrayImage::from_vec(w, h, data).expect("size")
}

/// Compares the GPU pyramid and response of `g` with the CPU's, failing with the first
/// difference.
fn assert_front_end_matches(gpu: &mut GpuKeypoints, g: &GrayImage, what: &str) -> TestResult {
    let cpu_levels = pyramid_levels(g, gpu.config())?;
    let (levels, responses) = gpu.pyramid_and_response(g)?;
    assert_eq!(levels.len(), cpu_levels.len(), "{what}: level count");
    for (l, (a, b)) in levels.iter().zip(&cpu_levels).enumerate() {
        assert_eq!(
            (a.width(), a.height()),
            (b.width(), b.height()),
            "{what}: level {l} size"
        );
        if let Some(i) = (0..a.as_slice().len()).find(|&i| a.as_slice()[i] != b.as_slice()[i]) {
            panic!(
                "{what}: level {l} ({}x{}) pixel {i}: gpu {} cpu {}",
                a.width(),
                a.height(),
                a.as_slice()[i],
                b.as_slice()[i]
            );
        }
        let want = corner_response(b);
        let got = &responses[l];
        assert_eq!(got.len(), want.len(), "{what}: level {l} response size");
        if let Some(i) = (0..want.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            let w = b.width() as usize;
            panic!(
                "{what}: level {l} response at (x {}, y {}): gpu {} cpu {} ({} of {} differ)",
                i % w,
                i / w,
                got[i],
                want[i],
                (0..want.len())
                    .filter(|&i| got[i].to_bits() != want[i].to_bits())
                    .count(),
                want.len()
            );
        }
    }
    Ok(())
}

#[test]
fn gpu_pyramid_and_response_equal_the_cpu_on_photos_and_textures() -> TestResult {
    let Some(ctx) = test_support::context_or_skip(
        "gpu_pyramid_and_response_equal_the_cpu_on_photos_and_textures",
    )?
    else {
        return Ok(());
    };
    let mut gpu = GpuKeypoints::new(&ctx, &FeatureConfig::default())?;
    let mut cpu = FeatureExtractor::new(FeatureConfig::default())?;
    for name in ["coffee", "chelsea", "brick", "grass"] {
        let g = photo(name);
        assert_front_end_matches(&mut gpu, &g, name)?;
        // The same local maxima, counted over all levels.
        assert_eq!(
            gpu.detect_candidates(&g)?,
            cpu.detect_candidates(&g),
            "{name}"
        );
        // The GPU front end's own entry points (no descriptors) equal the CPU extractor.
        let (mut kps, mut patches) = (Vec::new(), Vec::new());
        gpu.extract_gray(&g, &mut kps, &mut patches)?;
        let want = cpu.extract_gray(&g)?;
        assert_same_keypoints(&kps, want.keypoints, name);
        assert!(patches == want.patches, "{name}: patches differ");
    }
    // Sim-like textures: blurred noise at two scales, and raw noise (the largest gradients of
    // natural-ish content).
    assert_front_end_matches(&mut gpu, &noise(640, 480, 1, 1.5), "blurred noise 640x480")?;
    assert_front_end_matches(&mut gpu, &noise(333, 257, 2, 0.7), "blurred noise 333x257")?;
    assert_front_end_matches(&mut gpu, &noise(101, 77, 3, 0.0), "raw noise 101x77")?;
    Ok(())
}

#[test]
fn gpu_pyramid_and_response_equal_the_cpu_on_edge_cases() -> TestResult {
    let Some(ctx) =
        test_support::context_or_skip("gpu_pyramid_and_response_equal_the_cpu_on_edge_cases")?
    else {
        return Ok(());
    };
    let mut gpu = GpuKeypoints::new(&ctx, &FeatureConfig::default())?;
    let cases = [
        ("7x7 noise", noise(7, 7, 4, 0.0)),
        ("6x9 noise (no response)", noise(6, 9, 5, 0.0)),
        ("1x1", noise(1, 1, 6, 0.0)),
        ("odd 41x43 noise", noise(41, 43, 7, 0.0)),
        ("odd 257x131 noise", noise(257, 131, 8, 0.5)),
        ("constant 0", GrayImage::from_vec(64, 48, vec![0; 64 * 48])?),
        (
            "constant 255",
            GrayImage::from_vec(97, 61, vec![255; 97 * 61])?,
        ),
        // One-pixel cells: |gx| = |gy| = 0 but diagonal products; two-pixel cells give Sobel
        // gradients of ±1020 with large cross terms: the largest discriminants.
        ("checkerboard 1", checkerboard(64, 64, 1)),
        ("checkerboard 2", checkerboard(80, 72, 2)),
        ("checkerboard 3", checkerboard(123, 97, 3)),
        ("checkerboard 7", checkerboard(200, 150, 7)),
    ];
    for (what, g) in &cases {
        assert_front_end_matches(&mut gpu, g, what)?;
    }
    // A frame of each size again, in reverse order: smaller frames after larger ones must not
    // see stale data.
    for (what, g) in cases.iter().rev() {
        assert_front_end_matches(&mut gpu, g, what)?;
    }
    Ok(())
}

/// 1920×1080: two million pixels per level-0 dispatch. A kernel that looped over the image in one
/// invocation would stop (silently, with wrong output) after 65,535 iterations on llvmpipe; these
/// loop at most a few hundred times per invocation whatever the size.
#[test]
fn gpu_front_end_at_1080p_crosses_the_llvmpipe_loop_cap() -> TestResult {
    let Some(ctx) =
        test_support::context_or_skip("gpu_front_end_at_1080p_crosses_the_llvmpipe_loop_cap")?
    else {
        return Ok(());
    };
    let config = FeatureConfig {
        max_keypoints: 3000,
        ..Default::default()
    };
    let mut gpu = GpuKeypoints::new(&ctx, &config)?;
    let g = noise(1920, 1080, 30, 2.0);
    assert_front_end_matches(&mut gpu, &g, "1080p")?;
    let (mut kps, mut patches) = (Vec::new(), Vec::new());
    gpu.extract_gray(&g, &mut kps, &mut patches)?;
    let mut cpu = FeatureExtractor::new(config)?;
    let want = cpu.extract_gray(&g)?;
    assert_eq!(kps.len(), 3000);
    assert_same_keypoints(&kps, want.keypoints, "1080p");
    assert!(patches == want.patches, "1080p: patches differ");
    Ok(())
}

/// A camera frame of `format` holding the gray image `g` (every colour channel equal, so the
/// luma is `g` again), with a padded row stride; for NV12/NV21 an arbitrary chroma plane.
fn frame_bytes(g: &GrayImage, format: PixelFormat) -> (Vec<u8>, usize) {
    let (w, h) = (g.width() as usize, g.height() as usize);
    let bpp = format.bytes_per_pixel();
    let stride = w * bpp + 12;
    let mut data = vec![0u8; stride * h];
    for y in 0..h {
        for x in 0..w {
            let v = g.as_slice()[y * w + x];
            let px = &mut data[y * stride + x * bpp..][..bpp];
            if bpp == 1 {
                px[0] = v;
            } else {
                px.copy_from_slice(&[v, v, v, 255]);
            }
        }
    }
    if format.is_biplanar() {
        data.extend((0..stride * h / 2).map(|i| (i * 7 % 256) as u8));
    }
    (data, stride)
}

fn assert_same_keypoints(gpu: &[Keypoint], cpu: &[Keypoint], what: &str) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: keypoint count");
    for (i, (a, b)) in gpu.iter().zip(cpu).enumerate() {
        // Bit equality of every field (== would accept -0.0 for 0.0).
        let bits = |k: &Keypoint| {
            (
                k.x.to_bits(),
                k.y.to_bits(),
                k.size.to_bits(),
                k.angle.to_bits(),
                k.score.to_bits(),
                k.level,
            )
        };
        assert_eq!(
            bits(a),
            bits(b),
            "{what}: keypoint {i}: gpu {a:?} cpu {b:?}"
        );
    }
}

#[test]
fn gpu_pipeline_equals_the_cpu_pipeline_in_every_pixel_format() -> TestResult {
    let Some(ctx) = test_support::context_or_skip(
        "gpu_pipeline_equals_the_cpu_pipeline_in_every_pixel_format",
    )?
    else {
        return Ok(());
    };
    let config = FeatureConfig::default();
    let model = DescriptorModel::embedded_default()?;
    let selection = select_on(Backend::Gpu, Ok(ctx))?;
    let mut gpu = FeaturePipeline::with_selection(config.clone(), model.clone(), selection)?;
    let mut cpu = FeaturePipeline::new(config, model)?;
    let all_gpu = StageBackends {
        gray: BackendKind::Gpu,
        keypoints: BackendKind::Gpu,
        patches: BackendKind::Gpu,
        descriptors: BackendKind::Gpu,
        fell_back: false,
    };
    for (name, formats) in [
        ("coffee", &PixelFormat::ALL[..]),
        ("chelsea", &PixelFormat::ALL[..]),
        ("gravel", &[PixelFormat::Gray8][..]),
    ] {
        let g = photo(name);
        // Odd sizes cannot be NV12/NV21: crop to even.
        let g = if g.width() % 2 == 1 || g.height() % 2 == 1 {
            let (w, h) = (g.width() & !1, g.height() & !1);
            let data = (0..h)
                .flat_map(|y| g.row(y)[..w as usize].to_vec())
                .collect();
            GrayImage::from_vec(w, h, data)?
        } else {
            g
        };
        for &format in formats {
            let (data, stride) = frame_bytes(&g, format);
            let frame = Frame::new(format, g.width(), g.height(), stride, &data)?;
            let what = format!("{name} {format}");
            let a = gpu.extract(&frame)?;
            let (ka, pa, da, ba) = (
                a.keypoints.to_vec(),
                a.patches.to_vec(),
                a.descriptors.to_vec(),
                a.backends,
            );
            assert_eq!(ba, all_gpu, "{what}: stages ({:?})", gpu.last_fallback());
            assert_eq!(gpu.extractor().gray(), &g, "{what}: gray read back");
            let b = cpu.extract(&frame)?;
            assert_eq!(b.backends, StageBackends::CPU);
            assert!(ka.len() > 300, "{what}: {} keypoints", ka.len());
            assert_same_keypoints(&ka, b.keypoints, &what);
            assert!(pa == b.patches, "{what}: patches differ");
            assert!(da == b.descriptors, "{what}: descriptors differ");
        }
        // The gray entry point too.
        let a = gpu.extract_gray(&g)?;
        let (ka, da) = (a.keypoints.to_vec(), a.descriptors.to_vec());
        assert_eq!(a.backends, all_gpu);
        let b = cpu.extract_gray(&g)?;
        assert_same_keypoints(&ka, b.keypoints, name);
        assert!(da == b.descriptors, "{name}: gray descriptors differ");
    }
    assert_eq!(gpu.last_fallback(), None);
    Ok(())
}

/// Few keypoints, a small config and tiny frames: the budget and level logic on the host agree
/// too (levels that give nothing, a budget that rolls down).
#[test]
fn gpu_pipeline_equals_the_cpu_pipeline_for_small_budgets_and_frames() -> TestResult {
    let Some(ctx) = test_support::context_or_skip(
        "gpu_pipeline_equals_the_cpu_pipeline_for_small_budgets_and_frames",
    )?
    else {
        return Ok(());
    };
    let model = DescriptorModel::embedded_default()?;
    for config in [
        FeatureConfig {
            max_keypoints: 37,
            levels: 3,
            scale_factor: 1.7,
            grid_cell: 20,
            cells_per_keypoint: 2,
            min_response: 4.0,
        },
        FeatureConfig {
            max_keypoints: 2000,
            ..Default::default()
        },
        FeatureConfig {
            max_keypoints: 300,
            ..FeatureConfig::localization()
        },
    ] {
        let selection = select_on(Backend::Gpu, Ok(ctx.clone()))?;
        let mut gpu = FeaturePipeline::with_selection(config.clone(), model.clone(), selection)?;
        let mut cpu = FeaturePipeline::new(config.clone(), model.clone())?;
        for (what, g) in [
            ("30x30", noise(30, 30, 9, 1.0)),
            ("7x7", noise(7, 7, 10, 0.0)),
            ("constant", GrayImage::from_vec(90, 70, vec![128; 90 * 70])?),
            ("checkerboard", checkerboard(160, 120, 9)),
            ("brick", photo("brick")),
        ] {
            let a = gpu.extract_gray(&g)?;
            let (ka, pa, da) = (
                a.keypoints.to_vec(),
                a.patches.to_vec(),
                a.descriptors.to_vec(),
            );
            assert!(!a.backends.fell_back, "{what}: {:?}", gpu.last_fallback());
            let b = cpu.extract_gray(&g)?;
            assert_same_keypoints(&ka, b.keypoints, what);
            assert!(pa == b.patches, "{what}: patches differ");
            assert!(da == b.descriptors, "{what}: descriptors differ");
        }
    }
    Ok(())
}

#[test]
fn gpu_pipeline_allocates_no_gpu_buffer_after_warm_up() -> TestResult {
    let Some(ctx) =
        test_support::context_or_skip("gpu_pipeline_allocates_no_gpu_buffer_after_warm_up")?
    else {
        return Ok(());
    };
    let selection = select_on(Backend::Gpu, Ok(ctx))?;
    let mut gpu = FeaturePipeline::with_selection(
        FeatureConfig::default(),
        DescriptorModel::embedded_default()?,
        selection,
    )?;
    let frames: Vec<GrayImage> = (0..3).map(|s| noise(320, 240, 20 + s, 1.5)).collect();
    let rgba: Vec<Vec<u8>> = frames
        .iter()
        .map(|g| g.as_slice().iter().flat_map(|&v| [v, v, v, 255]).collect())
        .collect();
    let mut warm = None;
    for round in 0..3 {
        for data in &rgba {
            let frame = Frame::new(PixelFormat::Rgba8, 320, 240, 320 * 4, data)?;
            let f = gpu.extract(&frame)?;
            assert_eq!(f.backends.keypoints, BackendKind::Gpu);
            assert!(f.keypoints.len() > 100);
        }
        let now = gpu.gpu_buffer_allocations().ok_or("GPU pipeline")?;
        match warm {
            None => warm = Some(now),
            Some(n) => assert_eq!(now, n, "round {round}: GPU buffers allocated after warm-up"),
        }
    }
    Ok(())
}
