//! Seeded synthetic absolute-pose problems with known ground truth, for tests, benches and
//! `sextant eval pnp`.
//!
//! A problem is generated in the camera frame first: pixels uniform over the image, depths
//! uniform in a range (or on a tilted plane for near-planar scenes), back-projected to 3D; inlier
//! observations get Gaussian pixel noise, outliers are re-drawn uniformly over the image (and kept
//! only if they really are farther than the threshold from the true projection). The camera gets
//! a random heading, a pitch within ±30° and a roll within ±15° around a z-up world whose origin
//! is the centroid of the inlier points, so `|t|` is the scene distance and "relative translation
//! error" means what it says. Gravity (world up seen in the camera) is perturbed by an IMU-like
//! tilt. The same config and seed always give the same problem.

use nalgebra::{Matrix3, Rotation3, UnitQuaternion, Vector2, Vector3, Vector4};

use super::CameraPose;
use super::rng::Pcg32;

/// A uniformly random rotation matrix (uniform unit quaternion, Shoemake's method).
pub fn random_rotation(rng: &mut Pcg32) -> Matrix3<f64> {
    let q = Vector4::new(rng.normal(), rng.normal(), rng.normal(), rng.normal());
    let q = UnitQuaternion::from_quaternion(nalgebra::Quaternion::from(q));
    *q.to_rotation_matrix().matrix()
}

/// A random pose (uniform rotation, translation uniform in ±`max_translation` on each axis) and
/// `N` points in front of it (normalised x, y in ±1, depth 2–8 m): their unit bearings in the
/// camera frame and their world positions. The minimal solvers' tests and benches draw from it.
pub fn random_minimal_instance<const N: usize>(
    rng: &mut Pcg32,
    max_translation: f64,
) -> (CameraPose, [Vector3<f64>; N], [Vector3<f64>; N]) {
    let m = max_translation;
    let gt = CameraPose {
        r: random_rotation(rng),
        t: Vector3::new(rng.uniform(-m, m), rng.uniform(-m, m), rng.uniform(-m, m)),
    };
    let mut bearings = [Vector3::zeros(); N];
    let mut world = [Vector3::zeros(); N];
    for (x, xw) in bearings.iter_mut().zip(world.iter_mut()) {
        let pc = Vector3::new(
            rng.uniform(-1.0, 1.0),
            rng.uniform(-1.0, 1.0),
            rng.uniform(2.0, 8.0),
        );
        *x = pc.normalize();
        *xw = gt.r.transpose() * (pc - gt.t);
    }
    (gt, bearings, world)
}

/// Pinhole intrinsics of a synthetic camera (no distortion).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intrinsics {
    /// Image width (pixels).
    pub width: u32,
    /// Image height (pixels).
    pub height: u32,
    /// Focal length x (pixels).
    pub fx: f64,
    /// Focal length y (pixels).
    pub fy: f64,
    /// Principal point x (pixels).
    pub cx: f64,
    /// Principal point y (pixels).
    pub cy: f64,
}

/// Scene layout.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum SceneKind {
    /// Points at depths spread over `depth_range`.
    #[default]
    General,
    /// Points on a plane tilted up to 50° from fronto-parallel, with `planar_jitter` metres of
    /// off-plane noise (a wall or facade).
    NearPlanar,
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthConfig {
    /// Number of correspondences.
    pub n: usize,
    /// Fraction of outliers in `[0, 1)`.
    pub outlier_ratio: f64,
    /// Pixel noise standard deviation range (per coordinate); drawn uniformly per problem.
    pub noise_px: (f64, f64),
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Focal length in pixels (500 ≈ 65° horizontal FoV at 640 px; 2000 ≈ 18° narrow FoV).
    pub focal_px: f64,
    /// Depth range of the points (metres).
    pub depth_range: (f64, f64),
    /// Scene layout.
    pub scene: SceneKind,
    /// Off-plane jitter for near-planar scenes (metres).
    pub planar_jitter: f64,
    /// Gravity tilt noise range (degrees); drawn uniformly per problem.
    pub gravity_noise_deg: (f64, f64),
    /// Inlier threshold as a multiple of the drawn noise σ (floored at 1.5 px).
    pub threshold_sigmas: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            n: 200,
            outlier_ratio: 0.0,
            noise_px: (0.5, 2.0),
            width: 640,
            height: 480,
            focal_px: 500.0,
            depth_range: (2.0, 10.0),
            scene: SceneKind::General,
            planar_jitter: 0.02,
            gravity_noise_deg: (0.2, 0.5),
            threshold_sigmas: 3.0,
        }
    }
}

/// A generated problem.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthProblem {
    /// Camera intrinsics.
    pub intrinsics: Intrinsics,
    /// Observed pixels.
    pub points2d: Vec<Vector2<f64>>,
    /// World points.
    pub points3d: Vec<Vector3<f64>>,
    /// True pose (world to camera).
    pub gt: CameraPose,
    /// Indices of the true inliers.
    pub inliers: Vec<usize>,
    /// World up (always +z).
    pub world_up: Vector3<f64>,
    /// Noisy world up seen from the camera (what an IMU reports).
    pub gravity: Vector3<f64>,
    /// Inlier threshold (pixels).
    pub threshold_px: f64,
    /// Noise σ drawn for this problem (pixels).
    pub noise_px: f64,
    /// Gravity tilt drawn for this problem (degrees).
    pub gravity_noise_deg: f64,
}

/// Generates one problem from `cfg` and `seed`.
pub fn generate(cfg: &SynthConfig, seed: u64) -> SynthProblem {
    let mut rng = Pcg32::new(seed);
    let (w, h) = (f64::from(cfg.width.max(1)), f64::from(cfg.height.max(1)));
    let k = Intrinsics {
        width: cfg.width.max(1),
        height: cfg.height.max(1),
        fx: cfg.focal_px,
        fy: cfg.focal_px,
        cx: w / 2.0,
        cy: h / 2.0,
    };
    let noise = rng.uniform(cfg.noise_px.0, cfg.noise_px.1.max(cfg.noise_px.0));
    let threshold_px = (cfg.threshold_sigmas * noise).max(1.5);
    let n = cfg.n;
    let n_out = ((n as f64) * cfg.outlier_ratio.clamp(0.0, 1.0)).round() as usize;

    // Plane for near-planar scenes, in the camera frame: n·X = d.
    let plane_n = {
        let tilt = rng.uniform(0.0, 50f64.to_radians());
        let az = rng.uniform(0.0, std::f64::consts::TAU);
        Vector3::new(tilt.sin() * az.cos(), tilt.sin() * az.sin(), tilt.cos())
    };
    let plane_d = 0.5 * (cfg.depth_range.0 + cfg.depth_range.1);

    let mut cam_pts = Vec::with_capacity(n);
    let mut pix = Vec::with_capacity(n);
    while cam_pts.len() < n {
        let px = Vector2::new(rng.uniform(0.0, w), rng.uniform(0.0, h));
        let ray = Vector3::new((px.x - k.cx) / k.fx, (px.y - k.cy) / k.fy, 1.0);
        let depth = match cfg.scene {
            SceneKind::General => rng.uniform(cfg.depth_range.0, cfg.depth_range.1),
            SceneKind::NearPlanar => {
                let den = plane_n.dot(&ray);
                if den <= 1e-3 {
                    continue;
                }
                let z = plane_d / den;
                if !(z > 0.3 * cfg.depth_range.0 && z < 3.0 * cfg.depth_range.1) {
                    continue;
                }
                z + cfg.planar_jitter * rng.normal()
            }
        };
        cam_pts.push(ray * depth);
        pix.push(px);
    }

    // Outlier indices: a random subset.
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let mut is_out = vec![false; n];
    for &i in order.iter().take(n_out) {
        is_out[i] = true;
    }
    let mut points2d = Vec::with_capacity(n);
    let mut inliers = Vec::with_capacity(n - n_out);
    for i in 0..n {
        if is_out[i] {
            let mut q = Vector2::new(rng.uniform(0.0, w), rng.uniform(0.0, h));
            for _ in 0..20 {
                if (q - pix[i]).norm() > 2.0 * threshold_px {
                    break;
                }
                q = Vector2::new(rng.uniform(0.0, w), rng.uniform(0.0, h));
            }
            points2d.push(q);
        } else {
            points2d.push(pix[i] + Vector2::new(noise * rng.normal(), noise * rng.normal()));
            inliers.push(i);
        }
    }

    // Camera orientation: heading, pitch, roll around a z-up world.
    let yaw = rng.uniform(0.0, std::f64::consts::TAU);
    let pitch = rng.uniform(-30f64.to_radians(), 30f64.to_radians());
    let roll = rng.uniform(-15f64.to_radians(), 15f64.to_radians());
    let fwd = Vector3::new(
        pitch.cos() * yaw.cos(),
        pitch.cos() * yaw.sin(),
        pitch.sin(),
    );
    let right = fwd.cross(&Vector3::z()).normalize();
    let down = fwd.cross(&right);
    let r_wc0 = Matrix3::from_columns(&[right, down, fwd]);
    let r_wc = r_wc0 * *Rotation3::from_axis_angle(&Vector3::z_axis(), roll).matrix();
    let r = r_wc.transpose();
    // World origin at the inlier centroid: X_w = R_wc (X_c − m).
    let mut m = Vector3::zeros();
    let src: Vec<usize> = if inliers.is_empty() {
        (0..n).collect()
    } else {
        inliers.clone()
    };
    for &i in &src {
        m += cam_pts[i];
    }
    m /= src.len().max(1) as f64;
    let points3d: Vec<Vector3<f64>> = cam_pts.iter().map(|p| r_wc * (p - m)).collect();
    let gt = CameraPose { r, t: m };

    // Gravity: world up in the camera frame, tilted by a small random angle.
    let up_cam = r * Vector3::z();
    let tilt_deg = rng.uniform(
        cfg.gravity_noise_deg.0,
        cfg.gravity_noise_deg.1.max(cfg.gravity_noise_deg.0),
    );
    let axis = {
        let a = Vector3::new(rng.normal(), rng.normal(), rng.normal());
        let perp = a - up_cam * a.dot(&up_cam);
        if perp.norm() > 1e-9 {
            perp.normalize()
        } else {
            up_cam.cross(&Vector3::x()).normalize()
        }
    };
    let gravity =
        Rotation3::from_axis_angle(&nalgebra::Unit::new_unchecked(axis), tilt_deg.to_radians())
            * up_cam;

    SynthProblem {
        intrinsics: k,
        points2d,
        points3d,
        gt,
        inliers,
        world_up: Vector3::z(),
        gravity,
        threshold_px,
        noise_px: noise,
        gravity_noise_deg: tilt_deg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_problem_is_consistent() {
        let cfg = SynthConfig {
            n: 300,
            outlier_ratio: 0.5,
            ..Default::default()
        };
        let p = generate(&cfg, 9);
        assert_eq!(p.points2d.len(), 300);
        assert_eq!(p.inliers.len(), 150);
        assert!((p.gt.r.determinant() - 1.0).abs() < 1e-12);
        let k = p.intrinsics;
        let mut inl = vec![false; 300];
        for &i in &p.inliers {
            inl[i] = true;
        }
        for (i, is_inlier) in inl.iter().enumerate() {
            let pc = p.gt.transform(&p.points3d[i]);
            assert!(pc.z > 0.0);
            let u = Vector2::new(k.fx * pc.x / pc.z + k.cx, k.fy * pc.y / pc.z + k.cy);
            let e = (u - p.points2d[i]).norm();
            if *is_inlier {
                assert!(e < 8.0 * p.noise_px, "inlier {i} off by {e}");
            } else {
                assert!(e > p.threshold_px, "outlier {i} only {e} px off");
            }
        }
        // Gravity is world up seen from the camera, within the drawn tilt.
        let ang = (p.gt.r * p.world_up).angle(&p.gravity).to_degrees();
        assert!((ang - p.gravity_noise_deg).abs() < 1e-9);
        assert_eq!(generate(&cfg, 9), p);
        assert_ne!(generate(&cfg, 10).points2d, p.points2d);
    }

    #[test]
    fn near_planar_points_lie_near_a_plane() {
        let cfg = SynthConfig {
            n: 100,
            scene: SceneKind::NearPlanar,
            planar_jitter: 0.0,
            ..Default::default()
        };
        let p = generate(&cfg, 3);
        // Noise-free planar: all points coplanar (smallest singular value ~0).
        let c: Vector3<f64> = p.points3d.iter().sum::<Vector3<f64>>() / 100.0;
        let mut cov = Matrix3::zeros();
        for x in &p.points3d {
            cov += (x - c) * (x - c).transpose();
        }
        let ev = cov.symmetric_eigenvalues();
        assert!(ev.min() < 1e-9 * ev.max());
    }
}
