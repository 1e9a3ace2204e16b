//! Property tests across the geometry module (proptest): noise-free round trips for arbitrary
//! rotations and translations, and arbitrary (including non-finite) input never panicking nor
//! producing a non-finite pose.

use nalgebra::{Rotation3, Vector2, Vector3};
use proptest::prelude::*;

use super::p3p::p3p;
use super::up2p::{rotation_to_y, up2p};
use super::{
    AbsolutePoseOptions, AbsolutePoseWorkspace, CameraPose, Gravity, Solutions,
    estimate_absolute_pose,
};
use crate::Camera;

fn pose_strategy() -> impl Strategy<Value = CameraPose> {
    (
        prop::array::uniform3(-3.2f64..3.2),
        prop::array::uniform3(-5.0f64..5.0),
    )
        .prop_map(|(w, t)| CameraPose {
            r: *Rotation3::new(Vector3::from(w)).matrix(),
            t: Vector3::from(t),
        })
}

/// Points in front of the camera (camera frame), well spread.
fn cam_points(n: usize) -> impl Strategy<Value = Vec<Vector3<f64>>> {
    prop::collection::vec(
        (-0.6f64..0.6, -0.45f64..0.45, 1.0f64..20.0)
            .prop_map(|(x, y, z)| Vector3::new(x * z, y * z, z)),
        n,
    )
}

fn well_conditioned(pc: &[Vector3<f64>]) -> bool {
    // Reject nearly collinear triangles and nearly parallel bearings (ill-posed, not a bug).
    let n = (pc[1] - pc[0]).cross(&(pc[2] - pc[0])).norm();
    let s = (pc[1] - pc[0]).norm() * (pc[2] - pc[0]).norm();
    let min_angle = (0..3)
        .flat_map(|i| (i + 1..3).map(move |j| (i, j)))
        .map(|(i, j)| pc[i].angle(&pc[j]))
        .fold(f64::INFINITY, f64::min);
    n > 0.05 * s && min_angle > 0.02
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn p3p_round_trips(gt in pose_strategy(), pc in cam_points(3)) {
        prop_assume!(well_conditioned(&pc));
        let x = [pc[0].normalize(), pc[1].normalize(), pc[2].normalize()];
        let xw = [0, 1, 2].map(|i| gt.r.transpose() * (pc[i] - gt.t));
        let mut sols = Solutions::new();
        p3p(&x, &xw, &mut sols);
        let best = sols.iter().map(|p| (p.r - gt.r).norm() + (p.t - gt.t).norm()).fold(f64::INFINITY, f64::min);
        prop_assert!(best < 1e-7 * (1.0 + gt.t.norm()), "best {best}");
        prop_assert!(sols.iter().all(|p| p.is_finite()));
    }

    #[test]
    fn up2p_round_trips(gt in pose_strategy(), pc in cam_points(2)) {
        prop_assume!(pc[0].angle(&pc[1]) > 0.02);
        let x = [pc[0].normalize(), pc[1].normalize()];
        let xw = [0, 1].map(|i| gt.r.transpose() * (pc[i] - gt.t));
        // Avoid yaw ≈ π in the aligned frame (q = tan(θ/2) → ∞), a documented limitation.
        let g_cam = gt.r * Vector3::z();
        let mut sols = Solutions::new();
        let (rc, rw) = (rotation_to_y(&g_cam), rotation_to_y(&Vector3::z()));
        let yaw = rc * gt.r * rw.transpose();
        prop_assume!(yaw[(0, 0)] > -0.999);
        up2p(&x, &xw, &rc, &rw, &mut sols);
        let best = sols.iter().map(|p| (p.r - gt.r).norm() + (p.t - gt.t).norm()).fold(f64::INFINITY, f64::min);
        prop_assert!(best < 1e-7 * (1.0 + gt.t.norm()), "best {best}");
    }

    #[test]
    fn estimate_round_trips_noise_free(gt in pose_strategy(), pc in cam_points(40)) {
        let cam = Camera::pinhole(640, 480, 500.0, 500.0, 320.0, 240.0).expect("camera");
        let px: Vec<Vector2<f64>> = pc.iter().map(|p| Vector2::new(500.0 * p.x / p.z + 320.0, 500.0 * p.y / p.z + 240.0)).collect();
        let xw: Vec<Vector3<f64>> = pc.iter().map(|p| gt.r.transpose() * (p - gt.t)).collect();
        let mut ws = AbsolutePoseWorkspace::new();
        let opts = AbsolutePoseOptions { threshold_px: 1.0, ..Default::default() };
        let g = Gravity { up_in_camera: gt.r * Vector3::z(), up_in_world: Vector3::z() };
        for gravity in [None, Some(&g)] {
            let est = estimate_absolute_pose(&cam, &px, &xw, gravity, &opts, &mut ws).expect("pose");
            let got = CameraPose::from_pose(&est.pose);
            prop_assert!((got.r - gt.r).norm() < 1e-9, "{}", (got.r - gt.r).norm());
            prop_assert!((got.t - gt.t).norm() < 1e-9 * (1.0 + gt.t.norm()));
            prop_assert_eq!(est.num_inliers, 40);
        }
    }

    #[test]
    fn arbitrary_input_never_panics_nor_gives_nan(
        raw2 in prop::collection::vec(prop::array::uniform2(prop_oneof![any::<f64>(), -1e3f64..1e3]), 0..12),
        raw3 in prop::collection::vec(prop::array::uniform3(prop_oneof![any::<f64>(), -10f64..10.0]), 0..12),
        grav in prop::array::uniform3(prop_oneof![any::<f64>(), -1f64..1.0]),
    ) {
        let cam = Camera::pinhole(640, 480, 500.0, 500.0, 320.0, 240.0).expect("camera");
        let p2: Vec<Vector2<f64>> = raw2.iter().map(|a| Vector2::from(*a)).collect();
        let p3: Vec<Vector3<f64>> = raw3.iter().map(|a| Vector3::from(*a)).collect();
        let g = Gravity { up_in_camera: Vector3::from(grav), up_in_world: Vector3::z() };
        let mut ws = AbsolutePoseWorkspace::new();
        let opts = AbsolutePoseOptions { ransac: super::RansacOptions { max_iterations: 200, ..Default::default() }, ..Default::default() };
        for gravity in [None, Some(&g)] {
            if let Ok(est) = estimate_absolute_pose(&cam, &p2, &p3, gravity, &opts, &mut ws) {
                prop_assert!(CameraPose::from_pose(&est.pose).is_finite());
            }
        }
    }
}
