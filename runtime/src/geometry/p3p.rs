//! P3P: camera pose from three 2D–3D correspondences, after Lambda Twist.
//!
//! **Contract.** Given three unit bearing vectors `x[i]` (camera frame) and three world points
//! `X[i]`, find every rigid transform `(R, t)` with `λ_i x_i = R X_i + t`, `λ_i > 0`. There are at
//! most four. Solutions are written into a caller-owned [`Solutions`]; nothing allocates.
//!
//! **Equations.** With `a_ij = |X_i − X_j|²` and `b_ij = x_iᵀ x_j` the depths satisfy
//! `λ_i² + λ_j² − 2 b_ij λ_i λ_j = a_ij`. Lambda Twist writes two of these as homogeneous quadratic
//! forms `ΛᵀD₁Λ = 0`, `ΛᵀD₂Λ = 0`, finds one real root γ of the cubic `det(D₁ + γD₂) = 0` (always
//! exists), factors the degenerate conic `D₀ = D₁ + γD₂` through its eigen-decomposition (one
//! eigenvalue is zero) into two lines, intersects each line with a quadratic to get `τ = λ₃/λ₁`
//! (or `λ₃/λ₂`), then polishes the depths with Gauss–Newton on the three original equations.
//! The rotation follows in closed form: `R = [v₁ v₂ v₁×v₂] [d₁ d₂ d₁×d₂]⁻¹` with `v₁ = λ₁x₁ − λ₂x₂`,
//! `v₂ = λ₁x₁ − λ₃x₃`, `d₁ = X₁ − X₂`, `d₂ = X₁ − X₃`.
//!
//! **Paper.** M. Persson, K. Nordberg, "Lambda Twist: An Accurate Fast Robust Perspective Three
//! Point (P3P) Solver", ECCV 2018 (with the two typos fixed as in PoseLib: the sign of `M₀₀` in the
//! eigenvalue polynomial and the swapped cubic coefficients c₂/c₁).
//!
//! **Preconditions.** Bearings need not be unit length for correctness of the rotation but the
//! depths are only metric for unit bearings: pass unit vectors. Degenerate input (collinear or
//! coincident world points, parallel bearings) yields zero solutions, never NaN: every output is
//! checked to be finite.

use nalgebra::{Matrix3, Vector3};

use super::{CameraPose, Solutions};

/// Eigenvectors of the two non-zero eigenvalues of a symmetric 3×3 matrix known to be singular.
/// Returns `(e1, e2, sig1, sig2)` with `|sig1| >= |sig2|`.
#[inline]
fn eig3x3_known0(m: &Matrix3<f64>) -> (Vector3<f64>, Vector3<f64>, f64, f64) {
    let p1 = -m[(0, 0)] - m[(1, 1)] - m[(2, 2)];
    let p0 = -m[(0, 1)] * m[(0, 1)] - m[(0, 2)] * m[(0, 2)] - m[(1, 2)] * m[(1, 2)]
        + m[(0, 0)] * (m[(1, 1)] + m[(2, 2)])
        + m[(1, 1)] * m[(2, 2)];
    let disc = (p1 * p1 / 4.0 - p0).max(0.0).sqrt();
    let tmp = -p1 / 2.0;
    let mut sig1 = tmp + disc;
    let mut sig2 = tmp - disc;
    if sig1.abs() < sig2.abs() {
        std::mem::swap(&mut sig1, &mut sig2);
    }
    let vec = |sig: f64| {
        let c = sig * sig + m[(0, 0)] * m[(1, 1)]
            - sig * (m[(0, 0)] + m[(1, 1)])
            - m[(0, 1)] * m[(0, 1)];
        let a1 = (sig * m[(0, 2)] + m[(0, 1)] * m[(1, 2)] - m[(0, 2)] * m[(1, 1)]) / c;
        let a2 = (sig * m[(1, 2)] + m[(0, 1)] * m[(0, 2)] - m[(0, 0)] * m[(1, 2)]) / c;
        let n = 1.0 / (1.0 + a1 * a1 + a2 * a2).sqrt();
        Vector3::new(a1 * n, a2 * n, n)
    };
    (vec(sig1), vec(sig2), sig1, sig2)
}

/// Gauss–Newton on the three depth equations `λi² + λj² − 2 bij λi λj = aij` (closed-form 3×3
/// inverse; the Jacobian has one zero per row).
#[inline]
#[allow(clippy::too_many_arguments)]
fn refine_lambda(l: &mut [f64; 3], a12: f64, a13: f64, a23: f64, b12: f64, b13: f64, b23: f64) {
    let [mut l1, mut l2, mut l3] = *l;
    for _ in 0..5 {
        let r1 = l1 * l1 - 2.0 * l1 * l2 * b12 + l2 * l2 - a12;
        let r2 = l1 * l1 - 2.0 * l1 * l3 * b13 + l3 * l3 - a13;
        let r3 = l2 * l2 - 2.0 * l2 * l3 * b23 + l3 * l3 - a23;
        if r1.abs() + r2.abs() + r3.abs() < 1e-15 * (a12 + a13 + a23) {
            break;
        }
        let x11 = l1 - l2 * b12;
        let x12 = l2 - l1 * b12;
        let x21 = l1 - l3 * b13;
        let x23 = l3 - l1 * b13;
        let x32 = l2 - l3 * b23;
        let x33 = l3 - l2 * b23;
        let det = x11 * x23 * x32 + x12 * x21 * x33;
        if det.abs() < 1e-300 {
            break;
        }
        let h = 0.5 / det;
        let d1 = (-x23 * x32 * r1 - x12 * x33 * r2 + x12 * x23 * r3) * h;
        let d2 = (-x21 * x33 * r1 + x11 * x33 * r2 - x11 * x23 * r3) * h;
        let d3 = (x21 * x32 * r1 - x11 * x32 * r2 - x12 * x21 * r3) * h;
        l1 += d1;
        l2 += d2;
        l3 += d3;
    }
    *l = [l1, l2, l3];
}

/// Solves P3P for unit bearings `x` and world points `xw`; writes up to four poses into `out`
/// (cleared first) and returns how many.
///
/// See the module documentation for the equations and the paper.
pub fn p3p(
    x: &[Vector3<f64>; 3],
    xw: &[Vector3<f64>; 3],
    out: &mut Solutions<CameraPose>,
) -> usize {
    out.clear();
    let dx12 = xw[0] - xw[1];
    let dx13 = xw[0] - xw[2];
    let dx23 = xw[1] - xw[2];
    let n12 = dx12.cross(&dx13);

    let a12 = dx12.norm_squared();
    let a13 = dx13.norm_squared();
    let a23 = dx23.norm_squared();
    // Collinear or coincident world points: no unique pose.
    let scale = a12.max(a13).max(a23);
    if !(scale > 0.0) || n12.norm_squared() <= 1e-20 * scale * scale {
        return 0;
    }
    let b12 = x[0].dot(&x[1]);
    let b13 = x[0].dot(&x[2]);
    let b23 = x[1].dot(&x[2]);

    let a23b12 = a23 * b12;
    let a12b23 = a12 * b23;
    let a23b13 = a23 * b13;
    let a13b23 = a13 * b23;

    #[rustfmt::skip]
    let d1 = Matrix3::new(
        a23, -a23b12, 0.0,
        -a23b12, a23 - a12, a12b23,
        0.0, a12b23, -a12,
    );
    #[rustfmt::skip]
    let d2 = Matrix3::new(
        a23, 0.0, -a23b13,
        0.0, -a13, a13b23,
        -a23b13, a13b23, a23 - a13,
    );
    let dx1 = Matrix3::from_columns(&[
        d1.column(1).cross(&d1.column(2)),
        d1.column(2).cross(&d1.column(0)),
        d1.column(0).cross(&d1.column(1)),
    ]);
    let dx2 = Matrix3::from_columns(&[
        d2.column(1).cross(&d2.column(2)),
        d2.column(2).cross(&d2.column(0)),
        d2.column(0).cross(&d2.column(1)),
    ]);

    // p(γ) = det(D1 + γ D2) = c3 γ³ + c2 γ² + c1 γ + c0.
    let c3 = d2.column(0).dot(&dx2.column(0));
    if c3.abs() < 1e-300 {
        return 0;
    }
    let c2 = d1.component_mul(&dx2).sum() / c3;
    let c1 = d2.component_mul(&dx1).sum() / c3;
    let c0 = d1.column(0).dot(&dx1.column(0)) / c3;

    // One real root of the monic cubic (Cardano / trigonometric form), then one Newton step.
    let a = c1 - c2 * c2 / 3.0;
    let b = (2.0 * c2 * c2 * c2 - 9.0 * c2 * c1) / 27.0 + c0;
    let disc = b * b / 4.0 + a * a * a / 27.0;
    let mut gamma = if disc > 0.0 {
        let s = disc.sqrt();
        let hb = -0.5 * b;
        (hb + s).cbrt() + (hb - s).cbrt() - c2 / 3.0
    } else {
        let c = (3.0 * b / (2.0 * a) * (-3.0 / a).sqrt()).clamp(-1.0, 1.0);
        2.0 * (-a / 3.0).sqrt() * (c.acos() / 3.0).cos() - c2 / 3.0
    };
    let f = ((gamma + c2) * gamma + c1) * gamma + c0;
    let df = (3.0 * gamma + 2.0 * c2) * gamma + c1;
    if df != 0.0 {
        gamma -= f / df;
    }
    if !gamma.is_finite() {
        return 0;
    }

    let d0 = d1 + d2 * gamma;
    let (e1, e2, sig1, sig2) = eig3x3_known0(&d0);
    let ratio = -sig2 / sig1;
    if !(ratio >= 0.0) {
        return 0;
    }
    let mut s = ratio.sqrt();

    let xx = Matrix3::from_columns(&[dx12, dx13, n12]);
    let Some(xx_inv) = xx.try_inverse() else {
        return 0;
    };

    const TOL_DOUBLE_ROOT: f64 = 1e-12;
    for _ in 0..2 {
        // [u1 u2 u3] · [λ1 λ2 λ3]ᵀ = 0
        let u1 = e1[0] - s * e2[0];
        let u2 = e1[1] - s * e2[1];
        let u3 = e1[2] - s * e2[2];
        s = -s;

        // Solve for whichever of λ1/λ2 has the larger coefficient (u1 = u2 = 0 is degenerate).
        let switch_12 = u1.abs() < u2.abs();
        let (w0, w1, qa, qb, qc) = if switch_12 {
            let w0 = -u1 / u2;
            let w1 = -u3 / u2;
            (
                w0,
                w1,
                -a13 * w1 * w1 + 2.0 * a13b23 * w1 - a13 + a23,
                2.0 * a13b23 * w0 - 2.0 * a23b13 - 2.0 * a13 * w0 * w1,
                -a13 * w0 * w0 + a23,
            )
        } else {
            let w0 = -u2 / u1;
            let w1 = -u3 / u1;
            (
                w0,
                w1,
                (a13 - a12) * w1 * w1 + 2.0 * a12 * b13 * w1 - a12,
                -2.0 * a13 * b12 * w1 + 2.0 * a12 * b13 * w0 - 2.0 * w0 * w1 * (a12 - a13),
                (a13 - a12) * w0 * w0 - 2.0 * a13 * b12 * w0 + a13,
            )
        };
        if !(w0.is_finite() && w1.is_finite()) {
            continue;
        }
        let b2m4ac = qb * qb - 4.0 * qa * qc;
        if !(b2m4ac >= -TOL_DOUBLE_ROOT) {
            continue;
        }
        let sq = b2m4ac.max(0.0).sqrt();
        // Numerically stable first root; the second is c / (a τ₁).
        let mut tau = if qb > 0.0 {
            2.0 * qc / (-qb - sq)
        } else {
            2.0 * qc / (-qb + sq)
        };
        for k in 0..2 {
            if k == 1 {
                if b2m4ac < TOL_DOUBLE_ROOT {
                    break; // double root: the second τ is the first
                }
                tau = qc / (qa * tau);
            }
            if !(tau > 0.0) || !tau.is_finite() {
                continue;
            }
            let mut lam = if switch_12 {
                let l1 = (a13 / (tau * (tau - 2.0 * b13) + 1.0)).sqrt();
                let l3 = tau * l1;
                [l1, w0 * l1 + w1 * l3, l3]
            } else {
                let l2 = (a23 / (tau * (tau - 2.0 * b23) + 1.0)).sqrt();
                let l3 = tau * l2;
                [w0 * l2 + w1 * l3, l2, l3]
            };
            if !(lam[0] > 0.0 && lam[1] > 0.0 && lam[2] > 0.0) {
                continue;
            }
            refine_lambda(&mut lam, a12, a13, a23, b12, b13, b23);
            let v1 = x[0] * lam[0] - x[1] * lam[1];
            let v2 = x[0] * lam[0] - x[2] * lam[2];
            let yy = Matrix3::from_columns(&[v1, v2, v1.cross(&v2)]);
            let r = yy * xx_inv;
            let t = x[0] * lam[0] - r * xw[0];
            if r.iter().all(|v| v.is_finite()) && t.iter().all(|v| v.is_finite()) {
                out.push(CameraPose { r, t });
            }
        }
    }
    out.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::rng::Pcg32;
    use crate::geometry::synth::random_minimal_instance;

    fn random_instance(rng: &mut Pcg32) -> (CameraPose, [Vector3<f64>; 3], [Vector3<f64>; 3]) {
        random_minimal_instance(rng, 2.0)
    }

    #[test]
    fn noise_free_recovers_pose_to_1e9() {
        let mut rng = Pcg32::new(11);
        let mut sols = Solutions::new();
        let mut worst = 0.0f64;
        for _ in 0..2000 {
            let (gt, x, xw) = random_instance(&mut rng);
            let n = p3p(&x, &xw, &mut sols);
            assert!((1..=4).contains(&n));
            let best = sols
                .iter()
                .map(|p| (p.r - gt.r).norm() + (p.t - gt.t).norm())
                .fold(f64::INFINITY, f64::min);
            worst = worst.max(best);
            for p in sols.iter() {
                // Every solution reprojects the three points exactly, in front of the camera.
                for i in 0..3 {
                    let pc = p.r * xw[i] + p.t;
                    assert!(pc.z > 0.0);
                    assert!((pc.normalize() - x[i]).norm() < 1e-7);
                }
            }
        }
        assert!(worst < 1e-9, "worst error {worst}");
    }

    #[test]
    fn degenerate_inputs_give_no_pose_and_no_nan() {
        let mut sols = Solutions::new();
        let x = [
            Vector3::z(),
            Vector3::new(0.1, 0.0, 1.0).normalize(),
            Vector3::new(0.0, 0.1, 1.0).normalize(),
        ];
        // Collinear world points.
        let xw = [
            Vector3::new(0.0, 0.0, 5.0),
            Vector3::new(1.0, 0.0, 5.0),
            Vector3::new(2.0, 0.0, 5.0),
        ];
        assert_eq!(p3p(&x, &xw, &mut sols), 0);
        // Coincident world points.
        let xw = [Vector3::new(0.0, 0.0, 5.0); 3];
        assert_eq!(p3p(&x, &xw, &mut sols), 0);
        // Identical bearings with a proper triangle: any output must be finite.
        let xs = [Vector3::z(); 3];
        let xw = [
            Vector3::new(0.0, 0.0, 5.0),
            Vector3::new(1.0, 0.0, 5.0),
            Vector3::new(0.0, 1.0, 5.0),
        ];
        p3p(&xs, &xw, &mut sols);
        assert!(sols.iter().all(|p| p.is_finite()));
        // NaN input.
        let xw = [
            Vector3::new(f64::NAN, 0.0, 5.0),
            Vector3::new(1.0, 0.0, 5.0),
            Vector3::new(0.0, 1.0, 5.0),
        ];
        assert_eq!(p3p(&x, &xw, &mut sols), 0);
    }
}
