//! Camera intrinsics: the pinhole model plus the Brown–Conrady lens distortion that phones report.
//!
//! Coordinates follow the project conventions: the camera looks along +Z with x right and y down;
//! pixel centres sit at +0.5, so the image spans `[0, width] x [0, height]` and a point in the
//! camera frame lands at `u = fx * x/z + cx`, `v = fy * y/z + cy` before distortion.
//!
//! Distortion is OpenCV's five-parameter model applied to ideal normalised coordinates `(x, y)`:
//!
//! ```text
//! r² = x² + y²,  radial = 1 + k1 r² + k2 r⁴ + k3 r⁶
//! x_d = x · radial + 2 p1 x y + p2 (r² + 2 x²)
//! y_d = y · radial + p1 (r² + 2 y²) + 2 p2 x y
//! ```
//!
//! Undistortion inverts that with Newton's method on the 2×2 Jacobian. A camera is only accepted
//! when the radial term is monotonic over the whole image (otherwise the inverse is not unique and
//! no solver can be right); the radius up to which it is monotonic also bounds [`Camera::project`],
//! so points far outside the field of view never fold back into the image.

use nalgebra::{Matrix2, Matrix3, Vector2, Vector3};

use crate::error::{Error, Result};

/// Brown–Conrady distortion coefficients, as OpenCV defines them. All zero means a pinhole camera.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Distortion {
    /// Radial coefficient of r².
    pub k1: f64,
    /// Radial coefficient of r⁴.
    pub k2: f64,
    /// Radial coefficient of r⁶.
    pub k3: f64,
    /// First tangential coefficient.
    pub p1: f64,
    /// Second tangential coefficient.
    pub p2: f64,
}

impl Distortion {
    /// Whether every coefficient is exactly zero.
    pub fn is_zero(&self) -> bool {
        *self == Distortion::default()
    }

    fn radial(&self, r2: f64) -> f64 {
        1.0 + r2 * (self.k1 + r2 * (self.k2 + r2 * self.k3))
    }

    /// d(r · radial(r²))/dr, the slope of the radial mapping at radius `r`.
    fn radial_slope(&self, r: f64) -> f64 {
        let r2 = r * r;
        1.0 + r2 * (3.0 * self.k1 + r2 * (5.0 * self.k2 + r2 * 7.0 * self.k3))
    }

    /// Applies the distortion to ideal normalised coordinates.
    fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let r2 = x * x + y * y;
        let radial = self.radial(r2);
        let xd = x * radial + 2.0 * self.p1 * x * y + self.p2 * (r2 + 2.0 * x * x);
        let yd = y * radial + self.p1 * (r2 + 2.0 * y * y) + 2.0 * self.p2 * x * y;
        (xd, yd)
    }

    /// The Jacobian of [`Distortion::apply`] with respect to `(x, y)`.
    fn jacobian(&self, x: f64, y: f64) -> Matrix2<f64> {
        let r2 = x * x + y * y;
        let radial = self.radial(r2);
        let dr = self.k1 + r2 * (2.0 * self.k2 + 3.0 * self.k3 * r2);
        let dxdx = radial + 2.0 * x * x * dr + 2.0 * self.p1 * y + 6.0 * self.p2 * x;
        let dxdy = 2.0 * x * y * dr + 2.0 * self.p1 * x + 2.0 * self.p2 * y;
        let dydy = radial + 2.0 * y * y * dr + 6.0 * self.p1 * y + 2.0 * self.p2 * x;
        Matrix2::new(dxdx, dxdy, dxdy, dydy)
    }
}

/// Largest image side accepted, in pixels.
const MAX_SIDE: u32 = 1 << 15;
/// Newton iterations allowed when undistorting.
const UNDISTORT_ITERATIONS: usize = 25;

/// A calibrated camera: image size, pinhole intrinsics and Brown–Conrady distortion.
///
/// Construct with [`Camera::pinhole`] or [`Camera::new`]; both validate their input, so a
/// `Camera` value is always usable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    width: u32,
    height: u32,
    fx: f64,
    fy: f64,
    cx: f64,
    cy: f64,
    distortion: Distortion,
    /// Ideal normalised radius up to which the radial mapping is monotonic (and so invertible).
    max_radius: f64,
}

impl Camera {
    /// A distortion-free pinhole camera.
    pub fn pinhole(width: u32, height: u32, fx: f64, fy: f64, cx: f64, cy: f64) -> Result<Camera> {
        Camera::new(width, height, fx, fy, cx, cy, Distortion::default())
    }

    /// A camera with Brown–Conrady distortion. Fails when a value is not finite, the focal
    /// lengths are not positive, the principal point lies outside the image, or the distortion is
    /// not invertible over the whole image.
    pub fn new(
        width: u32,
        height: u32,
        fx: f64,
        fy: f64,
        cx: f64,
        cy: f64,
        distortion: Distortion,
    ) -> Result<Camera> {
        let bad = |why: String| Err(Error::InvalidCamera(why));
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return bad(format!(
                "image size {width}x{height} must be between 1 and {MAX_SIDE} on each side"
            ));
        }
        for (name, v) in [("fx", fx), ("fy", fy)] {
            if !v.is_finite() || v <= 0.0 {
                return bad(format!(
                    "focal length {name} = {v} must be finite and positive"
                ));
            }
        }
        if !cx.is_finite() || !cy.is_finite() {
            return bad(format!("principal point ({cx}, {cy}) must be finite"));
        }
        if !(0.0..=f64::from(width)).contains(&cx) || !(0.0..=f64::from(height)).contains(&cy) {
            return bad(format!(
                "principal point ({cx}, {cy}) lies outside the {width}x{height} image"
            ));
        }
        let d = distortion;
        for (name, v) in [
            ("k1", d.k1),
            ("k2", d.k2),
            ("k3", d.k3),
            ("p1", d.p1),
            ("p2", d.p2),
        ] {
            if !v.is_finite() {
                return bad(format!(
                    "distortion coefficient {name} = {v} must be finite"
                ));
            }
        }
        let mut camera = Camera {
            width,
            height,
            fx,
            fy,
            cx,
            cy,
            distortion,
            max_radius: f64::INFINITY,
        };
        if !distortion.is_zero() {
            camera.max_radius = camera.monotonic_radius()?;
        }
        Ok(camera)
    }

    /// Finds the ideal radius where the radial mapping stops increasing, and checks that the
    /// image corners (plus a margin for the tangential terms) lie inside it.
    fn monotonic_radius(&self) -> Result<f64> {
        let (w, h) = (f64::from(self.width), f64::from(self.height));
        let corner_radius = [(0.0, 0.0), (w, 0.0), (0.0, h), (w, h)]
            .iter()
            .map(|&(u, v)| ((u - self.cx) / self.fx).hypot((v - self.cy) / self.fy))
            .fold(0.0, f64::max);
        let d = &self.distortion;
        let tangential = 3.0 * (d.p1.abs() + d.p2.abs());
        // March outward in small steps; the mapping must keep increasing until it covers the
        // corners' distorted radius with a 10% margin.
        let needed = corner_radius * 1.1 + tangential * corner_radius * corner_radius;
        let step = (corner_radius / 2000.0).max(1e-6);
        let limit = 50.0 * corner_radius.max(1.0);
        let mut r = 0.0;
        let mut covered = false;
        while r < limit {
            if d.radial_slope(r) <= 0.05 {
                break;
            }
            if !covered && r * d.radial(r * r) >= needed {
                covered = true;
            }
            r += step;
        }
        if !covered {
            return Err(Error::InvalidCamera(format!(
                "distortion {d:?} is not invertible over the image: the radial mapping folds \
                 over before reaching the corners"
            )));
        }
        Ok(r)
    }

    /// Image width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Image height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Horizontal focal length in pixels.
    pub fn fx(&self) -> f64 {
        self.fx
    }

    /// Vertical focal length in pixels.
    pub fn fy(&self) -> f64 {
        self.fy
    }

    /// Principal point, horizontal, in pixels (pixel centres at +0.5).
    pub fn cx(&self) -> f64 {
        self.cx
    }

    /// Principal point, vertical, in pixels (pixel centres at +0.5).
    pub fn cy(&self) -> f64 {
        self.cy
    }

    /// The distortion coefficients.
    pub fn distortion(&self) -> &Distortion {
        &self.distortion
    }

    /// Whether the camera has no distortion.
    pub fn is_pinhole(&self) -> bool {
        self.distortion.is_zero()
    }

    /// The intrinsic matrix K.
    pub fn k_matrix(&self) -> Matrix3<f64> {
        Matrix3::new(self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0)
    }

    /// The same lens at another resolution: size, focal lengths and principal point scaled by `s`.
    pub fn scaled(&self, s: f64) -> Result<Camera> {
        if !s.is_finite() || s <= 0.0 {
            return Err(Error::InvalidCamera(format!(
                "scale {s} must be finite and positive"
            )));
        }
        let side = |n: u32| (f64::from(n) * s).round().clamp(0.0, f64::from(u32::MAX)) as u32;
        Camera::new(
            side(self.width),
            side(self.height),
            self.fx * s,
            self.fy * s,
            self.cx * s,
            self.cy * s,
            self.distortion,
        )
    }

    /// Whether a pixel position lies inside the image `[0, width) x [0, height)`.
    pub fn contains(&self, px: &Vector2<f64>) -> bool {
        px.x >= 0.0 && px.y >= 0.0 && px.x < f64::from(self.width) && px.y < f64::from(self.height)
    }

    /// Projects a point in the camera frame to pixels. `None` when the point is not in front of
    /// the camera or lies beyond the radius where the distortion model is valid. The pixel may
    /// still fall outside the image; see [`Camera::contains`].
    pub fn project(&self, p_cam: &Vector3<f64>) -> Option<Vector2<f64>> {
        if !p_cam.z.is_finite() || p_cam.z <= 0.0 || !p_cam.x.is_finite() || !p_cam.y.is_finite() {
            return None;
        }
        let xn = Vector2::new(p_cam.x / p_cam.z, p_cam.y / p_cam.z);
        if xn.norm_squared() > self.max_radius * self.max_radius {
            return None;
        }
        let xd = self.distort(&xn);
        Some(Vector2::new(
            self.fx * xd.x + self.cx,
            self.fy * xd.y + self.cy,
        ))
    }

    /// Ideal normalised coordinates to distorted normalised coordinates.
    pub fn distort(&self, xn: &Vector2<f64>) -> Vector2<f64> {
        if self.is_pinhole() {
            return *xn;
        }
        let (x, y) = self.distortion.apply(xn.x, xn.y);
        Vector2::new(x, y)
    }

    /// Distorted normalised coordinates back to ideal ones (Newton's method, converged to well
    /// under 1e-6 pixels for any point of the image).
    pub fn undistort(&self, xd: &Vector2<f64>) -> Vector2<f64> {
        if self.is_pinhole() {
            return *xd;
        }
        let d = &self.distortion;
        // Tolerance in normalised units corresponding to ~1e-9 px.
        let tol = 1e-9 / self.fx.max(self.fy);
        let mut x = *xd;
        for _ in 0..UNDISTORT_ITERATIONS {
            let (fx, fy) = d.apply(x.x, x.y);
            let residual = Vector2::new(fx - xd.x, fy - xd.y);
            if residual.amax() < tol {
                break;
            }
            let step = match d.jacobian(x.x, x.y).try_inverse() {
                Some(inv) => inv * residual,
                None => residual,
            };
            x -= step;
            if !x.x.is_finite() || !x.y.is_finite() {
                return *xd;
            }
        }
        x
    }

    /// A pixel position to ideal (undistorted) normalised coordinates.
    pub fn pixel_to_normalized(&self, px: &Vector2<f64>) -> Vector2<f64> {
        let xd = Vector2::new((px.x - self.cx) / self.fx, (px.y - self.cy) / self.fy);
        self.undistort(&xd)
    }

    /// A pixel position to the unit bearing vector of its ray in the camera frame.
    pub fn unproject(&self, px: &Vector2<f64>) -> Vector3<f64> {
        let xn = self.pixel_to_normalized(px);
        Vector3::new(xn.x, xn.y, 1.0).normalize()
    }

    /// Where a pixel of this camera would appear in the same camera without distortion.
    pub fn undistort_pixel(&self, px: &Vector2<f64>) -> Vector2<f64> {
        let xn = self.pixel_to_normalized(px);
        Vector2::new(self.fx * xn.x + self.cx, self.fy * xn.y + self.cy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A phone main camera at 640x480 with the barrel distortion typical of such lenses.
    fn phone() -> Camera {
        let d = Distortion {
            k1: -0.28,
            k2: 0.09,
            k3: -0.012,
            p1: 0.0008,
            p2: -0.0005,
        };
        Camera::new(640, 480, 520.0, 518.0, 321.3, 238.7, d).unwrap()
    }

    /// A wide-angle lens with strong barrel distortion.
    fn wide() -> Camera {
        let d = Distortion {
            k1: -0.30,
            k2: 0.09,
            k3: -0.01,
            p1: 0.0,
            p2: 0.0,
        };
        Camera::new(1280, 960, 800.0, 800.0, 640.0, 480.0, d).unwrap()
    }

    #[test]
    fn pinhole_projects_with_the_pixel_centre_convention() {
        let cam = Camera::pinhole(640, 480, 500.0, 500.0, 320.0, 240.0).unwrap();
        let px = cam.project(&Vector3::new(0.0, 0.0, 2.0)).unwrap();
        assert_eq!(px, Vector2::new(320.0, 240.0));
        let px = cam.project(&Vector3::new(1.0, -0.5, 2.0)).unwrap();
        assert!((px - Vector2::new(570.0, 115.0)).norm() < 1e-12);
        assert!(cam.project(&Vector3::new(0.0, 0.0, -1.0)).is_none());
        assert!(cam.project(&Vector3::new(0.0, 0.0, 0.0)).is_none());
        assert!(cam.project(&Vector3::new(f64::NAN, 0.0, 1.0)).is_none());
    }

    #[test]
    fn undistortion_converges_below_a_micro_pixel_over_the_whole_image() {
        for cam in [phone(), wide()] {
            let mut worst: f64 = 0.0;
            let (w, h) = (cam.width(), cam.height());
            for j in (0..=h).step_by(4) {
                for i in (0..=w).step_by(4) {
                    let px = Vector2::new(f64::from(i), f64::from(j));
                    let xn = cam.pixel_to_normalized(&px);
                    let back = cam.project(&Vector3::new(xn.x, xn.y, 1.0)).unwrap();
                    worst = worst.max((back - px).norm());
                }
            }
            assert!(worst < 1e-6, "worst round-trip error {worst} px");
        }
    }

    #[test]
    fn unproject_gives_unit_bearings_that_project_back() {
        let cam = phone();
        for &(u, v) in &[(0.5, 0.5), (320.0, 240.0), (639.5, 479.5), (100.25, 400.75)] {
            let px = Vector2::new(u, v);
            let bearing = cam.unproject(&px);
            assert!((bearing.norm() - 1.0).abs() < 1e-12);
            let back = cam.project(&(bearing * 3.7)).unwrap();
            assert!((back - px).norm() < 1e-6);
        }
    }

    #[test]
    fn undistort_pixel_matches_the_ideal_pinhole() {
        let cam = phone();
        let ideal = Camera::pinhole(640, 480, cam.fx(), cam.fy(), cam.cx(), cam.cy()).unwrap();
        let p = Vector3::new(0.4, -0.3, 1.2);
        let distorted = cam.project(&p).unwrap();
        let expected = ideal.project(&p).unwrap();
        assert!((cam.undistort_pixel(&distorted) - expected).norm() < 1e-6);
    }

    #[test]
    fn points_beyond_the_valid_radius_do_not_fold_into_the_image() {
        let cam = wide();
        // Far outside the field of view, where r·radial(r²) turns back down.
        assert!(cam.project(&Vector3::new(20.0, 0.0, 1.0)).is_none());
    }

    #[test]
    fn scaled_keeps_the_lens() {
        let cam = phone();
        let half = cam.scaled(0.5).unwrap();
        assert_eq!((half.width(), half.height()), (320, 240));
        let p = Vector3::new(0.2, 0.1, 1.0);
        let a = cam.project(&p).unwrap();
        let b = half.project(&p).unwrap();
        assert!((a * 0.5 - b).norm() < 1e-9);
        assert!(cam.scaled(0.0).is_err());
        assert!(cam.scaled(f64::NAN).is_err());
    }

    #[test]
    fn invalid_cameras_are_rejected_with_a_reason() {
        let d0 = Distortion::default();
        let cases: Vec<(Result<Camera>, &str)> = vec![
            (
                Camera::new(0, 480, 500.0, 500.0, 0.0, 240.0, d0),
                "image size",
            ),
            (
                Camera::new(640, 0, 500.0, 500.0, 320.0, 0.0, d0),
                "image size",
            ),
            (
                Camera::new(1 << 16, 480, 500.0, 500.0, 320.0, 240.0, d0),
                "image size",
            ),
            (Camera::new(640, 480, 0.0, 500.0, 320.0, 240.0, d0), "fx"),
            (Camera::new(640, 480, -5.0, 500.0, 320.0, 240.0, d0), "fx"),
            (
                Camera::new(640, 480, 500.0, f64::NAN, 320.0, 240.0, d0),
                "fy",
            ),
            (
                Camera::new(640, 480, 500.0, f64::INFINITY, 320.0, 240.0, d0),
                "fy",
            ),
            (
                Camera::new(640, 480, 500.0, 500.0, f64::NAN, 240.0, d0),
                "principal point",
            ),
            (
                Camera::new(640, 480, 500.0, 500.0, 700.0, 240.0, d0),
                "outside",
            ),
            (
                Camera::new(640, 480, 500.0, 500.0, 320.0, -1.0, d0),
                "outside",
            ),
            (
                Camera::new(
                    640,
                    480,
                    500.0,
                    500.0,
                    320.0,
                    240.0,
                    Distortion { k1: f64::NAN, ..d0 },
                ),
                "k1",
            ),
            (
                Camera::new(
                    640,
                    480,
                    500.0,
                    500.0,
                    320.0,
                    240.0,
                    Distortion {
                        p2: f64::INFINITY,
                        ..d0
                    },
                ),
                "p2",
            ),
            // So much barrel distortion that the mapping folds over inside the image.
            (
                Camera::new(
                    640,
                    480,
                    200.0,
                    200.0,
                    320.0,
                    240.0,
                    Distortion { k1: -0.9, ..d0 },
                ),
                "not invertible",
            ),
        ];
        for (result, needle) in cases {
            let err = result.expect_err(needle);
            assert!(matches!(err, Error::InvalidCamera(_)));
            assert!(
                err.to_string().contains(needle),
                "{err} should mention {needle}"
            );
        }
    }

    proptest! {
        #[test]
        fn project_unproject_round_trips(u in 0.0f64..640.0, v in 0.0f64..480.0, depth in 0.1f64..100.0) {
            let cam = phone();
            let px = Vector2::new(u, v);
            let p = cam.unproject(&px) * depth;
            let back = cam.project(&p).unwrap();
            prop_assert!((back - px).norm() < 1e-6);
        }

        #[test]
        fn pinhole_round_trips(x in -2.0f64..2.0, y in -2.0f64..2.0, z in 0.05f64..50.0) {
            let cam = Camera::pinhole(1920, 1440, 1450.0, 1450.0, 960.0, 720.0).unwrap();
            let p = Vector3::new(x, y, z);
            let px = cam.project(&p).unwrap();
            let bearing = cam.unproject(&px);
            prop_assert!((bearing - p.normalize()).norm() < 1e-12);
        }
    }
}
