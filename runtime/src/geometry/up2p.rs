//! Upright P2P: camera pose from two 2D–3D correspondences when gravity is known (4 DoF).
//!
//! **Contract.** Given the world up direction in the camera frame `g_cam` (from the AR framework's
//! IMU) and in the world frame `g_world`, two unit bearings `x[i]` and two world points `X[i]`, find
//! every `(R, t)` with `R g_world = g_cam` and `x_i × (R X_i + t) = 0`. There are at most two.
//! Solutions go into a caller-owned [`Solutions`]; nothing allocates.
//!
//! **Equations.** Rotate both frames so that up is `+y` (`R_c g_cam = e_y`, `R_w g_world = e_y`);
//! the remaining rotation is about `y`. With `q = tan(θ/2)`, `(1+q²) R_y(θ) = [[1−q², 0, 2q],
//! [0, 1+q², 0], [−2q, 0, 1−q²]]` and `t' = (1+q²) t`, two rows of `x × ((1+q²) R X + t') = 0` per
//! point give four equations linear in `(t', q²)` with right-hand side linear in `q`:
//! `M [t'; q²] = −(q b₁ + b₀)`. Eliminating with `M⁻¹` leaves the monic quadratic
//! `q² + (M⁻¹b₁)₄ q + (M⁻¹b₀)₄ = 0`; each real root gives `R`, and `t = −(M⁻¹(q b₁ + b₀))₁..₃ /(1+q²)`.
//! Finally `R ← R_cᵀ R R_w`, `t ← R_cᵀ t`.
//!
//! **Paper.** Z. Kukelova, M. Bujnak, T. Pajdla, "Closed-form solutions to minimal absolute pose
//! problems with known vertical direction", ACCV 2010; the formulation follows PoseLib's `up2p`
//! (V. Larsson).
//!
//! **Preconditions.** `g_cam`, `g_world` non-zero (they are normalised here). A yaw of exactly π
//! (q = ∞) is not representable; within 10⁻⁴ rad of it accuracy degrades (RANSAC's refinement
//! recovers it). Coincident points or bearings give zero solutions, never NaN.

use nalgebra::{Matrix3, Matrix4, Vector3, Vector4};

use super::{CameraPose, Solutions};

/// The rotation taking unit vector `a` onto `+y` (minimal rotation; a fixed half-turn when `a ≈ −y`).
pub fn rotation_to_y(a: &Vector3<f64>) -> Matrix3<f64> {
    let a = a.normalize();
    let y = Vector3::y();
    let c = a.dot(&y);
    if c < -1.0 + 1e-12 {
        // Half-turn about x maps −y to +y.
        return Matrix3::new(1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0);
    }
    let v = a.cross(&y);
    let vx = Matrix3::new(0.0, -v.z, v.y, v.z, 0.0, -v.x, -v.y, v.x, 0.0);
    Matrix3::identity() + vx + vx * vx * (1.0 / (1.0 + c))
}

/// Solves the upright problem in the aligned frames (gravity = `+y` in both camera and world).
pub fn up2p_aligned(
    x: &[Vector3<f64>; 2],
    xw: &[Vector3<f64>; 2],
    out: &mut Solutions<CameraPose>,
) -> usize {
    out.clear();
    let (a, b) = (&x[0], &x[1]);
    let (pa, pb) = (&xw[0], &xw[1]);
    #[rustfmt::skip]
    let m = Matrix4::new(
        a.z, 0.0, -a.x, a.x * pa.z - a.z * pa.x,
        0.0, a.z, -a.y, a.z * pa.y + a.y * pa.z,
        b.z, 0.0, -b.x, b.x * pb.z - b.z * pb.x,
        0.0, b.z, -b.y, b.z * pb.y + b.y * pb.z,
    );
    let b1 = Vector4::new(
        2.0 * (a.z * pa.z + a.x * pa.x),
        2.0 * a.y * pa.x,
        2.0 * (b.z * pb.z + b.x * pb.x),
        2.0 * b.y * pb.x,
    );
    let b0 = Vector4::new(
        a.z * pa.x - a.x * pa.z,
        a.z * pa.y - a.y * pa.z,
        b.z * pb.x - b.x * pb.z,
        b.z * pb.y - b.y * pb.z,
    );
    let Some(mi) = m.try_inverse() else {
        return 0;
    };
    let s1 = mi * b1;
    let s0 = mi * b0;
    let (c2, c3) = (s1[3], s0[3]);
    let disc = c2 * c2 - 4.0 * c3;
    if !(disc >= 0.0) {
        return 0;
    }
    let sq = disc.sqrt();
    // Stable roots of q² + c2 q + c3 = 0.
    let r1 = if c2 > 0.0 {
        -0.5 * (c2 + sq)
    } else {
        -0.5 * (c2 - sq)
    };
    let roots = [r1, if r1 != 0.0 { c3 / r1 } else { 0.0 }];
    let n = if disc == 0.0 { 1 } else { 2 };
    for &q in &roots[..n] {
        let q2 = q * q;
        let inv = 1.0 / (1.0 + q2);
        let c = (1.0 - q2) * inv;
        let s = 2.0 * q * inv;
        let r = Matrix3::new(c, 0.0, s, 0.0, 1.0, 0.0, -s, 0.0, c);
        let tt = -(s1 * q + s0) * inv;
        let t = Vector3::new(tt[0], tt[1], tt[2]);
        let pose = CameraPose { r, t };
        if pose.is_finite() {
            out.push(pose);
        }
    }
    out.len()
}

/// Upright P2P in general frames: `rc = rotation_to_y(g_cam)`, `rw = rotation_to_y(g_world)`
/// are passed precomputed so that RANSAC computes them once per problem.
pub fn up2p(
    x: &[Vector3<f64>; 2],
    xw: &[Vector3<f64>; 2],
    rc: &Matrix3<f64>,
    rw: &Matrix3<f64>,
    out: &mut Solutions<CameraPose>,
) -> usize {
    let xa = [rc * x[0], rc * x[1]];
    let xwa = [rw * xw[0], rw * xw[1]];
    up2p_aligned(&xa, &xwa, out);
    let rct = rc.transpose();
    for p in out.iter_mut() {
        p.r = rct * p.r * rw;
        p.t = rct * p.t;
    }
    out.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::rng::Pcg32;
    use crate::geometry::synth::random_minimal_instance;

    #[test]
    fn rotation_to_y_maps_onto_y() {
        let mut rng = Pcg32::new(5);
        for _ in 0..100 {
            let a = Vector3::new(rng.normal(), rng.normal(), rng.normal());
            let r = rotation_to_y(&a);
            assert!((r * a.normalize() - Vector3::y()).norm() < 1e-12);
            assert!((r.determinant() - 1.0).abs() < 1e-12);
        }
        let r = rotation_to_y(&-Vector3::y());
        assert!((r * -Vector3::y() - Vector3::y()).norm() < 1e-12);
    }

    #[test]
    fn noise_free_recovers_pose_to_1e9() {
        let mut rng = Pcg32::new(21);
        let mut sols = Solutions::new();
        let g_world = Vector3::z();
        let mut worst = 0.0f64;
        for _ in 0..2000 {
            let (gt, x, xw) = random_minimal_instance::<2>(&mut rng, 2.0);
            let g_cam = gt.r * g_world;
            let (rc, rw) = (rotation_to_y(&g_cam), rotation_to_y(&g_world));
            let n = up2p(&x, &xw, &rc, &rw, &mut sols);
            assert!(n >= 1);
            let best = sols
                .iter()
                .map(|p| (p.r - gt.r).norm() + (p.t - gt.t).norm())
                .fold(f64::INFINITY, f64::min);
            worst = worst.max(best);
        }
        assert!(worst < 1e-9, "worst {worst}");
    }

    #[test]
    fn degenerate_inputs_give_no_pose_and_no_nan() {
        let mut sols = Solutions::new();
        let x = [Vector3::z(), Vector3::z()];
        let xw = [Vector3::new(0.0, 0.0, 5.0), Vector3::new(0.0, 0.0, 5.0)];
        assert_eq!(up2p_aligned(&x, &xw, &mut sols), 0);
        let xw = [
            Vector3::new(f64::NAN, 0.0, 5.0),
            Vector3::new(1.0, 0.0, 5.0),
        ];
        let x = [Vector3::new(0.1, 0.0, 1.0).normalize(), Vector3::z()];
        up2p_aligned(&x, &xw, &mut sols);
        assert!(sols.iter().all(|p| p.is_finite()));
    }
}
