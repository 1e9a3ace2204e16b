//! Pose refinement (robust Levenberg–Marquardt) and pose covariance.
//!
//! **Contract.** [`refine_pose`] minimises `Σ_i ρ(‖r_i‖²)` over a pose, where
//! `r_i = (f_x (X_c/Z_c − x_i), f_y (Y_c/Z_c − y_i))` is the reprojection error in pixels of world
//! point `X_i` (`[X_c Y_c Z_c] = R X_i + t`) against the undistorted normalised observation
//! `(x_i, y_i)`, and `ρ` is a [`RobustLoss`]. It never allocates. Points at or behind the camera
//! plane contribute no gradient.
//!
//! **Parametrisation.** Updates live on the tangent space of SO(3)×R³ with a left perturbation in
//! the camera frame: `R ← exp([ω]×) R`, `t ← t + δt`. The residual's Jacobian is
//! `∂r/∂(ω, δt) = diag(f_x, f_y) · (1/Z_c) [[1, 0, −x̂], [0, 1, −ŷ]] · [−[R X]× | I]`, checked
//! against central finite differences in the tests.
//!
//! **Solver.** Iteratively reweighted Gauss–Newton with Levenberg–Marquardt damping
//! `(H + λ diag H) δ = −g`, `H = Σ w_i J_iᵀJ_i`, `g = Σ w_i J_iᵀ r_i`, `w_i = ρ'(‖r_i‖²)`; a step is
//! kept only when it lowers the robust cost (λ ÷ 10), otherwise λ × 10 (K. Levenberg 1944,
//! D. Marquardt 1963; the IRLS form as in PoseLib's `bundle.cc`, B. Triggs et al., "Bundle
//! adjustment — a modern synthesis", 1999).
//!
//! **Covariance.** [`pose_covariance`] returns `Σ = σ² (JᵀJ)⁻¹` at the optimum over the given
//! inliers (first-order propagation; σ estimated from the residuals unless given), and propagates
//! it to the camera centre `c = −Rᵀt`: `∂c/∂(ω, δt) = [−Rᵀ[t]× | −Rᵀ]`.

use nalgebra::{Matrix2x6, Matrix3, Matrix6, Rotation3, Vector2, Vector3, Vector6};

use super::CameraPose;
use super::estimator::PoseData;

/// Robust loss `ρ(s)` of the squared residual norm `s`, with its scale in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RobustLoss {
    /// `ρ(s) = s` (plain least squares).
    Trivial,
    /// Huber: `s` below `c²`, `2c√s − c²` above.
    Huber(f64),
    /// Cauchy: `c² ln(1 + s/c²)`.
    Cauchy(f64),
    /// Truncated quadratic: `min(s, c²)` (MSAC's cost; used in local optimisation).
    Truncated(f64),
}

impl RobustLoss {
    /// The loss value `ρ(s)`.
    #[inline]
    pub fn rho(&self, s: f64) -> f64 {
        match *self {
            RobustLoss::Trivial => s,
            RobustLoss::Huber(c) => {
                if s <= c * c {
                    s
                } else {
                    2.0 * c * s.sqrt() - c * c
                }
            }
            RobustLoss::Cauchy(c) => c * c * (s / (c * c)).ln_1p(),
            RobustLoss::Truncated(c) => s.min(c * c),
        }
    }

    /// The IRLS weight `ρ'(s)`.
    #[inline]
    pub fn weight(&self, s: f64) -> f64 {
        match *self {
            RobustLoss::Trivial => 1.0,
            RobustLoss::Huber(c) => {
                if s <= c * c {
                    1.0
                } else {
                    c / s.sqrt()
                }
            }
            RobustLoss::Cauchy(c) => 1.0 / (1.0 + s / (c * c)),
            RobustLoss::Truncated(c) => {
                if s <= c * c {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// Options of [`refine_pose`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefineOptions {
    /// Robust loss.
    pub loss: RobustLoss,
    /// Maximum LM iterations.
    pub max_iterations: usize,
    /// Stop when the gradient's max-norm falls below this.
    pub gradient_tolerance: f64,
    /// Stop when the step's norm falls below this (relative to `1 + ‖t‖`).
    pub step_tolerance: f64,
    /// Stop when an accepted step lowers the cost by less than this fraction.
    pub cost_tolerance: f64,
    /// Initial damping.
    pub initial_lambda: f64,
}

impl Default for RefineOptions {
    fn default() -> Self {
        RefineOptions {
            loss: RobustLoss::Cauchy(2.0),
            max_iterations: 50,
            gradient_tolerance: 1e-10,
            step_tolerance: 1e-9,
            cost_tolerance: 1e-7,
            initial_lambda: 1e-3,
        }
    }
}

/// What [`refine_pose`] did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RefineReport {
    /// Iterations run.
    pub iterations: usize,
    /// Robust cost before.
    pub initial_cost: f64,
    /// Robust cost after.
    pub final_cost: f64,
    /// True when a tolerance was met (rather than the iteration cap).
    pub converged: bool,
}

/// Reprojection residual (pixels) of one correspondence and its 2×6 Jacobian with respect to the
/// left tangent perturbation `(ω, δt)`. `None` when the point is at or behind the camera plane.
#[inline]
pub fn residual_jacobian(
    pose: &CameraPose,
    point: &Vector3<f64>,
    normalized: &Vector2<f64>,
    fx: f64,
    fy: f64,
) -> Option<(Vector2<f64>, Matrix2x6<f64>)> {
    let rx = pose.r * point;
    let p = rx + pose.t;
    if p.z <= 1e-9 {
        return None;
    }
    let iz = 1.0 / p.z;
    let u = p.x * iz;
    let v = p.y * iz;
    let r = Vector2::new(fx * (u - normalized.x), fy * (v - normalized.y));
    // dz/dp rows scaled by the focal lengths.
    let (a0, a2) = (fx * iz, -fx * u * iz);
    let (b1, b2) = (fy * iz, -fy * v * iz);
    // dp/dω = −[RX]×  =  [[0, rz, −ry], [−rz, 0, rx], [ry, −rx, 0]]
    let (x, y, z) = (rx.x, rx.y, rx.z);
    #[rustfmt::skip]
    let j = Matrix2x6::new(
        a2 * y,          a0 * z - a2 * x, -a0 * y,  a0,  0.0, a2,
        -b1 * z + b2 * y, -b2 * x,         b1 * x,  0.0, b1,  b2,
    );
    Some((r, j))
}

/// Applies a tangent step `(ω, δt)` to `pose`.
#[inline]
pub fn retract(pose: &CameraPose, delta: &Vector6<f64>) -> CameraPose {
    let w = Vector3::new(delta[0], delta[1], delta[2]);
    CameraPose {
        r: Rotation3::new(w).matrix() * pose.r,
        t: pose.t + Vector3::new(delta[3], delta[4], delta[5]),
    }
}

/// Normal equations `H = Σ w JᵀJ` (upper triangle, packed) and `g = Σ w Jᵀr` of 2×6 blocks.
#[derive(Default)]
struct Normal6 {
    h: [f64; 21],
    g: [f64; 6],
}

impl Normal6 {
    #[inline(always)]
    fn add(&mut self, j: &Matrix2x6<f64>, r: &Vector2<f64>, w: f64) {
        let mut k = 0;
        for a in 0..6 {
            let (ja0, ja1) = (j[(0, a)] * w, j[(1, a)] * w);
            self.g[a] += ja0 * r.x + ja1 * r.y;
            for b in a..6 {
                self.h[k] += ja0 * j[(0, b)] + ja1 * j[(1, b)];
                k += 1;
            }
        }
    }

    fn matrices(&self) -> (Matrix6<f64>, Vector6<f64>) {
        let mut h = Matrix6::zeros();
        let mut k = 0;
        for a in 0..6 {
            for b in a..6 {
                h[(a, b)] = self.h[k];
                h[(b, a)] = self.h[k];
                k += 1;
            }
        }
        (h, Vector6::from_column_slice(&self.g))
    }
}

/// Robust Levenberg–Marquardt refinement of `pose` over the correspondences `indices` of `data`.
/// Returns the refined pose (with an exactly orthonormal rotation) and a report.
pub fn refine_pose(
    pose: &CameraPose,
    data: &PoseData,
    indices: &[usize],
    opts: &RefineOptions,
) -> (CameraPose, RefineReport) {
    refine_pose_strided(pose, data, indices, 1, opts)
}

/// Robust cost and normal equations at `pose` in one pass over the data.
fn linearize(
    pose: &CameraPose,
    data: &PoseData,
    indices: &[usize],
    stride: usize,
    loss: &RobustLoss,
) -> (f64, Normal6) {
    let mut ne = Normal6::default();
    let mut cost = 0.0;
    if let RobustLoss::Cauchy(c) = *loss {
        // Σ c² ln(1 + s/c²) = c² ln Π(1 + s/c²): one logarithm per ~dozens of points instead of
        // one per point (the product is flushed long before it could overflow).
        let ic2 = 1.0 / (c * c);
        let mut prod = 1.0f64;
        let mut logsum = 0.0;
        for &i in indices.iter().step_by(stride) {
            let Some((r, j)) =
                residual_jacobian(pose, &data.points[i], &data.normalized[i], data.fx, data.fy)
            else {
                continue;
            };
            let f = 1.0 + r.norm_squared() * ic2;
            prod *= f;
            if prod > 1e100 {
                logsum += prod.ln();
                prod = 1.0;
            }
            ne.add(&j, &r, 1.0 / f);
        }
        return ((logsum + prod.ln()) * c * c, ne);
    }
    for &i in indices.iter().step_by(stride) {
        let Some((r, j)) =
            residual_jacobian(pose, &data.points[i], &data.normalized[i], data.fx, data.fy)
        else {
            if let RobustLoss::Truncated(t) = loss {
                cost += t * t;
            }
            continue;
        };
        let s = r.norm_squared();
        cost += loss.rho(s);
        let w = loss.weight(s);
        if w != 0.0 {
            ne.add(&j, &r, w);
        }
    }
    (cost, ne)
}

/// [`refine_pose`] over every `stride`-th index only (local optimisation on large inlier sets).
pub fn refine_pose_strided(
    pose: &CameraPose,
    data: &PoseData,
    indices: &[usize],
    stride: usize,
    opts: &RefineOptions,
) -> (CameraPose, RefineReport) {
    let stride = stride.max(1);
    let mut cur = *pose;
    let (mut cost, mut ne) = linearize(&cur, data, indices, stride, &opts.loss);
    let mut report = RefineReport {
        initial_cost: cost,
        final_cost: cost,
        ..Default::default()
    };
    if indices.len() < 3 * stride || !cost.is_finite() {
        return (cur, report);
    }
    let mut lambda = opts.initial_lambda;
    for it in 0..opts.max_iterations {
        report.iterations = it + 1;
        let (h, g) = ne.matrices();
        if g.amax() < opts.gradient_tolerance {
            report.converged = true;
            break;
        }
        let mut accepted = false;
        for _ in 0..10 {
            let mut hd = h;
            for k in 0..6 {
                hd[(k, k)] += lambda * h[(k, k)].max(1e-12);
            }
            let Some(chol) = hd.cholesky() else {
                lambda *= 10.0;
                continue;
            };
            let delta = -chol.solve(&g);
            let cand = retract(&cur, &delta);
            let (c2, ne2) = linearize(&cand, data, indices, stride, &opts.loss);
            if c2 < cost {
                let small = delta.norm() < opts.step_tolerance * (1.0 + cur.t.norm());
                let rel = (cost - c2) / cost.max(1e-300);
                cur = cand;
                cost = c2;
                ne = ne2;
                lambda = (lambda * 0.1).max(1e-12);
                accepted = true;
                if small || rel < opts.cost_tolerance {
                    report.converged = true;
                }
                break;
            }
            lambda *= 10.0;
        }
        if !accepted || report.converged {
            report.converged = true;
            break;
        }
    }
    report.final_cost = cost;
    (cur.orthonormalized(), report)
}

/// Covariance of a refined pose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoseCovariance {
    /// 6×6 covariance of the left tangent perturbation `(ω, δt)` in the camera frame
    /// (`R ← exp([ω]×) R`, `t ← t + δt`); units rad², rad·m, m².
    pub matrix: Matrix6<f64>,
    /// Covariance (m²) of the camera centre `c = −Rᵀt` in the world frame.
    pub position: Matrix3<f64>,
    /// 1-σ rotation uncertainty about the camera's x, y, z axes (radians).
    pub rotation_sigma_rad: Vector3<f64>,
    /// 1-σ camera-centre uncertainty along the world x, y, z axes (metres).
    pub position_sigma_m: Vector3<f64>,
    /// Image noise standard deviation used (pixels, per coordinate).
    pub sigma_px: f64,
}

impl PoseCovariance {
    /// Total 1-σ position uncertainty `√trace(Σ_c)` (metres).
    pub fn position_sigma_total_m(&self) -> f64 {
        self.position.trace().max(0.0).sqrt()
    }

    /// Total 1-σ rotation uncertainty `√trace(Σ_ω)` (radians).
    pub fn rotation_sigma_total_rad(&self) -> f64 {
        self.matrix.fixed_view::<3, 3>(0, 0).trace().max(0.0).sqrt()
    }
}

/// First-order covariance of `pose` from the Jacobian over the correspondences `indices`.
/// `sigma_px` is the per-coordinate image noise; `None` estimates it as
/// `√(Σ‖r‖² / (2k − 6))`. Returns `None` when fewer than 4 points are usable or `JᵀJ` is singular.
pub fn pose_covariance(
    pose: &CameraPose,
    data: &PoseData,
    indices: &[usize],
    sigma_px: Option<f64>,
) -> Option<PoseCovariance> {
    let mut ne = Normal6::default();
    let mut ss = 0.0;
    let mut k = 0usize;
    for &i in indices {
        if let Some((r, j)) =
            residual_jacobian(pose, &data.points[i], &data.normalized[i], data.fx, data.fy)
        {
            ne.add(&j, &r, 1.0);
            ss += r.norm_squared();
            k += 1;
        }
    }
    let (h, _) = ne.matrices();
    if k < 4 {
        return None;
    }
    let sigma = match sigma_px {
        Some(s) => s,
        None => (ss / (2 * k - 6) as f64).sqrt(),
    };
    if !(sigma.is_finite() && sigma >= 0.0) {
        return None;
    }
    let hinv = h.cholesky()?.inverse();
    let matrix = hinv * (sigma * sigma);
    let rt = pose.r.transpose();
    let t = pose.t;
    let tx = Matrix3::new(0.0, -t.z, t.y, t.z, 0.0, -t.x, -t.y, t.x, 0.0);
    let mut jc = nalgebra::Matrix3x6::<f64>::zeros();
    jc.fixed_view_mut::<3, 3>(0, 0).copy_from(&(-(rt * tx)));
    jc.fixed_view_mut::<3, 3>(0, 3).copy_from(&(-rt));
    let position = jc * matrix * jc.transpose();
    let rotation_sigma_rad =
        Vector3::new(matrix[(0, 0)], matrix[(1, 1)], matrix[(2, 2)]).map(|v| v.max(0.0).sqrt());
    let position_sigma_m = Vector3::new(position[(0, 0)], position[(1, 1)], position[(2, 2)])
        .map(|v| v.max(0.0).sqrt());
    let out = PoseCovariance {
        matrix,
        position,
        rotation_sigma_rad,
        position_sigma_m,
        sigma_px: sigma,
    };
    out.matrix.iter().all(|v| v.is_finite()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::rng::Pcg32;
    use crate::geometry::synth::random_rotation;

    fn scene(rng: &mut Pcg32, n: usize, noise_px: f64) -> (CameraPose, PoseData) {
        let gt = CameraPose {
            r: random_rotation(rng),
            t: Vector3::new(
                rng.uniform(-1.0, 1.0),
                rng.uniform(-1.0, 1.0),
                rng.uniform(-1.0, 1.0),
            ),
        };
        let mut data = PoseData {
            fx: 500.0,
            fy: 480.0,
            ..Default::default()
        };
        for _ in 0..n {
            let pc = Vector3::new(
                rng.uniform(-2.0, 2.0),
                rng.uniform(-1.5, 1.5),
                rng.uniform(3.0, 8.0),
            );
            let x = Vector2::new(
                pc.x / pc.z + noise_px * rng.normal() / data.fx,
                pc.y / pc.z + noise_px * rng.normal() / data.fy,
            );
            data.push(x, gt.r.transpose() * (pc - gt.t));
        }
        (gt, data)
    }

    #[test]
    fn analytic_jacobian_matches_finite_differences() {
        let mut rng = Pcg32::new(1);
        let (gt, data) = scene(&mut rng, 20, 1.0);
        let pose = retract(&gt, &Vector6::new(0.01, -0.02, 0.015, 0.05, -0.03, 0.02));
        let h = 1e-6;
        for i in 0..data.len() {
            let (_, j) = residual_jacobian(
                &pose,
                &data.points[i],
                &data.normalized[i],
                data.fx,
                data.fy,
            )
            .expect("in front");
            for k in 0..6 {
                let mut d = Vector6::zeros();
                d[k] = h;
                let (rp, _) = residual_jacobian(
                    &retract(&pose, &d),
                    &data.points[i],
                    &data.normalized[i],
                    data.fx,
                    data.fy,
                )
                .expect("in front");
                let (rm, _) = residual_jacobian(
                    &retract(&pose, &(-d)),
                    &data.points[i],
                    &data.normalized[i],
                    data.fx,
                    data.fy,
                )
                .expect("in front");
                let fd = (rp - rm) / (2.0 * h);
                let err = (fd - j.column(k)).norm();
                assert!(
                    err < 1e-5 * (1.0 + fd.norm()),
                    "point {i} column {k}: fd {fd:?} vs {:?}",
                    j.column(k)
                );
            }
        }
    }

    #[test]
    fn converges_from_perturbed_start_noise_free() {
        let mut rng = Pcg32::new(2);
        for _ in 0..20 {
            let (gt, data) = scene(&mut rng, 30, 0.0);
            let idx: Vec<usize> = (0..data.len()).collect();
            let start = retract(&gt, &Vector6::new(0.05, -0.03, 0.04, 0.2, -0.1, 0.15));
            let (p, rep) = refine_pose(&start, &data, &idx, &RefineOptions::default());
            assert!(rep.final_cost < 1e-16, "{rep:?}");
            assert!((p.r - gt.r).norm() < 1e-9 && (p.t - gt.t).norm() < 1e-9);
            assert!((p.r.determinant() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn robust_loss_ignores_gross_outliers() {
        let mut rng = Pcg32::new(3);
        let (gt, mut data) = scene(&mut rng, 100, 0.5);
        for i in 0..20 {
            data.normalized[i] += Vector2::new(0.2, -0.1); // ~100 px off
        }
        let idx: Vec<usize> = (0..data.len()).collect();
        let (p_ls, _) = refine_pose(
            &gt,
            &data,
            &idx,
            &RefineOptions {
                loss: RobustLoss::Trivial,
                ..Default::default()
            },
        );
        let (p_c, _) = refine_pose(&gt, &data, &idx, &RefineOptions::default());
        let err = |p: &CameraPose| (p.t - gt.t).norm();
        assert!(
            err(&p_c) < 0.2 * err(&p_ls),
            "cauchy {} vs ls {}",
            err(&p_c),
            err(&p_ls)
        );
        assert!(err(&p_c) < 0.02);
        let (p_h, _) = refine_pose(
            &gt,
            &data,
            &idx,
            &RefineOptions {
                loss: RobustLoss::Huber(2.0),
                ..Default::default()
            },
        );
        assert!(err(&p_h) < err(&p_ls));
    }

    #[test]
    fn loss_weights_are_derivatives() {
        for loss in [
            RobustLoss::Trivial,
            RobustLoss::Huber(2.0),
            RobustLoss::Cauchy(2.0),
            RobustLoss::Truncated(2.0),
        ] {
            for s in [0.5, 3.0, 10.0, 50.0] {
                let h = 1e-6;
                let fd = (loss.rho(s + h) - loss.rho(s - h)) / (2.0 * h);
                assert!((fd - loss.weight(s)).abs() < 1e-6, "{loss:?} at {s}");
            }
        }
    }

    #[test]
    fn covariance_matches_monte_carlo() {
        // Predicted 1-σ of the camera centre vs the spread over repeated noisy solves.
        let mut rng = Pcg32::new(4);
        let (gt, clean) = scene(&mut rng, 60, 0.0);
        let idx: Vec<usize> = (0..clean.len()).collect();
        let sigma = 1.0;
        let cov = pose_covariance(&gt, &clean, &idx, Some(sigma)).expect("covariance");
        let trials = 300;
        let mut sum = Vector3::zeros();
        let mut sum2 = Vector3::zeros();
        for _ in 0..trials {
            let mut d = clean.clone();
            for x in d.normalized.iter_mut() {
                x.x += sigma * rng.normal() / d.fx;
                x.y += sigma * rng.normal() / d.fy;
            }
            let (p, _) = refine_pose(
                &gt,
                &d,
                &idx,
                &RefineOptions {
                    loss: RobustLoss::Trivial,
                    ..Default::default()
                },
            );
            let e = p.center() - gt.center();
            sum += e;
            sum2 += e.component_mul(&e);
        }
        let n = f64::from(trials);
        for k in 0..3 {
            let sd = (sum2[k] / n - (sum[k] / n).powi(2)).sqrt();
            let ratio = sd / cov.position_sigma_m[k];
            assert!(
                (0.8..1.25).contains(&ratio),
                "axis {k}: empirical {sd} predicted {}",
                cov.position_sigma_m[k]
            );
        }
        assert!(cov.rotation_sigma_rad.iter().all(|s| *s > 0.0 && *s < 0.01));
        // Estimated σ from residuals of a noisy solve is close to the truth.
        let mut d = clean.clone();
        for x in d.normalized.iter_mut() {
            x.x += 2.0 * rng.normal() / d.fx;
            x.y += 2.0 * rng.normal() / d.fy;
        }
        let (p, _) = refine_pose(
            &gt,
            &d,
            &idx,
            &RefineOptions {
                loss: RobustLoss::Trivial,
                ..Default::default()
            },
        );
        let est = pose_covariance(&p, &d, &idx, None).expect("covariance");
        assert!((1.6..2.4).contains(&est.sigma_px), "{}", est.sigma_px);
    }

    #[test]
    fn degenerate_input_gives_no_covariance() {
        let data = PoseData {
            fx: 500.0,
            fy: 500.0,
            ..Default::default()
        };
        assert!(pose_covariance(&CameraPose::default(), &data, &[], None).is_none());
    }
}
