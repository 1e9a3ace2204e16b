//! The runtime's error type: every bad input becomes one of these values, never a panic.
//!
//! Each stage keeps its own precise error enum (`FeatureError`, `GeometryError`,
//! `DescriptorError`, `GpuError`); all of them convert into [`Error`] with `?`, so an app can
//! handle one type at the crate boundary.

/// Why a runtime call could not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Camera intrinsics or distortion that cannot describe a real camera.
    #[error("invalid camera: {0}")]
    InvalidCamera(String),
    /// A pose that is not a rigid transform (non-finite values, not a proper rotation).
    #[error("invalid pose: {0}")]
    InvalidPose(String),
    /// A pixel buffer whose sizes, strides or format do not fit together.
    #[error("invalid frame: {0}")]
    InvalidFrame(String),
    /// An image whose dimensions and data length disagree.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// A feature extraction or matching input or setting out of range.
    #[error(transparent)]
    Features(#[from] crate::features::FeatureError),
    /// Pose estimation or triangulation could not produce a result from its input.
    #[error(transparent)]
    Geometry(#[from] crate::geometry::GeometryError),
    /// A descriptor model could not be loaded or run.
    #[error(transparent)]
    Descriptor(#[from] crate::descriptor::DescriptorError),
    /// A map could not be built, read or used.
    #[error(transparent)]
    Map(#[from] crate::map::MapError),
    /// The GPU path failed; callers fall back to the CPU for that frame.
    #[cfg(feature = "gpu")]
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
