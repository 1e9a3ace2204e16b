//! Absolute pose from 2D–3D matches: the entry point the localiser calls.
//!
//! **Contract.** [`estimate_absolute_pose`] takes pixel keypoints, their matched world points, an
//! optional gravity reading and options; it returns the world-to-camera [`Pose`], its covariance,
//! the inlier count and RANSAC statistics, and leaves the inlier indices in the workspace. Bad
//! input (length mismatch, NaN, zero gravity, bad options) is a [`GeometryError`], never a panic;
//! too little support is [`GeometryError::NoConsensus`]. With a warm workspace nothing allocates.
//!
//! **Pipeline.** Keypoints are undistorted to normalised coordinates (`Camera::pixel_to_normalized`)
//! and copied into the workspace in a seeded random order (so SPRT's sequential test sees the
//! data in random order, whatever order the caller used); LO-RANSAC runs with P3P, or with the
//! upright 2-point solver when gravity is given; the best pose is refined with a Cauchy loss
//! over the RANSAC inliers, inliers are re-selected with the threshold and the pose refined once
//! more; the covariance comes from the final Jacobian over the final inliers.

use nalgebra::{Vector2, Vector3};

use super::estimator::{P3pEstimator, PoseData, Up2pEstimator};
use super::ransac::{RansacOptions, RansacStats, RansacWorkspace, Sampling, ransac};
use super::refine::{PoseCovariance, RefineOptions, pose_covariance, refine_pose};
use super::rng::Pcg32;
use super::{CameraPose, GeometryError};
use crate::{Camera, Pose};

/// Gravity as the AR framework reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gravity {
    /// World up direction expressed in the camera frame (any non-zero length).
    pub up_in_camera: Vector3<f64>,
    /// World up direction in the world frame (`+z` for maps anchored in ENU).
    pub up_in_world: Vector3<f64>,
}

/// Options of [`estimate_absolute_pose`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbsolutePoseOptions {
    /// Inlier threshold on the reprojection error (pixels).
    pub threshold_px: f64,
    /// RANSAC options (its `threshold` is overwritten by `threshold_px`).
    pub ransac: RansacOptions,
    /// Final refinement options (default: Cauchy loss with a 2 px scale).
    pub refine: RefineOptions,
    /// Fewest inliers for a pose to be returned.
    pub min_inliers: usize,
    /// Compute the covariance.
    pub covariance: bool,
    /// Expected error of the gravity reading (radians). Upright hypotheses inherit it as a tilt,
    /// which displaces far points by about `f · tan(tol)` pixels, so with gravity RANSAC scores
    /// hypotheses at `hypot(threshold_px, f · tan(tol))`; local optimisation and the final
    /// refinement are 6-DoF and the final inliers use `threshold_px` itself.
    pub gravity_tolerance_rad: f64,
}

impl Default for AbsolutePoseOptions {
    fn default() -> Self {
        AbsolutePoseOptions {
            threshold_px: 4.0,
            ransac: RansacOptions::default(),
            refine: RefineOptions::default(),
            min_inliers: 6,
            covariance: true,
            gravity_tolerance_rad: 0.5f64.to_radians(),
        }
    }
}

/// The result of [`estimate_absolute_pose`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbsolutePose {
    /// World-to-camera pose.
    pub pose: Pose,
    /// Covariance (when requested and well defined).
    pub covariance: Option<PoseCovariance>,
    /// Number of inliers (indices in [`AbsolutePoseWorkspace::inliers`]).
    pub num_inliers: usize,
    /// RMS reprojection error over the inliers (pixels).
    pub rms_reprojection_px: f64,
    /// True when the upright 2-point solver (gravity) generated the hypotheses.
    pub used_gravity: bool,
    /// RANSAC statistics.
    pub ransac: RansacStats,
}

/// Buffers reused across calls to [`estimate_absolute_pose`]. Keep one per thread.
#[derive(Debug, Clone, Default)]
pub struct AbsolutePoseWorkspace {
    data: PoseData,
    /// `original[k]`: caller index of the k-th datum in `data` (shuffled order).
    original: Vec<u32>,
    /// PROSAC order: `position[i]`: where caller index `i` sits in `data`.
    position: Vec<u32>,
    ransac: RansacWorkspace,
    scratch: Vec<usize>,
    inliers: Vec<usize>,
}

impl AbsolutePoseWorkspace {
    /// An empty workspace; it grows to the largest problem seen and then stays put.
    pub fn new() -> Self {
        Self::default()
    }

    /// A workspace pre-sized for `n` correspondences (so that even the first call does not allocate).
    pub fn with_capacity(n: usize) -> Self {
        let mut ws = Self::default();
        ws.reserve(n);
        ws
    }

    fn reserve(&mut self, n: usize) {
        let d = &mut self.data;
        for v in [&mut self.scratch, &mut self.inliers] {
            v.reserve(n.saturating_sub(v.len()));
        }
        d.normalized.reserve(n.saturating_sub(d.normalized.len()));
        d.bearings.reserve(n.saturating_sub(d.bearings.len()));
        d.points.reserve(n.saturating_sub(d.points.len()));
        self.original.reserve(n.saturating_sub(self.original.len()));
        self.position.reserve(n.saturating_sub(self.position.len()));
    }

    /// Inlier indices (into the caller's arrays, ascending) of the last successful estimate.
    pub fn inliers(&self) -> &[usize] {
        &self.inliers
    }
}

fn validate(
    points2d: &[Vector2<f64>],
    points3d: &[Vector3<f64>],
    gravity: Option<&Gravity>,
    options: &AbsolutePoseOptions,
    needed: usize,
) -> Result<(), GeometryError> {
    if points2d.len() != points3d.len() {
        return Err(GeometryError::LengthMismatch {
            points2d: points2d.len(),
            points3d: points3d.len(),
        });
    }
    if !(options.threshold_px > 0.0 && options.threshold_px.is_finite()) {
        return Err(GeometryError::InvalidOption(
            "threshold_px must be positive and finite",
        ));
    }
    if !(options.ransac.confidence > 0.0 && options.ransac.confidence < 1.0) {
        return Err(GeometryError::InvalidOption("confidence must be in (0, 1)"));
    }
    if !(options.gravity_tolerance_rad >= 0.0 && options.gravity_tolerance_rad < 0.5) {
        return Err(GeometryError::InvalidOption(
            "gravity_tolerance_rad must be in [0, 0.5)",
        ));
    }
    if let Some(g) = gravity {
        let ok = |v: &Vector3<f64>| v.iter().all(|c| c.is_finite()) && v.norm() > 1e-12;
        if !ok(&g.up_in_camera) || !ok(&g.up_in_world) {
            return Err(GeometryError::InvalidGravity);
        }
    }
    if points2d.len() < needed {
        return Err(GeometryError::TooFewCorrespondences {
            needed,
            got: points2d.len(),
        });
    }
    if u32::try_from(points2d.len()).is_err() {
        return Err(GeometryError::InvalidOption(
            "more than 2^32 correspondences",
        ));
    }
    for (i, (p, q)) in points2d.iter().zip(points3d).enumerate() {
        if !(p.iter().all(|v| v.is_finite()) && q.iter().all(|v| v.is_finite())) {
            return Err(GeometryError::NonFiniteInput { index: i });
        }
    }
    Ok(())
}

/// Estimates the camera pose from pixel keypoints `points2d` matched to world points `points3d`.
///
/// With `gravity`, hypotheses come from the upright 2-point solver (4 DoF); the final pose is
/// always refined in 6 DoF. With `options.ransac.sampling == Sampling::Prosac`, the input order is
/// taken as the match quality order, best first.
pub fn estimate_absolute_pose(
    camera: &Camera,
    points2d: &[Vector2<f64>],
    points3d: &[Vector3<f64>],
    gravity: Option<&Gravity>,
    options: &AbsolutePoseOptions,
    ws: &mut AbsolutePoseWorkspace,
) -> Result<AbsolutePose, GeometryError> {
    ws.inliers.clear();
    let needed = if gravity.is_some() { 2 } else { 3 }.max(options.min_inliers.min(4));
    validate(points2d, points3d, gravity, options, needed)?;
    let n = points2d.len();
    ws.reserve(n);

    // Shuffled copy in normalised coordinates.
    ws.original.clear();
    ws.original.extend(0..n as u32);
    Pcg32::new(options.ransac.seed ^ 0x9E37_79B9_7F4A_7C15).shuffle(&mut ws.original);
    ws.data.clear();
    ws.data.fx = camera.fx();
    ws.data.fy = camera.fy();
    for &o in &ws.original {
        let i = o as usize;
        ws.data
            .push(camera.pixel_to_normalized(&points2d[i]), points3d[i]);
    }
    let order = if options.ransac.sampling == Sampling::Prosac {
        ws.position.clear();
        ws.position.resize(n, 0);
        for (k, &o) in ws.original.iter().enumerate() {
            ws.position[o as usize] = k as u32;
        }
        Some(&ws.position[..])
    } else {
        None
    };

    let threshold = match gravity {
        Some(_) => options
            .threshold_px
            .hypot(camera.fx().max(camera.fy()) * options.gravity_tolerance_rad.tan()),
        None => options.threshold_px,
    };
    let ropts = RansacOptions {
        threshold,
        ..options.ransac
    };
    let (best, stats) = match gravity {
        Some(g) => {
            let est = Up2pEstimator::new(&ws.data, &g.up_in_camera, &g.up_in_world);
            ransac(&est, &ropts, order, &mut ws.ransac)
        }
        None => {
            let est = P3pEstimator { data: &ws.data };
            ransac(&est, &ropts, order, &mut ws.ransac)
        }
    };
    let min_inliers = options.min_inliers.max(needed);
    let Some(best) = best.filter(|_| stats.inliers >= min_inliers) else {
        return Err(GeometryError::NoConsensus {
            inliers: stats.inliers,
            needed: min_inliers,
        });
    };

    // Final refinement: robust LM over the RANSAC inliers, re-select, refine again.
    let th2 = options.threshold_px * options.threshold_px;
    let refine_opts = options.refine;
    let mut pose = best.orthonormalized();
    ws.scratch.clear();
    ws.scratch.extend_from_slice(ws.ransac.inliers());
    for round in 0..2 {
        let (p, report) = refine_pose(&pose, &ws.data, &ws.scratch, &refine_opts);
        if p.is_finite() && report.final_cost <= report.initial_cost {
            pose = p;
        }
        let prev = ws.scratch.len();
        ws.scratch.clear();
        for i in 0..n {
            if ws.data.residual2(&pose, i) < th2 {
                ws.scratch.push(i);
            }
        }
        // A second round only when the inlier set changed noticeably.
        if round == 0 && ws.scratch.len().abs_diff(prev) * 200 <= prev {
            break;
        }
    }
    if ws.scratch.len() < min_inliers {
        return Err(GeometryError::NoConsensus {
            inliers: ws.scratch.len(),
            needed: min_inliers,
        });
    }
    let mut ss = 0.0;
    for &i in &ws.scratch {
        ss += ws.data.residual2(&pose, i);
    }
    let rms = (ss / ws.scratch.len() as f64).sqrt();
    let covariance = if options.covariance {
        pose_covariance(&pose, &ws.data, &ws.scratch, None)
    } else {
        None
    };
    let out_pose = pose_to_runtime(&pose)?;
    ws.inliers.clear();
    for &k in &ws.scratch {
        ws.inliers.push(ws.original[k] as usize);
    }
    ws.inliers.sort_unstable();
    Ok(AbsolutePose {
        pose: out_pose,
        covariance,
        num_inliers: ws.inliers.len(),
        rms_reprojection_px: rms,
        used_gravity: gravity.is_some(),
        ransac: stats,
    })
}

fn pose_to_runtime(p: &CameraPose) -> Result<Pose, GeometryError> {
    if !p.is_finite() {
        return Err(GeometryError::Degenerate);
    }
    p.to_pose().map_err(|_| GeometryError::Degenerate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::synth::{SceneKind, SynthConfig, SynthProblem, generate};

    fn camera_of(p: &SynthProblem) -> Camera {
        let k = p.intrinsics;
        Camera::pinhole(k.width, k.height, k.fx, k.fy, k.cx, k.cy).expect("valid camera")
    }

    fn solve(
        p: &SynthProblem,
        gravity: bool,
        ws: &mut AbsolutePoseWorkspace,
    ) -> Result<AbsolutePose, GeometryError> {
        let g = Gravity {
            up_in_camera: p.gravity,
            up_in_world: p.world_up,
        };
        let opts = AbsolutePoseOptions {
            threshold_px: p.threshold_px,
            ..Default::default()
        };
        estimate_absolute_pose(
            &camera_of(p),
            &p.points2d,
            &p.points3d,
            gravity.then_some(&g),
            &opts,
            ws,
        )
    }

    fn success(p: &SynthProblem, est: &AbsolutePose) -> bool {
        let gt = CameraPose::from_pose(&est.pose);
        let rot = (gt.r * p.gt.r.transpose()).trace();
        let ang = ((rot - 1.0) / 2.0).clamp(-1.0, 1.0).acos().to_degrees();
        let rel = (gt.t - p.gt.t).norm() / p.gt.t.norm();
        ang < 1.0 && rel < 0.01
    }

    #[test]
    fn noise_free_problems_recover_pose_to_1e9() {
        let mut ws = AbsolutePoseWorkspace::new();
        for seed in 0..20 {
            let cfg = SynthConfig {
                n: 60,
                outlier_ratio: 0.3,
                noise_px: (0.0, 0.0),
                gravity_noise_deg: (0.0, 0.0),
                ..Default::default()
            };
            let mut p = generate(&cfg, seed);
            p.threshold_px = 2.0;
            for gravity in [false, true] {
                let est = solve(&p, gravity, &mut ws).expect("pose");
                let got = CameraPose::from_pose(&est.pose);
                assert!(
                    (got.r - p.gt.r).norm() < 1e-9,
                    "seed {seed} gravity {gravity}"
                );
                assert!((got.t - p.gt.t).norm() < 1e-9 * p.gt.t.norm().max(1.0));
                assert_eq!(ws.inliers(), &p.inliers[..]);
            }
        }
    }

    #[test]
    fn noisy_problems_with_outliers_succeed() {
        let mut ws = AbsolutePoseWorkspace::new();
        let mut fails = 0;
        for (i, (outl, n)) in [(0.0, 50), (0.5, 200), (0.75, 200), (0.9, 300)]
            .into_iter()
            .enumerate()
        {
            for s in 0..5u64 {
                let cfg = SynthConfig {
                    n,
                    outlier_ratio: outl,
                    ..Default::default()
                };
                let p = generate(&cfg, 100 * i as u64 + s);
                for gravity in [false, true] {
                    match solve(&p, gravity, &mut ws) {
                        Ok(est) if success(&p, &est) => {
                            let recall = p
                                .inliers
                                .iter()
                                .filter(|i| ws.inliers().binary_search(i).is_ok())
                                .count();
                            assert!(recall as f64 >= 0.9 * p.inliers.len() as f64);
                            let cov = est.covariance.expect("covariance");
                            assert!(
                                cov.position_sigma_total_m() > 0.0
                                    && cov.position_sigma_total_m() < 0.5
                            );
                        }
                        _ => fails += 1,
                    }
                }
            }
        }
        assert_eq!(fails, 0);
    }

    #[test]
    fn near_planar_and_narrow_fov_succeed() {
        let mut ws = AbsolutePoseWorkspace::new();
        for s in 0..5 {
            for cfg in [
                SynthConfig {
                    n: 200,
                    outlier_ratio: 0.5,
                    scene: SceneKind::NearPlanar,
                    ..Default::default()
                },
                SynthConfig {
                    n: 200,
                    outlier_ratio: 0.5,
                    focal_px: 2000.0,
                    depth_range: (10.0, 30.0),
                    ..Default::default()
                },
            ] {
                let p = generate(&cfg, 1000 + s);
                let est = solve(&p, false, &mut ws).expect("pose");
                assert!(success(&p, &est), "{cfg:?} seed {s}");
            }
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        let p = generate(
            &SynthConfig {
                n: 300,
                outlier_ratio: 0.7,
                ..Default::default()
            },
            5,
        );
        let mut ws = AbsolutePoseWorkspace::new();
        let a = solve(&p, false, &mut ws).expect("pose");
        let inl_a = ws.inliers().to_vec();
        let mut ws2 = AbsolutePoseWorkspace::new();
        let b = solve(&p, false, &mut ws2).expect("pose");
        assert_eq!(a, b);
        assert_eq!(inl_a, ws2.inliers());
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let cam = Camera::pinhole(640, 480, 500.0, 500.0, 320.0, 240.0).expect("camera");
        let mut ws = AbsolutePoseWorkspace::new();
        let o = AbsolutePoseOptions::default();
        let p2 = vec![Vector2::new(1.0, 2.0); 10];
        let p3 = vec![Vector3::new(1.0, 2.0, 3.0); 9];
        assert!(matches!(
            estimate_absolute_pose(&cam, &p2, &p3, None, &o, &mut ws),
            Err(GeometryError::LengthMismatch { .. })
        ));
        assert!(matches!(
            estimate_absolute_pose(&cam, &p2[..2], &p3[..2], None, &o, &mut ws),
            Err(GeometryError::TooFewCorrespondences { .. })
        ));
        let mut p3 = vec![Vector3::new(1.0, 2.0, 3.0); 10];
        p3[4].x = f64::NAN;
        assert_eq!(
            estimate_absolute_pose(&cam, &p2, &p3, None, &o, &mut ws),
            Err(GeometryError::NonFiniteInput { index: 4 })
        );
        let g = Gravity {
            up_in_camera: Vector3::zeros(),
            up_in_world: Vector3::z(),
        };
        let p3 = vec![Vector3::new(1.0, 2.0, 3.0); 10];
        assert_eq!(
            estimate_absolute_pose(&cam, &p2, &p3, Some(&g), &o, &mut ws),
            Err(GeometryError::InvalidGravity)
        );
        // All-identical correspondences: degenerate, must be an error, never NaN.
        assert!(matches!(
            estimate_absolute_pose(&cam, &p2, &p3, None, &o, &mut ws),
            Err(GeometryError::NoConsensus { .. })
        ));
        let bad = AbsolutePoseOptions {
            threshold_px: -1.0,
            ..Default::default()
        };
        assert!(matches!(
            estimate_absolute_pose(&cam, &p2, &p3, None, &bad, &mut ws),
            Err(GeometryError::InvalidOption(_))
        ));
        // Pure noise: no pose, or at worst a finite one.
        let mut rng = Pcg32::new(1);
        let p2: Vec<_> = (0..100)
            .map(|_| Vector2::new(rng.uniform(0.0, 640.0), rng.uniform(0.0, 480.0)))
            .collect();
        let p3: Vec<_> = (0..100)
            .map(|_| Vector3::new(rng.normal(), rng.normal(), rng.normal()))
            .collect();
        let opts = AbsolutePoseOptions {
            min_inliers: 15,
            ..Default::default()
        };
        match estimate_absolute_pose(&cam, &p2, &p3, None, &opts, &mut ws) {
            Err(GeometryError::NoConsensus { .. }) => {}
            Ok(e) => assert!(CameraPose::from_pose(&e.pose).is_finite()),
            Err(e) => panic!("unexpected {e}"),
        }
    }
}
