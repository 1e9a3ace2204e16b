//! Where the runtime computes: the backend choice `Auto`, `Cpu` or `Gpu`, and the record of which
//! backend ran each stage.
//!
//! - [`Backend::Cpu`]: the CPU kernels, always available.
//! - [`Backend::Gpu`]: the wgpu kernels; an error when no adapter opens or the adapter fails the
//!   start-up [`self_test`](crate::gpu::self_test).
//! - [`Backend::Auto`]: the GPU when a hardware adapter exists **and** passes the self-test
//!   against the CPU kernels, otherwise the CPU; [`Selection::reason`] says why (the runtime has no
//!   logger: the caller logs it, as the CLI does with `tracing`). A software adapter (Mesa's
//!   lavapipe, WARP, SwiftShader) emulates the GPU on the CPU and is slower than the CPU kernels,
//!   so `Auto` does not pick it; `Gpu` does (that is how the GPU path is tested without a GPU).
//!
//! GPU results equal CPU results bit for bit, so the choice changes speed, never output. At run
//! time a GPU failure (device lost, a shader or validation error) makes that frame's stage run on
//! the CPU instead, and the result says so ([`StageBackends::fell_back`]); a lost device is not
//! tried again.
//!
//! ```
//! use sextant_runtime::backend::{Backend, BackendKind, select};
//!
//! let cpu = select(Backend::Cpu)?;
//! assert_eq!(cpu.kind(), BackendKind::Cpu);
//! let auto = select(Backend::Auto)?; // GPU or CPU, never an error
//! println!("features run on {} ({})", auto.kind(), auto.reason());
//! # Ok::<(), sextant_runtime::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

/// The requested backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// The GPU if an adapter exists and passes the start-up self-test, else the CPU.
    #[default]
    Auto,
    /// The CPU kernels.
    Cpu,
    /// The GPU kernels; an error when unavailable.
    Gpu,
}

impl Backend {
    /// Lower-case name (`auto`, `cpu`, `gpu`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Cpu => "cpu",
            Backend::Gpu => "gpu",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Backend, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "cpu" => Ok(Backend::Cpu),
            "gpu" => Ok(Backend::Gpu),
            other => Err(format!("unknown backend `{other}` (auto, cpu or gpu)")),
        }
    }
}

/// The backend that actually ran something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BackendKind {
    /// The CPU kernels.
    #[default]
    Cpu,
    /// The GPU kernels.
    Gpu,
}

impl BackendKind {
    /// Lower-case name (`cpu`, `gpu`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Gpu => "gpu",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which backend ran each stage of one frame's feature extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StageBackends {
    /// Pixel format to gray.
    pub gray: BackendKind,
    /// Pyramid, corner response, non-maximum suppression, orientation.
    pub keypoints: BackendKind,
    /// Oriented patch sampling.
    pub patches: BackendKind,
    /// The descriptor model.
    pub descriptors: BackendKind,
    /// A GPU stage failed on this frame and the CPU ran it instead (the reason is kept by the
    /// pipeline, e.g. [`FeaturePipeline::last_fallback`](crate::features::FeaturePipeline::last_fallback)).
    pub fell_back: bool,
}

impl StageBackends {
    /// Every stage on the CPU, no fallback.
    pub const CPU: StageBackends = StageBackends {
        gray: BackendKind::Cpu,
        keypoints: BackendKind::Cpu,
        patches: BackendKind::Cpu,
        descriptors: BackendKind::Cpu,
        fell_back: false,
    };
}

/// The outcome of choosing a backend: which one runs, why, and (for the GPU) its device.
#[derive(Debug, Clone)]
pub struct Selection {
    requested: Backend,
    kind: BackendKind,
    reason: String,
    #[cfg(feature = "gpu")]
    gpu: Option<crate::gpu::GpuContext>,
}

impl Selection {
    /// The CPU, with a reason.
    pub fn cpu(requested: Backend, reason: impl Into<String>) -> Selection {
        Selection {
            requested,
            kind: BackendKind::Cpu,
            reason: reason.into(),
            #[cfg(feature = "gpu")]
            gpu: None,
        }
    }

    /// What was asked for.
    pub fn requested(&self) -> Backend {
        self.requested
    }

    /// What runs.
    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// Why (adapter name and self-test result, or why the GPU is not used), for logs.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The GPU context, when the GPU was selected.
    #[cfg(feature = "gpu")]
    pub fn gpu_context(&self) -> Option<&crate::gpu::GpuContext> {
        self.gpu.as_ref()
    }
}

/// Chooses a backend, opening the GPU with the platform's primary APIs (Metal, Vulkan) and
/// running the start-up self-test when the GPU is wanted. `Auto` never fails; `Gpu` fails when the
/// GPU is unavailable or fails the self-test; `Cpu` never touches the GPU.
pub fn select(requested: Backend) -> crate::Result<Selection> {
    #[cfg(feature = "gpu")]
    {
        select_with(requested, wgpu::Backends::PRIMARY)
    }
    #[cfg(not(feature = "gpu"))]
    {
        match requested {
            Backend::Cpu => Ok(Selection::cpu(requested, "CPU requested")),
            Backend::Auto => Ok(Selection::cpu(
                requested,
                "this build has no GPU path (cargo feature `gpu` off)",
            )),
            Backend::Gpu => Err(crate::features::FeatureError::InvalidConfig(
                "backend gpu requested, but this build has no GPU path (cargo feature `gpu` off)"
                    .into(),
            )
            .into()),
        }
    }
}

/// [`select`] with the wgpu backends to try (tests use `Backends::VULKAN`).
#[cfg(feature = "gpu")]
pub fn select_with(requested: Backend, backends: wgpu::Backends) -> crate::Result<Selection> {
    if requested == Backend::Cpu {
        return Ok(Selection::cpu(requested, "CPU requested"));
    }
    select_on(requested, crate::gpu::GpuContext::new(backends))
}

/// [`select`] on a device the caller opened (or failed to open): runs the self-test on it.
#[cfg(feature = "gpu")]
pub fn select_on(
    requested: Backend,
    context: Result<crate::gpu::GpuContext, crate::gpu::GpuUnavailable>,
) -> crate::Result<Selection> {
    use crate::gpu::GpuError;
    if requested == Backend::Cpu {
        return Ok(Selection::cpu(requested, "CPU requested"));
    }
    let failure = match context {
        Err(e) => GpuError::from(e),
        Ok(ctx) if requested == Backend::Auto && ctx.is_software() => {
            return Ok(Selection::cpu(
                requested,
                format!(
                    "CPU, because the only GPU adapter, {:?}, is a software rasteriser (slower than \
                     the CPU kernels; request the GPU explicitly to use it anyway)",
                    ctx.adapter_info().name
                ),
            ));
        }
        Ok(ctx) => match crate::gpu::self_test(&ctx) {
            Ok(()) => {
                let info = ctx.adapter_info();
                return Ok(Selection {
                    requested,
                    kind: BackendKind::Gpu,
                    reason: format!(
                        "GPU adapter {:?} ({:?}, {:?}{}) passed the self-test",
                        info.name,
                        info.backend,
                        info.device_type,
                        if ctx.is_software() {
                            "; a software adapter: correct but not fast"
                        } else {
                            ""
                        }
                    ),
                    gpu: Some(ctx),
                });
            }
            Err(e) => e,
        },
    };
    match requested {
        Backend::Gpu => Err(failure.into()),
        _ => Ok(Selection::cpu(
            requested,
            format!("CPU, because the GPU is not usable: {failure}"),
        )),
    }
}
