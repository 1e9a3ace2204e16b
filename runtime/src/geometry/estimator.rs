//! The estimator interface of the generic LO-RANSAC, and the two absolute-pose estimators.
//!
//! An [`Estimator`] says how big a minimal sample is, turns a sample into up to four models, gives
//! the squared residual of one datum under a model, and locally optimises a model on an inlier set.
//! [`super::ransac::ransac`] does everything else (sampling, SPRT verification, MSAC scoring,
//! adaptive stopping), exactly as PoseLib's `ransac_impl.h` is split from its estimators.

use nalgebra::{Matrix3, Vector2, Vector3};

use super::p3p::p3p;
use super::refine::{RefineOptions, RobustLoss, refine_pose_strided};

/// Most correspondences a local optimisation looks at.
const LO_MAX_POINTS: usize = 400;
use super::up2p::{rotation_to_y, up2p};
use super::{CameraPose, Solutions};

/// What LO-RANSAC needs to know about a model family.
pub trait Estimator {
    /// The model type (a pose here).
    type Model: Copy + Default;
    /// Minimal sample size.
    const SAMPLE_SIZE: usize;
    /// Number of data (correspondences).
    fn num_data(&self) -> usize;
    /// Minimal solver: writes the models consistent with `sample` into `models` (cleared first).
    fn generate(&self, sample: &[usize], models: &mut Solutions<Self::Model>);
    /// Squared residual of datum `i` under `model`, in the units of the RANSAC threshold;
    /// `f64::INFINITY` when the datum cannot be explained at all (e.g. behind the camera).
    fn residual2(&self, model: &Self::Model, i: usize) -> f64;
    /// Local optimisation: a better model fitted to `inliers` (indices), or `None`.
    fn local_optimize(
        &self,
        model: &Self::Model,
        inliers: &[usize],
        threshold: f64,
    ) -> Option<Self::Model>;
    /// True when a sample cannot give a useful model (e.g. coincident points); skipped cheaply.
    fn sample_is_degenerate(&self, _sample: &[usize]) -> bool {
        false
    }
    /// Cost of one `generate` call in units of one `residual2` evaluation (for SPRT's threshold).
    fn model_cost(&self) -> f64 {
        100.0
    }
    /// Average number of models per sample (for SPRT's threshold).
    fn models_per_sample(&self) -> f64 {
        1.0
    }
}

/// Correspondences prepared for the pose estimators: undistorted normalised image coordinates,
/// the matching unit bearings, world points, and the focal lengths that turn normalised residuals
/// into pixels. Owned by [`super::AbsolutePoseWorkspace`] and refilled per frame.
#[derive(Debug, Clone, Default)]
pub struct PoseData {
    /// Normalised (undistorted) image coordinates `(x/z, y/z)`.
    pub normalized: Vec<Vector2<f64>>,
    /// Unit bearing vectors of `normalized`.
    pub bearings: Vec<Vector3<f64>>,
    /// World points.
    pub points: Vec<Vector3<f64>>,
    /// Horizontal focal length (pixels).
    pub fx: f64,
    /// Vertical focal length (pixels).
    pub fy: f64,
}

impl PoseData {
    /// Empties the buffers, keeping their capacity.
    pub fn clear(&mut self) {
        self.normalized.clear();
        self.bearings.clear();
        self.points.clear();
    }

    /// Appends one correspondence.
    pub fn push(&mut self, normalized: Vector2<f64>, point: Vector3<f64>) {
        self.bearings
            .push(Vector3::new(normalized.x, normalized.y, 1.0).normalize());
        self.normalized.push(normalized);
        self.points.push(point);
    }

    /// Number of correspondences.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Squared reprojection error in pixels of correspondence `i` (infinite behind the camera).
    #[inline(always)]
    pub fn residual2(&self, pose: &CameraPose, i: usize) -> f64 {
        let p = pose.r * self.points[i] + pose.t;
        if p.z <= 1e-9 {
            return f64::INFINITY;
        }
        let iz = 1.0 / p.z;
        let x = &self.normalized[i];
        let dx = self.fx * (p.x * iz - x.x);
        let dy = self.fy * (p.y * iz - x.y);
        dx * dx + dy * dy
    }

    fn lo(&self, model: &CameraPose, inliers: &[usize], threshold: f64) -> Option<CameraPose> {
        let opts = RefineOptions {
            loss: RobustLoss::Truncated(threshold),
            max_iterations: 8,
            cost_tolerance: 1e-6,
            ..RefineOptions::default()
        };
        // Large inlier sets: a strided subset of at most ~LO_MAX_POINTS is plenty for LO; the
        // final refinement uses every inlier.
        let stride = inliers.len().div_ceil(LO_MAX_POINTS).max(1);
        let (p, report) =
            refine_pose_strided(&model.orthonormalized(), self, inliers, stride, &opts);
        (report.final_cost.is_finite() && p.is_finite()).then_some(p)
    }
}

/// Full 6-DoF absolute pose from 3 points (Lambda Twist P3P).
#[derive(Debug, Clone, Copy)]
pub struct P3pEstimator<'a> {
    /// The correspondences.
    pub data: &'a PoseData,
}

impl Estimator for P3pEstimator<'_> {
    type Model = CameraPose;
    const SAMPLE_SIZE: usize = 3;

    fn num_data(&self) -> usize {
        self.data.len()
    }

    #[inline]
    fn generate(&self, s: &[usize], models: &mut Solutions<CameraPose>) {
        let b = &self.data.bearings;
        let p = &self.data.points;
        p3p(
            &[b[s[0]], b[s[1]], b[s[2]]],
            &[p[s[0]], p[s[1]], p[s[2]]],
            models,
        );
    }

    #[inline(always)]
    fn residual2(&self, model: &CameraPose, i: usize) -> f64 {
        self.data.residual2(model, i)
    }

    fn local_optimize(
        &self,
        model: &CameraPose,
        inliers: &[usize],
        threshold: f64,
    ) -> Option<CameraPose> {
        self.data.lo(model, inliers, threshold)
    }

    fn sample_is_degenerate(&self, s: &[usize]) -> bool {
        let p = &self.data.points;
        let d1 = p[s[1]] - p[s[0]];
        let d2 = p[s[2]] - p[s[0]];
        let n = d1.cross(&d2).norm_squared();
        // Collinear (or coincident) world points: sin² of the angle below ~1e-8.
        n <= 1e-8 * d1.norm_squared() * d2.norm_squared()
    }

    fn model_cost(&self) -> f64 {
        120.0
    }

    fn models_per_sample(&self) -> f64 {
        1.6
    }
}

/// 4-DoF absolute pose from 2 points and a known vertical (upright P2P). Models are full poses;
/// local optimisation is 6-DoF, so gravity noise is absorbed by the refinement.
#[derive(Debug, Clone, Copy)]
pub struct Up2pEstimator<'a> {
    /// The correspondences.
    pub data: &'a PoseData,
    rc: Matrix3<f64>,
    rw: Matrix3<f64>,
}

impl<'a> Up2pEstimator<'a> {
    /// An estimator for `data` with world-up `g_world` seen as `g_cam` in the camera frame.
    /// Both vectors must be non-zero and finite (checked by the caller).
    pub fn new(data: &'a PoseData, g_cam: &Vector3<f64>, g_world: &Vector3<f64>) -> Self {
        Up2pEstimator {
            data,
            rc: rotation_to_y(g_cam),
            rw: rotation_to_y(g_world),
        }
    }
}

impl Estimator for Up2pEstimator<'_> {
    type Model = CameraPose;
    const SAMPLE_SIZE: usize = 2;

    fn num_data(&self) -> usize {
        self.data.len()
    }

    #[inline]
    fn generate(&self, s: &[usize], models: &mut Solutions<CameraPose>) {
        let b = &self.data.bearings;
        let p = &self.data.points;
        up2p(
            &[b[s[0]], b[s[1]]],
            &[p[s[0]], p[s[1]]],
            &self.rc,
            &self.rw,
            models,
        );
    }

    #[inline(always)]
    fn residual2(&self, model: &CameraPose, i: usize) -> f64 {
        self.data.residual2(model, i)
    }

    fn local_optimize(
        &self,
        model: &CameraPose,
        inliers: &[usize],
        threshold: f64,
    ) -> Option<CameraPose> {
        self.data.lo(model, inliers, threshold)
    }

    fn sample_is_degenerate(&self, s: &[usize]) -> bool {
        let p = &self.data.points;
        let b = &self.data.bearings;
        (p[s[1]] - p[s[0]]).norm_squared() < 1e-12 || b[s[0]].dot(&b[s[1]]) > 1.0 - 1e-12
    }

    fn model_cost(&self) -> f64 {
        40.0
    }

    fn models_per_sample(&self) -> f64 {
        1.5
    }
}
