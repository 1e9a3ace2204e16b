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
//!   frame arrives. [`GrayConverter`] (`shaders/gray.wgsl`) is the first: camera frame to 8-bit
//!   gray, bit-identical to [`Frame::to_gray`](crate::frame::Frame::to_gray).
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
mod context;
mod gray;
pub mod test_support;

pub use context::GpuContext;
pub use gray::GrayConverter;

/// The source of `shaders/gray.wgsl`, embedded at compile time.
pub const GRAY_WGSL: &str = include_str!("../../../shaders/gray.wgsl");

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
    /// Waiting for the GPU or mapping a result buffer failed.
    #[error("GPU readback failed: {reason}")]
    Readback {
        /// What failed.
        reason: String,
    },
}

/// Checks that `ctx`'s adapter computes exactly what the CPU computes, on a synthetic frame with an
/// odd size and an unaligned row stride, large enough (0.5 Mpixel) that a kernel exceeding a
/// driver's per-invocation loop limit would be caught.
///
/// This is what backend choice `Auto` runs at start-up: GPU if an adapter exists *and* passes this,
/// CPU otherwise. It builds its own kernel objects and allocates; call it once, not per frame.
pub fn self_test(ctx: &GpuContext) -> Result<(), GpuError> {
    const W: u32 = 1029;
    const H: u32 = 515;
    const STRIDE: usize = W as usize * 4 + 3;
    let mut pixels = vec![0u8; STRIDE * H as usize];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for byte in &mut pixels {
        // xorshift64: deterministic content that exercises every channel value.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = (state >> 56) as u8;
    }
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
