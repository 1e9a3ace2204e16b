//! GPU gray conversion (`shaders/gray.wgsl`) against the CPU reference, `Frame::to_gray`:
//! bit-identical for every pixel format, odd sizes, padded and unaligned strides, random content,
//! and a 1920x1080 frame — far past llvmpipe's 65,535-iterations-per-invocation cap for a kernel
//! that would loop over the frame.
//!
//! Without a GPU adapter these tests print `SKIPPED: …` and pass, unless `SEXTANT_REQUIRE_GPU=1`.

#![cfg(feature = "gpu")]

use std::error::Error;

use sextant_runtime::gpu::{self, GpuContext, GpuError, GrayConverter, test_support};
use sextant_runtime::{Frame, GrayImage, PixelFormat};

type TestResult = Result<(), Box<dyn Error>>;

/// Deterministic bytes (splitmix64).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Fails with the first differing pixel and the number of differences (not a 2-megabyte dump).
fn assert_same(gpu: &GrayImage, cpu: &GrayImage, what: &str) {
    assert_eq!(
        (gpu.width(), gpu.height()),
        (cpu.width(), cpu.height()),
        "{what}: size"
    );
    let diffs: Vec<usize> = gpu
        .as_slice()
        .iter()
        .zip(cpu.as_slice())
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect();
    if let Some(&first) = diffs.first() {
        let w = cpu.width() as usize;
        panic!(
            "{what}: {} of {} pixels differ; first at (x {}, y {}): gpu {} cpu {}",
            diffs.len(),
            cpu.as_slice().len(),
            first % w,
            first / w,
            gpu.as_slice()[first],
            cpu.as_slice()[first]
        );
    }
}

/// Bytes for a `format` frame of `width x height` at `stride`, with the last row (of the luma or
/// only plane) cut short the way Android's `ImageReader` buffers are, and for NV12/NV21 the chroma
/// plane after the luma plane.
fn frame_bytes(format: PixelFormat, width: u32, height: u32, stride: usize, seed: u64) -> Vec<u8> {
    let row = width as usize * format.bytes_per_pixel();
    let len = if format.is_biplanar() {
        stride * height as usize + stride * (height as usize / 2)
    } else {
        stride * (height as usize - 1) + row
    };
    random_bytes(len, seed)
}

/// Strides worth testing for a row of `row` bytes: tight, unaligned padding, aligned padding.
fn strides(row: usize) -> [usize; 4] {
    [row, row + 1, row + 3, row + 64]
}

#[test]
fn gpu_gray_matches_cpu_for_every_format_size_and_stride() -> TestResult {
    let Some(ctx) =
        test_support::context_or_skip("gpu_gray_matches_cpu_for_every_format_size_and_stride")?
    else {
        return Ok(());
    };
    let mut gray = GrayConverter::new(&ctx)?;
    let mut out = GrayImage::new(0, 0);
    let mut seed = 1;
    for format in PixelFormat::ALL {
        let sizes: &[(u32, u32)] = if format.is_biplanar() {
            &[(2, 2), (6, 4), (642, 478), (34, 2)]
        } else {
            &[(1, 1), (3, 2), (7, 5), (641, 479), (1, 300), (300, 1)]
        };
        for &(w, h) in sizes {
            for stride in strides(w as usize * format.bytes_per_pixel()) {
                seed += 1;
                let data = frame_bytes(format, w, h, stride, seed);
                let frame = Frame::new(format, w, h, stride, &data)?;
                gray.convert_into(&frame, &mut out)?;
                assert_same(
                    &out,
                    &frame.to_gray(),
                    &format!("{format} {w}x{h} stride {stride}"),
                );
            }
        }
    }
    Ok(())
}

#[test]
fn gpu_gray_matches_cpu_for_separate_nv12_and_nv21_planes() -> TestResult {
    let Some(ctx) =
        test_support::context_or_skip("gpu_gray_matches_cpu_for_separate_nv12_and_nv21_planes")?
    else {
        return Ok(());
    };
    let mut gray = GrayConverter::new(&ctx)?;
    for format in [PixelFormat::Nv12, PixelFormat::Nv21] {
        let (w, h, stride) = (318u32, 242u32, 333usize);
        // Luma plane with its last row cut short: the upload must not read past it.
        let luma = random_bytes(stride * (h as usize - 1) + w as usize, 7);
        let chroma = random_bytes(stride * (h as usize / 2), 8);
        let frame = Frame::new_biplanar(format, w, h, &luma, stride, &chroma, stride)?;
        assert_same(
            &gray.convert(&frame)?,
            &frame.to_gray(),
            &format!("{format} biplanar"),
        );
    }
    Ok(())
}

/// 1920x1080 is 2,073,600 pixels: a kernel that looped over the frame in one invocation would
/// stop (silently, with wrong output) after 65,535 iterations on llvmpipe.
#[test]
fn gpu_gray_1080p_crosses_the_llvmpipe_loop_cap() -> TestResult {
    let Some(ctx) = test_support::context_or_skip("gpu_gray_1080p_crosses_the_llvmpipe_loop_cap")?
    else {
        return Ok(());
    };
    let mut gray = GrayConverter::new(&ctx)?;
    let (w, h) = (1920u32, 1080u32);
    for format in PixelFormat::ALL {
        let stride = w as usize * format.bytes_per_pixel();
        let data = frame_bytes(format, w, h, stride, 42 + format as u64);
        let frame = Frame::new(format, w, h, stride, &data)?;
        assert_same(
            &gray.convert(&frame)?,
            &frame.to_gray(),
            &format!("{format} 1080p"),
        );
    }
    Ok(())
}

/// Buffers are created once and grow only for a larger frame; a smaller frame after a larger one
/// must not see stale data, and a frame of a size already seen allocates nothing.
#[test]
fn gpu_gray_reuses_buffers_across_frames() -> TestResult {
    let Some(ctx) = test_support::context_or_skip("gpu_gray_reuses_buffers_across_frames")? else {
        return Ok(());
    };
    let mut gray = GrayConverter::new(&ctx)?;
    let mut out = GrayImage::new(0, 0);
    let sizes = [
        (640u32, 480u32),
        (320, 240),
        (641, 479),
        (64, 48),
        (640, 480),
    ];
    let mut warmed_up = None;
    for round in 0..3u64 {
        for (i, &(w, h)) in sizes.iter().enumerate() {
            let stride = w as usize * 4 + 4;
            let data = frame_bytes(PixelFormat::Bgra8, w, h, stride, round * 10 + i as u64);
            let frame = Frame::new(PixelFormat::Bgra8, w, h, stride, &data)?;
            gray.convert_into(&frame, &mut out)?;
            assert_same(&out, &frame.to_gray(), &format!("round {round} {w}x{h}"));
        }
        match warmed_up {
            None => warmed_up = Some(gray.buffer_allocations()),
            Some(n) => assert_eq!(
                gray.buffer_allocations(),
                n,
                "no GPU buffer may be allocated after warm-up"
            ),
        }
    }
    Ok(())
}

/// A lost device is an error value from every later call, never a panic.
#[test]
fn gpu_gray_device_loss_is_an_error_not_a_panic() -> TestResult {
    let Some(ctx) = test_support::context_or_skip("gpu_gray_device_loss_is_an_error_not_a_panic")?
    else {
        return Ok(());
    };
    let mut gray = GrayConverter::new(&ctx)?;
    let data = random_bytes(64 * 48, 3);
    let frame = Frame::new(PixelFormat::Gray8, 64, 48, 64, &data)?;
    assert_same(&gray.convert(&frame)?, &frame.to_gray(), "before loss");

    ctx.device().destroy();
    let err = gray
        .convert(&frame)
        .expect_err("a destroyed device cannot convert");
    assert!(matches!(err, GpuError::DeviceLost { .. }), "{err:?}");
    let err = GrayConverter::new(&ctx).expect_err("a destroyed device cannot build a kernel");
    assert!(matches!(err, GpuError::DeviceLost { .. }), "{err:?}");
    Ok(())
}

/// Host code also runs on a device and queue the caller opened itself, as wgpu's examples do.
#[test]
fn gpu_gray_runs_on_a_caller_provided_device() -> TestResult {
    let Some(own) = test_support::context_or_skip("gpu_gray_runs_on_a_caller_provided_device")?
    else {
        return Ok(());
    };
    let ctx = GpuContext::from_device(own.device(), own.queue());
    assert_eq!(ctx.adapter_info().name, own.adapter_info().name);
    let mut gray = GrayConverter::new(&ctx)?;
    let data = random_bytes(37 * 4 * 11, 5);
    let frame = Frame::new(PixelFormat::Rgba8, 37, 11, 37 * 4, &data)?;
    assert_same(&gray.convert(&frame)?, &frame.to_gray(), "caller device");

    // The caller's device is lost: seen without our device-lost callback, as an error value.
    own.device().destroy();
    let err = gray
        .convert(&frame)
        .expect_err("a destroyed device cannot convert");
    assert!(matches!(err, GpuError::DeviceLost { .. }), "{err:?}");
    Ok(())
}

/// The start-up self-test that backend choice `Auto` relies on passes on a working adapter.
#[test]
fn gpu_self_test_passes_on_a_working_adapter() -> TestResult {
    let Some(ctx) = test_support::context_or_skip("gpu_self_test_passes_on_a_working_adapter")?
    else {
        return Ok(());
    };
    eprintln!(
        "adapter: {} ({:?}, {:?}, driver {} {})",
        ctx.adapter_info().name,
        ctx.adapter_info().backend,
        ctx.adapter_info().device_type,
        ctx.adapter_info().driver,
        ctx.adapter_info().driver_info
    );
    gpu::self_test(&ctx)?;
    assert_eq!(ctx.take_uncaptured_error(), None);
    Ok(())
}

/// Not a pass/fail test: prints the median time of one 1080p RGBA8 conversion (upload, dispatch,
/// readback) on the GPU and on the CPU. Run with `--ignored --nocapture`. On lavapipe the GPU figure
/// says nothing about real GPUs.
#[test]
#[ignore = "timing report, run explicitly"]
fn gpu_gray_1080p_timing() -> TestResult {
    let Some(ctx) = test_support::context_or_skip("gpu_gray_1080p_timing")? else {
        return Ok(());
    };
    let mut gray = GrayConverter::new(&ctx)?;
    let (w, h) = (1920u32, 1080u32);
    let data = frame_bytes(PixelFormat::Rgba8, w, h, w as usize * 4, 9);
    let frame = Frame::new(PixelFormat::Rgba8, w, h, w as usize * 4, &data)?;
    let mut out = GrayImage::new(w, h);
    let mut cpu_out = GrayImage::new(w, h);
    let median_ms = |f: &mut dyn FnMut() -> TestResult| -> Result<f64, Box<dyn Error>> {
        let mut times = Vec::new();
        for i in 0..25 {
            let start = std::time::Instant::now();
            f()?;
            if i >= 5 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    };
    let gpu_ms = median_ms(&mut || Ok(gray.convert_into(&frame, &mut out)?))?;
    let cpu_ms = median_ms(&mut || {
        frame.to_gray_into(&mut cpu_out);
        Ok(())
    })?;
    assert_same(&out, &cpu_out, "timing run");
    eprintln!(
        "1080p rgba8 -> gray, median of 20: gpu {gpu_ms:.2} ms ({}, {:?}), cpu {cpu_ms:.2} ms",
        ctx.adapter_info().name,
        ctx.adapter_info().backend
    );
    Ok(())
}
