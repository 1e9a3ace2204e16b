//! Pose solving: minimal solvers, robust estimation, refinement, covariance and triangulation.
//!
//! # How the pieces fit
//!
//! A localisation query arrives as pixel keypoints matched to map points. [`estimate_absolute_pose`]
//! first undistorts every keypoint to normalised image coordinates with [`Camera`]
//! (`Camera::pixel_to_normalized`), so the solvers only ever see an ideal pinhole camera; residuals
//! are scaled back by `fx`, `fy` so thresholds and errors stay in pixels. It then runs one
//! LO-RANSAC ([`ransac::ransac`]) generic over an [`estimator::Estimator`]:
//!
//! - [`estimator::P3pEstimator`] draws 3 correspondences and solves them with Lambda Twist
//!   ([`p3p::p3p`], up to 4 poses);
//! - [`estimator::Up2pEstimator`] is used when the AR framework reports gravity: 2 correspondences
//!   and the known vertical give a 4-DoF pose ([`up2p::up2p`], up to 2 poses), so at 90% outliers
//!   RANSAC needs ~10× fewer samples than with P3P. Its local optimisation and the final
//!   refinement are full 6-DoF, so IMU tilt noise (0.2–0.5°) does not bias the result.
//!
//! RANSAC scores hypotheses with the MSAC truncated-quadratic cost and verifies them with Wald's
//! SPRT (bad hypotheses are rejected after a few dozen points even at 95% outliers), stops
//! adaptively at a requested confidence, can sample PROSAC-style when matches arrive sorted by
//! quality, and runs a local optimisation (robust Levenberg–Marquardt on the inliers) every time
//! it finds a new best model. Randomness comes from this module's own [`rng::Pcg32`]: the same
//! input and seed give the same pose on every build.
//!
//! The winning pose is polished by [`refine::refine_pose`] (Levenberg–Marquardt on the
//! reprojection error with a Cauchy loss, on the SO(3)×R³ tangent space) and its 6×6 covariance
//! is taken from the final Jacobian ([`refine::pose_covariance`]), reported as 1-σ camera position
//! (metres) and rotation (radians) uncertainty.
//!
//! Buffers live in an [`AbsolutePoseWorkspace`] that the caller keeps between frames: after the
//! first frame of a given size, estimation allocates nothing.
//!
//! [`triangulate::triangulate`] is the map builder's counterpart: a point from several posed
//! views, by DLT then Gauss–Newton on the reprojection error, with triangulation-angle,
//! cheirality and reprojection checks.
//!
//! # Example
//!
//! ```
//! use nalgebra::{Vector2, Vector3};
//! use sextant_runtime::Camera;
//! use sextant_runtime::geometry::{
//!     AbsolutePoseOptions, AbsolutePoseWorkspace, estimate_absolute_pose,
//!     synth::{SynthConfig, generate},
//! };
//!
//! let problem = generate(&SynthConfig { n: 100, outlier_ratio: 0.5, ..SynthConfig::default() }, 1);
//! let k = problem.intrinsics;
//! let camera = Camera::pinhole(k.width, k.height, k.fx, k.fy, k.cx, k.cy).unwrap();
//! let mut ws = AbsolutePoseWorkspace::new();
//! let options = AbsolutePoseOptions { threshold_px: problem.threshold_px, ..Default::default() };
//! let est = estimate_absolute_pose(&camera, &problem.points2d, &problem.points3d, None, &options, &mut ws)
//!     .unwrap();
//! assert!(est.pose.rotation_error(&problem.gt.to_pose().unwrap()) < 1e-2);
//! assert!(ws.inliers().len() >= 45);
//! ```

// `!(x > 0.0)` is used deliberately throughout: unlike `x <= 0.0` it also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod absolute;
pub mod estimator;
pub mod p3p;
pub mod ransac;
pub mod refine;
pub mod rng;
pub mod synth;
pub mod triangulate;
pub mod up2p;

#[cfg(test)]
mod proptests;

pub use absolute::{
    AbsolutePose, AbsolutePoseOptions, AbsolutePoseWorkspace, Gravity, estimate_absolute_pose,
};
pub use ransac::{RansacOptions, RansacStats, Sampling};
pub use refine::{PoseCovariance, RefineOptions, RobustLoss};
pub use triangulate::{Observation, TriangulatedPoint, TriangulationOptions, triangulate};

use nalgebra::{Matrix3, Rotation3, UnitQuaternion, Vector3};

use crate::Pose;

/// Why pose solving or triangulation produced no result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GeometryError {
    /// `points2d` and `points3d` have different lengths.
    #[error("{points2d} image points but {points3d} world points")]
    LengthMismatch {
        /// Number of 2D points.
        points2d: usize,
        /// Number of 3D points.
        points3d: usize,
    },
    /// Fewer correspondences (or views) than the solver needs.
    #[error("need at least {needed} correspondences, got {got}")]
    TooFewCorrespondences {
        /// Minimum the solver needs.
        needed: usize,
        /// What was given.
        got: usize,
    },
    /// An input coordinate is NaN or infinite.
    #[error("non-finite input at correspondence {index}")]
    NonFiniteInput {
        /// Index of the first bad correspondence or view.
        index: usize,
    },
    /// Gravity or world-up vector that is zero or not finite.
    #[error("invalid gravity vector")]
    InvalidGravity,
    /// An option outside its valid range.
    #[error("invalid option: {0}")]
    InvalidOption(&'static str),
    /// Robust estimation found no pose supported by enough inliers.
    #[error("no consensus: best pose has {inliers} inliers, {needed} needed")]
    NoConsensus {
        /// Inliers of the best hypothesis (0 when none was found).
        inliers: usize,
        /// The configured minimum.
        needed: usize,
    },
    /// Triangulation rays are too close to parallel.
    #[error("triangulation angle {angle_rad:.2e} rad below the minimum")]
    SmallTriangulationAngle {
        /// Largest angle between any two rays.
        angle_rad: f64,
    },
    /// The triangulated point lies behind one of the cameras.
    #[error("triangulated point behind camera {view}")]
    BehindCamera {
        /// Index of the offending view.
        view: usize,
    },
    /// The triangulated point reprojects too far from an observation.
    #[error("reprojection error {error_px:.2} px in view {view} above the limit")]
    LargeReprojectionError {
        /// Index of the worst view.
        view: usize,
        /// Its error in pixels.
        error_px: f64,
    },
    /// The input is degenerate for the solver (e.g. a singular linear system).
    #[error("degenerate configuration")]
    Degenerate,
}

/// A world-to-camera transform as a plain matrix pair, the solvers' working type:
/// `x_cam = r * x_world + t`. Cheap to copy; `r` may be slightly off SO(3) straight out of a
/// minimal solver — [`CameraPose::orthonormalized`] projects it back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraPose {
    /// Rotation, world to camera.
    pub r: Matrix3<f64>,
    /// Translation, world to camera.
    pub t: Vector3<f64>,
}

impl Default for CameraPose {
    fn default() -> Self {
        CameraPose {
            r: Matrix3::identity(),
            t: Vector3::zeros(),
        }
    }
}

impl CameraPose {
    /// Maps a world point into the camera frame.
    #[inline]
    pub fn transform(&self, p: &Vector3<f64>) -> Vector3<f64> {
        self.r * p + self.t
    }

    /// Camera centre in the world frame, `−rᵀ t`.
    pub fn center(&self) -> Vector3<f64> {
        -(self.r.transpose() * self.t)
    }

    /// True when every entry is finite.
    pub fn is_finite(&self) -> bool {
        self.r.iter().all(|v| v.is_finite()) && self.t.iter().all(|v| v.is_finite())
    }

    /// The same pose with `r` projected onto SO(3) (nearest rotation).
    pub fn orthonormalized(&self) -> CameraPose {
        let rot = Rotation3::from_matrix_eps(&self.r, 1e-15, 50, Rotation3::identity());
        CameraPose {
            r: *rot.matrix(),
            t: self.t,
        }
    }

    /// Converts to the runtime's [`Pose`] (validates a proper rotation).
    pub fn to_pose(&self) -> crate::Result<Pose> {
        let p = self.orthonormalized();
        Pose::from_rt(&p.r, &p.t)
    }

    /// From the runtime's [`Pose`].
    pub fn from_pose(p: &Pose) -> CameraPose {
        CameraPose {
            r: p.rotation_matrix(),
            t: p.translation(),
        }
    }

    /// Rotation from a unit quaternion and a translation.
    pub fn from_quaternion(q: &UnitQuaternion<f64>, t: Vector3<f64>) -> CameraPose {
        CameraPose {
            r: *q.to_rotation_matrix().matrix(),
            t,
        }
    }
}

/// A fixed-capacity list of solver outputs (at most 4 — the most any solver here returns), so
/// solvers write into caller-owned storage and never allocate.
#[derive(Debug, Clone, Copy)]
pub struct Solutions<M: Copy + Default> {
    buf: [M; 4],
    len: usize,
}

impl<M: Copy + Default> Default for Solutions<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Copy + Default> Solutions<M> {
    /// An empty list.
    pub fn new() -> Self {
        Solutions {
            buf: [M::default(); 4],
            len: 0,
        }
    }

    /// Removes every element.
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `m`; silently ignored when full (no solver here produces more than 4).
    #[inline]
    pub fn push(&mut self, m: M) {
        if self.len < self.buf.len() {
            self.buf[self.len] = m;
            self.len += 1;
        }
    }

    /// Number of stored solutions.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The stored solutions.
    #[inline]
    pub fn as_slice(&self) -> &[M] {
        &self.buf[..self.len]
    }

    /// Iterates over the stored solutions.
    pub fn iter(&self) -> std::slice::Iter<'_, M> {
        self.as_slice().iter()
    }

    /// Iterates mutably over the stored solutions.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, M> {
        self.buf[..self.len].iter_mut()
    }
}
