//! Backend choice (`backend::select_on`) and the feature pipeline on the GPU: `Cpu`, `Gpu` and
//! `Auto` with and without an adapter, identical keypoints and descriptors on both backends for
//! real photos and camera frames, the per-stage report, and the fallback to the CPU when the
//! device is lost mid-stream (an error value turned into a CPU frame, never a crash). Tests that
//! need an adapter print `SKIPPED: …` and pass without one, unless `SEXTANT_REQUIRE_GPU=1`.

#![cfg(feature = "gpu")]

use std::error::Error;

use sextant_runtime::backend::{Backend, BackendKind, StageBackends, select_on};
use sextant_runtime::descriptor::DescriptorModel;
use sextant_runtime::features::{FeatureConfig, FeaturePipeline};
use sextant_runtime::gpu::{GpuError, GpuUnavailable, test_support};
use sextant_runtime::{Frame, PixelFormat};

mod common {
    pub mod photos;
}
use common::photos::photo;

type TestResult = Result<(), Box<dyn Error>>;

fn unavailable() -> Result<sextant_runtime::gpu::GpuContext, GpuUnavailable> {
    Err(GpuUnavailable {
        reason: "no adapter (simulated)".into(),
    })
}

/// Pipelines and kernel objects can move to a worker thread, as before the GPU path.
#[test]
fn gpu_objects_are_send() {
    fn send<T: Send>() {}
    send::<FeaturePipeline>();
    send::<sextant_runtime::gpu::GpuDescriptor>();
    send::<sextant_runtime::gpu::GpuMatcher>();
    send::<sextant_runtime::backend::Selection>();
}

#[test]
fn backend_choice_without_an_adapter() -> TestResult {
    let cpu = select_on(Backend::Cpu, unavailable())?;
    assert_eq!(cpu.kind(), BackendKind::Cpu);
    let auto = select_on(Backend::Auto, unavailable())?;
    assert_eq!(auto.kind(), BackendKind::Cpu);
    assert!(auto.reason().contains("simulated"), "{}", auto.reason());
    match select_on(Backend::Gpu, unavailable()) {
        Err(sextant_runtime::Error::Gpu(GpuError::Unavailable(e))) => {
            assert!(e.reason.contains("simulated"))
        }
        other => panic!("expected GpuUnavailable, got {other:?}"),
    }
    assert_eq!("GPU".parse::<Backend>()?, Backend::Gpu);
    assert!("tpu".parse::<Backend>().is_err());

    // The CPU pipeline reports every stage on the CPU.
    let mut p = FeaturePipeline::with_backend(
        FeatureConfig::default(),
        DescriptorModel::embedded_default()?,
        Backend::Cpu,
    )?;
    let f = p.extract_gray(&photo("camera"))?;
    assert_eq!(f.backends, StageBackends::CPU);
    Ok(())
}

#[test]
fn gpu_pipeline_equals_cpu_pipeline_and_reports_stages() -> TestResult {
    let Some(ctx) =
        test_support::context_or_skip("gpu_pipeline_equals_cpu_pipeline_and_reports_stages")?
    else {
        return Ok(());
    };
    let software = ctx.is_software();
    // Auto: a software adapter is not used (it is slower than the CPU kernels); a hardware one
    // that passes the self-test is.
    let auto = select_on(Backend::Auto, Ok(ctx.clone()))?;
    if software {
        assert_eq!(auto.kind(), BackendKind::Cpu, "{}", auto.reason());
        assert!(auto.reason().contains("software"), "{}", auto.reason());
    } else {
        assert_eq!(auto.kind(), BackendKind::Gpu, "{}", auto.reason());
    }
    let selection = select_on(Backend::Gpu, Ok(ctx.clone()))?;
    assert_eq!(selection.kind(), BackendKind::Gpu, "{}", selection.reason());
    eprintln!("selection: {}", selection.reason());

    let config = FeatureConfig::default();
    let model = DescriptorModel::embedded_default()?;
    let mut gpu = FeaturePipeline::with_selection(config.clone(), model.clone(), selection)?;
    let mut cpu = FeaturePipeline::new(config, model)?;
    for name in ["coffee", "brick", "chelsea"] {
        let g = photo(name);
        let a = gpu.extract_gray(&g)?;
        let (ka, da, ba) = (a.keypoints.to_vec(), a.descriptors.to_vec(), a.backends);
        let b = cpu.extract_gray(&g)?;
        assert_eq!(ka, b.keypoints, "{name}: keypoints");
        assert_eq!(da, b.descriptors, "{name}: descriptors");
        assert!(ka.len() > 500, "{name}: {} keypoints", ka.len());
        // The whole frame runs on the GPU.
        assert_eq!(ba.descriptors, BackendKind::Gpu);
        assert_eq!(
            (ba.gray, ba.keypoints, ba.patches, ba.fell_back),
            (BackendKind::Gpu, BackendKind::Gpu, BackendKind::Gpu, false)
        );
    }
    // A camera frame (RGBA8 with a padded stride).
    let g = photo("astronaut");
    let (w, h) = (g.width(), g.height());
    let stride = w as usize * 4 + 12;
    let mut rgba = vec![0u8; stride * h as usize];
    for y in 0..h as usize {
        for x in 0..w as usize {
            let v = g.as_slice()[y * w as usize + x];
            rgba[y * stride + x * 4..y * stride + x * 4 + 4].copy_from_slice(&[v, v, v, 255]);
        }
    }
    let frame = Frame::new(PixelFormat::Rgba8, w, h, stride, &rgba)?;
    let da = gpu.extract(&frame)?.descriptors.to_vec();
    assert_eq!(da, cpu.extract(&frame)?.descriptors, "rgba frame");
    assert_eq!(gpu.last_fallback(), None);
    Ok(())
}

#[test]
fn lost_device_falls_back_to_the_cpu_per_frame() -> TestResult {
    let Some(ctx) = test_support::context_or_skip("lost_device_falls_back_to_the_cpu_per_frame")?
    else {
        return Ok(());
    };
    let selection = select_on(Backend::Gpu, Ok(ctx.clone()))?;
    let config = FeatureConfig {
        max_keypoints: 300,
        ..Default::default()
    };
    let model = DescriptorModel::embedded_default()?;
    let mut gpu = FeaturePipeline::with_selection(config.clone(), model.clone(), selection)?;
    let mut cpu = FeaturePipeline::new(config, model)?;
    let g = photo("gravel");
    let want = cpu.extract_gray(&g)?.descriptors.to_vec();
    assert_eq!(gpu.extract_gray(&g)?.backends.descriptors, BackendKind::Gpu);

    ctx.device().destroy();
    for frame in 0..2 {
        let f = gpu.extract_gray(&g)?;
        assert_eq!(f.descriptors, want, "frame {frame} after the loss");
        assert_eq!(f.backends.descriptors, BackendKind::Cpu);
        assert_eq!(f.backends.keypoints, BackendKind::Cpu);
        assert!(
            f.backends.fell_back,
            "frame {frame} must report the fallback"
        );
    }
    let reason = gpu.last_fallback().ok_or("fallback reason")?;
    assert!(reason.contains("lost"), "{reason}");
    Ok(())
}
