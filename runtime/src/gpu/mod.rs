//! The wgpu compute path: WGSL kernels that compute exactly what the CPU code computes.
//!
//! # How the pieces fit
//!
//! - [`GpuContext`] holds the device and queue. Either it opens its own
//!   ([`GpuContext::new`], with a backend mask, returning [`GpuUnavailable`] instead of panicking
//!   when there is no usable adapter) or it wraps a device and queue the caller already has
//!   ([`GpuContext::from_device`]), the way wgpu's own examples pass `&Device` and `&Queue` around.
//! - One module per kernel. Each kernel object creates its shader module, bind-group layout,
//!   pipeline and buffers once, and reuses them for every frame; buffers grow only when a larger
//!   frame arrives. [`GrayConverter`] (`shaders/gray.wgsl`): camera frame to 8-bit gray,
//!   bit-identical to [`Frame::to_gray`](crate::frame::Frame::to_gray). [`GpuKeypoints`]
//!   (`shaders/detect.wgsl`): pyramid, corner response, local maxima, orientation moments and
//!   patches, equal to [`FeatureExtractor`](crate::features::FeatureExtractor)'s in three round
//!   trips per frame. [`GpuDescriptor`] (`shaders/descriptor.wgsl`) and [`GpuMatcher`]
//!   (`shaders/matching.wgsl`): the int8 descriptor plan and matching.
//! - Every GPU operation runs inside wgpu error scopes; validation errors, out-of-memory and a lost
//!   device come back as [`GpuError`] values, never as panics.
//! - [`test_support`] is the one place that decides whether a GPU test runs or is skipped.
//!
//! # Arithmetic contract
//!
//! Kernels use integer arithmetic only, with the same formulas, rounding and overflow behaviour as
//! the CPU reference, so CPU and GPU outputs are compared for equality, not within a tolerance.
//! Each shader states its formula in its header comment.
//!
//! # The loop cap
//!
//! Mesa's llvmpipe (the CPU Vulkan driver used in CI) silently stops a shader invocation after
//! 65,535 loop iterations in total, and the results are simply wrong. Kernels therefore give each
//! invocation a small, fixed amount of work and let the dispatch grid grow with the input; tests use
//! inputs large enough that a kernel looping over the frame would cross the cap. See `docs/gpu.md`.
//!
//! # Example
//!
//! ```no_run
//! use sextant_runtime::frame::{Frame, PixelFormat};
//! use sextant_runtime::gpu::{GpuContext, GrayConverter};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ctx = GpuContext::new(wgpu::Backends::PRIMARY)?;
//! let mut gray = GrayConverter::new(&ctx)?;
//! let pixels = vec![0u8; 640 * 480 * 4];
//! let frame = Frame::new(PixelFormat::Rgba8, 640, 480, 640 * 4, &pixels)?;
//! let image = gray.convert(&frame)?;
//! assert_eq!(image.as_slice(), frame.to_gray().as_slice());
//! # Ok(())
//! # }
//! ```

mod buffers;
mod compute;
mod context;
mod descriptor;
mod gray;
mod keypoints;
mod matching;
mod plan_view;
pub mod test_support;

pub use compute::{Dot4, with_dot4};
pub use context::GpuContext;
pub use descriptor::GpuDescriptor;
pub use gray::GrayConverter;
pub use keypoints::GpuKeypoints;
pub(crate) use keypoints::Input as KeypointInput;
pub use matching::GpuMatcher;

/// The source of `shaders/gray.wgsl`, embedded at compile time.
pub const GRAY_WGSL: &str = include_str!("../../../shaders/gray.wgsl");
/// The source of `shaders/descriptor.wgsl` (the int8 plan's kernels), embedded at compile time.
pub const DESCRIPTOR_WGSL: &str = include_str!("../../../shaders/descriptor.wgsl");
/// The source of `shaders/matching.wgsl` (int8 distances, best two per query), embedded at
/// compile time.
pub const MATCHING_WGSL: &str = include_str!("../../../shaders/matching.wgsl");

/// The source of `shaders/detect.wgsl` (pyramid, corner response, local maxima, orientation
/// moments, patch sampling), embedded at compile time.
pub const DETECT_WGSL: &str = include_str!("../../../shaders/detect.wgsl");

/// Every embedded shader as `(file name, source)`, for validation tests.
pub const SHADERS: [(&str, &str); 4] = [
    ("gray.wgsl", GRAY_WGSL),
    ("descriptor.wgsl", DESCRIPTOR_WGSL),
    ("matching.wgsl", MATCHING_WGSL),
    ("detect.wgsl", DETECT_WGSL),
];

/// No usable GPU adapter or device could be opened.
///
/// Returned by [`GpuContext::new`]; a caller that can fall back to the CPU path does so on this
/// error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GPU unavailable: {reason}")]
pub struct GpuUnavailable {
    /// What went wrong, for logs (no adapter for the requested backends, device request refused, …).
    pub reason: String,
}

/// Why a GPU operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// No usable adapter or device.
    #[error(transparent)]
    Unavailable(#[from] GpuUnavailable),
    /// The device was lost (driver reset, `destroy`, …); the context must be recreated.
    #[error("GPU device lost: {reason}")]
    DeviceLost {
        /// The driver's or wgpu's message.
        reason: String,
    },
    /// wgpu rejected an operation (a bug in this crate or a limit of the device).
    #[error("GPU validation error: {message}")]
    Validation {
        /// wgpu's description of the error.
        message: String,
    },
    /// The device ran out of memory.
    #[error("GPU out of memory: {message}")]
    OutOfMemory {
        /// wgpu's description of the error.
        message: String,
    },
    /// An internal error of wgpu or the driver.
    #[error("GPU internal error: {message}")]
    Internal {
        /// wgpu's description of the error.
        message: String,
    },
    /// The input needs more memory than the device allows in one binding.
    #[error("input too large for the GPU: {needed} bytes needed, the device allows {limit}")]
    TooLarge {
        /// Bytes the operation needs in one buffer.
        needed: u64,
        /// The device's limit for one storage buffer binding.
        limit: u64,
    },
    /// The input does not have the layout it claims (a bug in the caller's buffer handling).
    #[error("invalid GPU input: {reason}")]
    InvalidInput {
        /// What does not fit.
        reason: String,
    },
    /// The adapter computed a wrong result in [`self_test`]: it must not be used.
    #[error("GPU self-test failed: {reason}")]
    SelfTestFailed {
        /// What differed from the CPU reference.
        reason: String,
    },
    /// A descriptor plan the GPU kernels cannot run exactly (a float step, a window or row past
    /// the kernels' loop bounds, a plan whose steps could not be read).
    #[error("descriptor plan not supported on the GPU: {reason}")]
    UnsupportedPlan {
        /// What is not supported.
        reason: String,
    },
    /// Waiting for the GPU or mapping a result buffer failed.
    #[error("GPU readback failed: {reason}")]
    Readback {
        /// What failed.
        reason: String,
    },
}

/// Checks that `ctx`'s adapter computes exactly what the CPU computes, kernel by kernel, on
/// deterministic synthetic inputs large enough that a kernel exceeding a driver's per-invocation
/// loop limit would be caught:
///
/// - gray conversion: a 1029×515 BGRA8 frame with an unaligned row stride (0.5 Mpixel);
/// - the embedded descriptor model's int8 plan: 256 patches (2 million first-layer outputs);
/// - matching: 32 queries against 70,000 train descriptors (a per-query loop would run 70,000
///   times), with the ratio test and mutual check;
/// - the keypoint front end: a 400×300 textured image through pyramid, corner response, maxima,
///   orientation moments and patches, keypoints and patches compared with the CPU extractor.
///
/// This is what backend choice `Auto` runs at start-up: GPU if an adapter exists *and* passes this,
/// CPU otherwise. It builds its own kernel objects and allocates; call it once, not per frame
/// (about a second on a software adapter, milliseconds on a GPU).
pub fn self_test(ctx: &GpuContext) -> Result<(), GpuError> {
    self_test_gray(ctx)?;
    self_test_descriptor(ctx)?;
    self_test_matching(ctx)?;
    self_test_keypoints(ctx)
}

/// Deterministic bytes (xorshift64) that exercise every value.
fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect()
}

fn self_test_gray(ctx: &GpuContext) -> Result<(), GpuError> {
    const W: u32 = 1029;
    const H: u32 = 515;
    const STRIDE: usize = W as usize * 4 + 3;
    let pixels = test_bytes(STRIDE * H as usize, 0x2545_f491_4f6c_dd1d);
    let frame = crate::frame::Frame::new(crate::frame::PixelFormat::Bgra8, W, H, STRIDE, &pixels)
        .map_err(|e| GpuError::InvalidInput {
        reason: e.to_string(),
    })?;
    let gpu = GrayConverter::new(ctx)?.convert(&frame)?;
    let cpu = frame.to_gray();
    let wrong = gpu
        .as_slice()
        .iter()
        .zip(cpu.as_slice())
        .filter(|(a, b)| a != b)
        .count();
    if wrong > 0 || gpu.as_slice().len() != cpu.as_slice().len() {
        return Err(GpuError::SelfTestFailed {
            reason: format!(
                "gray conversion: {wrong} of {} pixels differ from the CPU reference on {:?}",
                cpu.as_slice().len(),
                ctx.adapter_info().name
            ),
        });
    }
    Ok(())
}

fn self_test_descriptor(ctx: &GpuContext) -> Result<(), GpuError> {
    use crate::descriptor::{DESCRIPTOR_DIM, DescriptorModel, PATCH_PIXELS, PATCH_SIZE};
    const N: usize = 256;
    let failed = |reason: String| GpuError::SelfTestFailed { reason };
    let mut model = DescriptorModel::embedded_default()
        .map_err(|e| failed(format!("the embedded descriptor model does not load: {e}")))?;
    // Smooth gradients with texture, so every layer sees varied, unsaturated values.
    let noise = test_bytes(N * PATCH_PIXELS, 0x9e37_79b9_7f4a_7c15);
    let patches: Vec<u8> = (0..N * PATCH_PIXELS)
        .map(|i| {
            let (s, p) = (i / PATCH_PIXELS, i % PATCH_PIXELS);
            let (x, y) = (p % PATCH_SIZE, p / PATCH_SIZE);
            let v = (x * (s % 7 + 1) + y * (s % 5 + 2)) * 3 + usize::from(noise[i] % 48);
            (v % 256) as u8
        })
        .collect();
    let mut cpu = vec![0i8; N * DESCRIPTOR_DIM];
    model
        .describe(&patches, N, &mut cpu)
        .map_err(|e| failed(format!("the CPU descriptor reference failed: {e}")))?;
    let mut gpu = vec![0i8; N * DESCRIPTOR_DIM];
    GpuDescriptor::from_model(ctx, &model)?.describe(&patches, N, &mut gpu)?;
    let wrong = gpu.iter().zip(&cpu).filter(|(a, b)| a != b).count();
    if wrong > 0 {
        return Err(failed(format!(
            "descriptors: {wrong} of {} values differ from the CPU kernels on {:?}",
            cpu.len(),
            ctx.adapter_info().name
        )));
    }
    Ok(())
}

fn self_test_matching(ctx: &GpuContext) -> Result<(), GpuError> {
    use crate::features::{DescriptorSet, MatchConfig, Matcher};
    const DIM: usize = 64;
    const NT: usize = 70_000;
    const NQ: usize = 32;
    let failed = |reason: String| GpuError::SelfTestFailed { reason };
    let train: Vec<i8> = test_bytes(NT * DIM, 0x5851_f42d_4c95_7f2d)
        .into_iter()
        .map(|b| b as i8)
        .collect();
    // Queries: noisy copies of train rows spread over the whole set (every query has a true
    // nearest neighbour in a different tile and reduce group).
    let noise = test_bytes(NQ * DIM, 0x1405_7b7e_f767_814f);
    let query: Vec<i8> = (0..NQ * DIM)
        .map(|i| {
            let row = (i / DIM) * 2_171 + 13;
            let v = i32::from(train[row * DIM + i % DIM]) + i32::from(noise[i] % 64) - 32;
            v.clamp(-128, 127) as i8
        })
        .collect();
    let bad_set = |e: crate::features::FeatureError| failed(e.to_string());
    let q = DescriptorSet::new(&query, DIM).map_err(bad_set)?;
    let t = DescriptorSet::new(&train, DIM).map_err(bad_set)?;
    let config = MatchConfig::default();
    let mut cpu = Vec::new();
    Matcher::new(config)
        .and_then(|mut m| m.match_sets(&q, &t, &mut cpu))
        .map_err(bad_set)?;
    let mut gpu_matcher = GpuMatcher::new(ctx, config)?;
    let mut gpu = Vec::new();
    gpu_matcher.match_sets(&q, &t, &mut gpu)?;
    let cpu_best = Matcher::new(config)
        .and_then(|mut m| m.knn2(&q, &t).map(<[_]>::to_vec))
        .map_err(bad_set)?;
    let gpu_best = gpu_matcher.knn2(&q, &t)?;
    let wrong = gpu_best
        .iter()
        .zip(&cpu_best)
        .filter(|(a, b)| a != b)
        .count();
    if wrong > 0 || gpu != cpu {
        return Err(failed(format!(
            "matching: {wrong} of {NQ} nearest-neighbour pairs and {} vs {} matches differ from \
             the CPU matcher on {:?}",
            gpu.len(),
            cpu.len(),
            ctx.adapter_info().name
        )));
    }
    Ok(())
}

fn self_test_keypoints(ctx: &GpuContext) -> Result<(), GpuError> {
    use crate::features::{FeatureConfig, FeatureExtractor};
    use crate::image::GrayImage;
    const W: u32 = 400;
    const H: u32 = 300;
    let failed = |reason: String| GpuError::SelfTestFailed { reason };
    // Smooth blobs plus mild noise: corners at every scale, unsaturated gradients.
    let noise = test_bytes((W * H) as usize, 0x3c6e_f372_fe94_f82b);
    let pixels = (0..W * H)
        .map(|i| {
            let (x, y) = ((i % W) as f32, (i / W) as f32);
            let v = 128.0
                + 60.0 * ((x * 0.07).sin() * (y * 0.05).cos() + (x * 0.013 + y * 0.031).sin());
            (v as i32 + i32::from(noise[i as usize] % 16)).clamp(0, 255) as u8
        })
        .collect();
    let gray = GrayImage::from_vec(W, H, pixels).map_err(|e| failed(e.to_string()))?;
    let config = FeatureConfig {
        max_keypoints: 500,
        ..Default::default()
    };
    let mut cpu = FeatureExtractor::new(config.clone()).map_err(|e| failed(e.to_string()))?;
    let want = cpu.extract_gray(&gray).map_err(|e| failed(e.to_string()))?;
    let mut gpu = GpuKeypoints::new(ctx, &config)?;
    let (mut g, mut keypoints, mut patches) = (GrayImage::new(0, 0), Vec::new(), Vec::new());
    gpu.extract(
        KeypointInput::Gray(&gray),
        &mut g,
        &mut keypoints,
        &mut patches,
        None,
    )?;
    if keypoints != want.keypoints || patches != want.patches || want.keypoints.len() < 100 {
        return Err(failed(format!(
            "keypoints: {} keypoints and {} patch bytes, the CPU extractor {} and {} (equal: {}, {}) \
             on {:?}",
            keypoints.len(),
            patches.len(),
            want.keypoints.len(),
            want.patches.len(),
            keypoints == want.keypoints,
            patches == want.patches,
            ctx.adapter_info().name
        )));
    }
    Ok(())
}

impl From<wgpu::Error> for GpuError {
    fn from(e: wgpu::Error) -> Self {
        match e {
            wgpu::Error::OutOfMemory { source } => GpuError::OutOfMemory {
                message: source.to_string(),
            },
            wgpu::Error::Validation { description, .. } => GpuError::Validation {
                message: description,
            },
            wgpu::Error::Internal { description, .. } => GpuError::Internal {
                message: description,
            },
        }
    }
}

/// One compute pipeline per entry point of `module`, all on one pipeline layout made of `layout`.
pub(crate) fn compute_pipelines(
    device: &wgpu::Device,
    label: &str,
    layout: &wgpu::BindGroupLayout,
    module: &wgpu::ShaderModule,
    entries: &[&str],
) -> Vec<wgpu::ComputePipeline> {
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    entries
        .iter()
        .map(|entry| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        })
        .collect()
}

/// A compute-stage storage-buffer binding of a bind-group layout.
pub(crate) fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// A compute-stage uniform-buffer binding of `size` bytes.
pub(crate) fn uniform_entry(binding: u32, size: u64) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: wgpu::BufferSize::new(size),
        },
        count: None,
    }
}
