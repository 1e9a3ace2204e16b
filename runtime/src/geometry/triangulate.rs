//! Multi-view triangulation of one point for the map builder.
//!
//! **Contract.** Given ≥ 2 observations (camera, world-to-camera pose, pixel), return the world
//! point minimising the reprojection error, or say why it should not enter the map: rays too close
//! to parallel ([`GeometryError::SmallTriangulationAngle`]), point behind a camera
//! ([`GeometryError::BehindCamera`]), or an observation it does not explain
//! ([`GeometryError::LargeReprojectionError`]). Never allocates; never returns NaN.
//!
//! **Equations.** Pixels are undistorted to normalised coordinates `(x, y)`. The linear (DLT)
//! estimate stacks, per view with `P = [R | t]`, the rows `x P₃ − P₁` and `y P₃ − P₂` (each scaled
//! to unit norm) and takes the right singular vector of the smallest singular value, i.e. the
//! eigenvector of the smallest eigenvalue of the 4×4 `AᵀA`; world coordinates are first shifted to
//! the mean camera centre for conditioning. Gauss–Newton then minimises
//! `Σ ‖(f_x (X_c/Z_c − x), f_y (Y_c/Z_c − y))‖²` over the 3 coordinates. The triangulation angle
//! is the largest angle between the rays from two camera centres to the point.
//!
//! **Reference.** R. Hartley, A. Zisserman, "Multiple View Geometry in Computer Vision", 2nd ed.,
//! §12.2 (DLT) and §12.5 (reprojection error).

use nalgebra::{Matrix3, Matrix4, Vector2, Vector3, Vector4};

use super::{CameraPose, GeometryError};
use crate::{Camera, Pose};

/// One view of the point.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The camera that took the view.
    pub camera: &'a Camera,
    /// World-to-camera pose of the view.
    pub pose: &'a Pose,
    /// Observed pixel (distorted, as detected).
    pub pixel: Vector2<f64>,
}

/// Acceptance limits of [`triangulate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TriangulationOptions {
    /// Smallest acceptable triangulation angle (radians).
    pub min_angle_rad: f64,
    /// Largest acceptable reprojection error in any view (pixels).
    pub max_reprojection_px: f64,
    /// Gauss–Newton iterations after the DLT.
    pub refine_iterations: usize,
}

impl Default for TriangulationOptions {
    fn default() -> Self {
        TriangulationOptions {
            min_angle_rad: 1.5f64.to_radians(),
            max_reprojection_px: 4.0,
            refine_iterations: 10,
        }
    }
}

/// A triangulated point and its quality.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TriangulatedPoint {
    /// World coordinates (metres).
    pub point: Vector3<f64>,
    /// Largest angle between two viewing rays (radians).
    pub angle_rad: f64,
    /// Largest reprojection error over the views (pixels).
    pub max_reprojection_px: f64,
    /// RMS reprojection error over the views (pixels).
    pub rms_reprojection_px: f64,
}

struct View {
    pose: CameraPose,
    x: Vector2<f64>,
    fx: f64,
    fy: f64,
}

fn view(o: &Observation<'_>) -> View {
    View {
        pose: CameraPose::from_pose(o.pose),
        x: o.camera.pixel_to_normalized(&o.pixel),
        fx: o.camera.fx(),
        fy: o.camera.fy(),
    }
}

fn reproj(v: &View, p: &Vector3<f64>) -> Option<Vector2<f64>> {
    let c = v.pose.transform(p);
    (c.z > 1e-12).then(|| Vector2::new(v.fx * (c.x / c.z - v.x.x), v.fy * (c.y / c.z - v.x.y)))
}

/// Linear (DLT) triangulation from the views, in world coordinates.
fn dlt(obs: &[Observation<'_>], origin: &Vector3<f64>) -> Option<Vector3<f64>> {
    let mut ata = Matrix4::<f64>::zeros();
    for o in obs {
        let v = view(o);
        // P' = [R | R o + t] acts on X − o.
        let t = v.pose.r * origin + v.pose.t;
        let p = |k: usize| Vector4::new(v.pose.r[(k, 0)], v.pose.r[(k, 1)], v.pose.r[(k, 2)], t[k]);
        for row in [p(2) * v.x.x - p(0), p(2) * v.x.y - p(1)] {
            let nrm = row.norm();
            if nrm > 0.0 {
                let r = row / nrm;
                ata += r * r.transpose();
            }
        }
    }
    let eig = ata.symmetric_eigen();
    let k = eig.eigenvalues.imin();
    let h = eig.eigenvectors.column(k);
    if !(h[3].abs() > 1e-12 * h.norm()) {
        return None; // point at infinity (parallel rays)
    }
    let x = Vector3::new(h[0], h[1], h[2]) / h[3] + origin;
    x.iter().all(|c| c.is_finite()).then_some(x)
}

/// Triangulates one point from `obs` (≥ 2 views); see the module documentation.
pub fn triangulate(
    obs: &[Observation<'_>],
    opts: &TriangulationOptions,
) -> Result<TriangulatedPoint, GeometryError> {
    if obs.len() < 2 {
        return Err(GeometryError::TooFewCorrespondences {
            needed: 2,
            got: obs.len(),
        });
    }
    let mut origin = Vector3::zeros();
    for (i, o) in obs.iter().enumerate() {
        if !o.pixel.iter().all(|c| c.is_finite()) {
            return Err(GeometryError::NonFiniteInput { index: i });
        }
        origin += o.pose.center().coords;
    }
    origin /= obs.len() as f64;
    let mut x =
        dlt(obs, &origin).ok_or(GeometryError::SmallTriangulationAngle { angle_rad: 0.0 })?;

    // Gauss–Newton on the reprojection error.
    let cost = |p: &Vector3<f64>| -> f64 {
        obs.iter()
            .map(|o| reproj(&view(o), p).map_or(f64::INFINITY, |r| r.norm_squared()))
            .sum()
    };
    let mut c0 = cost(&x);
    for _ in 0..opts.refine_iterations {
        if !c0.is_finite() {
            break;
        }
        let mut h = Matrix3::<f64>::zeros();
        let mut g = Vector3::<f64>::zeros();
        for o in obs {
            let v = view(o);
            let pc = v.pose.transform(&x);
            let iz = 1.0 / pc.z;
            let (u, w) = (pc.x * iz, pc.y * iz);
            let r = Vector2::new(v.fx * (u - v.x.x), v.fy * (w - v.x.y));
            let dz = nalgebra::Matrix2x3::new(
                v.fx * iz,
                0.0,
                -v.fx * u * iz,
                0.0,
                v.fy * iz,
                -v.fy * w * iz,
            );
            let j = dz * v.pose.r;
            h += j.transpose() * j;
            g += j.transpose() * r;
        }
        let Some(chol) = h.cholesky() else { break };
        let step = -chol.solve(&g);
        let cand = x + step;
        let c1 = cost(&cand);
        if !(c1 < c0) {
            break;
        }
        let done = step.norm() < 1e-12 * (1.0 + x.norm());
        x = cand;
        c0 = c1;
        if done {
            break;
        }
    }

    // Checks: cheirality, reprojection, triangulation angle.
    let mut worst = 0.0f64;
    let mut worst_view = 0;
    let mut ss = 0.0;
    for (i, o) in obs.iter().enumerate() {
        let v = view(o);
        let Some(r) = reproj(&v, &x) else {
            return Err(GeometryError::BehindCamera { view: i });
        };
        let e = r.norm();
        ss += e * e;
        if e > worst {
            worst = e;
            worst_view = i;
        }
    }
    let mut angle = 0.0f64;
    for i in 0..obs.len() {
        let ri = x - obs[i].pose.center().coords;
        for o in &obs[i + 1..] {
            let rj = x - o.pose.center().coords;
            angle = angle.max(ri.angle(&rj));
        }
    }
    if !(angle >= opts.min_angle_rad) {
        return Err(GeometryError::SmallTriangulationAngle { angle_rad: angle });
    }
    if !(worst <= opts.max_reprojection_px) {
        return Err(GeometryError::LargeReprojectionError {
            view: worst_view,
            error_px: worst,
        });
    }
    Ok(TriangulatedPoint {
        point: x,
        angle_rad: angle,
        max_reprojection_px: worst,
        rms_reprojection_px: (ss / obs.len() as f64).sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::rng::Pcg32;
    use nalgebra::Point3;

    fn cams(rng: &mut Pcg32, k: usize, target: &Point3<f64>, baseline: f64) -> Vec<Pose> {
        (0..k)
            .map(|_| {
                let eye = Point3::new(
                    rng.uniform(-baseline, baseline),
                    -8.0 + rng.uniform(-1.0, 1.0),
                    rng.uniform(-baseline, baseline) + 1.5,
                );
                Pose::look_at(&eye, target, &Vector3::z()).expect("pose")
            })
            .collect()
    }

    #[test]
    fn noise_free_multi_view_is_exact_and_noisy_is_close() {
        let cam = Camera::pinhole(640, 480, 500.0, 500.0, 320.0, 240.0).expect("camera");
        let mut rng = Pcg32::new(1);
        for trial in 0..50 {
            let x = Vector3::new(
                rng.uniform(-2.0, 2.0),
                rng.uniform(-2.0, 2.0),
                rng.uniform(0.0, 3.0),
            );
            let poses = cams(&mut rng, 2 + trial % 5, &Point3::origin(), 3.0);
            for noise in [0.0, 1.0] {
                let obs: Vec<Observation> = poses
                    .iter()
                    .map(|p| {
                        let px = cam
                            .project(&p.transform_point(&Point3::from(x)).coords)
                            .expect("visible");
                        Observation {
                            camera: &cam,
                            pose: p,
                            pixel: px + Vector2::new(noise * rng.normal(), noise * rng.normal()),
                        }
                    })
                    .collect();
                let t = triangulate(&obs, &TriangulationOptions::default()).expect("triangulated");
                if noise == 0.0 {
                    assert!((t.point - x).norm() < 1e-9, "{} vs {}", t.point, x);
                    assert!(t.max_reprojection_px < 1e-6);
                } else {
                    assert!((t.point - x).norm() < 0.3, "{}", (t.point - x).norm());
                    assert!(t.rms_reprojection_px < 3.0);
                }
            }
        }
    }

    #[test]
    fn rejects_small_angle_behind_camera_and_bad_reprojection() {
        let cam = Camera::pinhole(640, 480, 500.0, 500.0, 320.0, 240.0).expect("camera");
        let target = Point3::new(0.0, 0.0, 0.0);
        let p1 =
            Pose::look_at(&Point3::new(0.0, -10.0, 0.0), &target, &Vector3::z()).expect("pose");
        let p2 =
            Pose::look_at(&Point3::new(0.01, -10.0, 0.0), &target, &Vector3::z()).expect("pose");
        let px =
            |p: &Pose, x: &Point3<f64>| cam.project(&p.transform_point(x).coords).expect("visible");
        let x = Point3::new(0.5, 0.0, 0.2);
        let obs = [
            Observation {
                camera: &cam,
                pose: &p1,
                pixel: px(&p1, &x),
            },
            Observation {
                camera: &cam,
                pose: &p2,
                pixel: px(&p2, &x),
            },
        ];
        assert!(matches!(
            triangulate(&obs, &TriangulationOptions::default()),
            Err(GeometryError::SmallTriangulationAngle { .. })
        ));

        // Identical rays from two distinct centres but a pixel that contradicts: large error.
        let p3 = Pose::look_at(&Point3::new(5.0, -8.0, 0.0), &target, &Vector3::z()).expect("pose");
        let p4 =
            Pose::look_at(&Point3::new(-5.0, -8.0, 0.0), &target, &Vector3::z()).expect("pose");
        let p5 = Pose::look_at(&Point3::new(0.0, -8.0, 5.0), &target, &Vector3::z()).expect("pose");
        let obs = [
            Observation {
                camera: &cam,
                pose: &p3,
                pixel: px(&p3, &x),
            },
            Observation {
                camera: &cam,
                pose: &p4,
                pixel: px(&p4, &x),
            },
            Observation {
                camera: &cam,
                pose: &p5,
                pixel: px(&p5, &x) + Vector2::new(40.0, -30.0),
            },
        ];
        assert!(matches!(
            triangulate(&obs, &TriangulationOptions::default()),
            Err(GeometryError::LargeReprojectionError { .. })
        ));

        // Rays that meet behind the cameras (diverging forward rays).
        let a = Pose::look_at(
            &Point3::new(-1.0, 0.0, 0.0),
            &Point3::new(-2.0, 10.0, 0.0),
            &Vector3::z(),
        )
        .expect("pose");
        let b = Pose::look_at(
            &Point3::new(1.0, 0.0, 0.0),
            &Point3::new(2.0, 10.0, 0.0),
            &Vector3::z(),
        )
        .expect("pose");
        let obs = [
            Observation {
                camera: &cam,
                pose: &a,
                pixel: Vector2::new(320.0, 240.0),
            },
            Observation {
                camera: &cam,
                pose: &b,
                pixel: Vector2::new(320.0, 240.0),
            },
        ];
        let r = triangulate(&obs, &TriangulationOptions::default());
        assert!(
            matches!(
                r,
                Err(GeometryError::BehindCamera { .. })
                    | Err(GeometryError::SmallTriangulationAngle { .. })
            ),
            "{r:?}"
        );

        // One view, NaN pixel.
        assert!(matches!(
            triangulate(&obs[..1], &TriangulationOptions::default()),
            Err(GeometryError::TooFewCorrespondences { .. })
        ));
        let nan = [
            obs[0],
            Observation {
                pixel: Vector2::new(f64::NAN, 1.0),
                ..obs[1]
            },
        ];
        assert!(matches!(
            triangulate(&nan, &TriangulationOptions::default()),
            Err(GeometryError::NonFiniteInput { index: 1 })
        ));
    }
}
