//! The runtime's error type: every bad input becomes one of these values, never a panic.

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
}

/// The runtime's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
