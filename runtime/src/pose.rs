//! Camera poses: rigid world-to-camera transforms (`x_cam = R · x_world + t`).

use nalgebra::{Isometry3, Matrix3, Point3, Rotation3, Translation3, UnitQuaternion, Vector3};

use crate::error::{Error, Result};

/// Largest deviation from orthonormality accepted by [`Pose::from_rt`].
const ROTATION_TOLERANCE: f64 = 1e-6;

/// A camera pose: the rigid transform taking world points into the camera frame.
///
/// The camera looks along +Z with x right and y down. The camera centre in world coordinates is
/// [`Pose::center`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    iso: Isometry3<f64>,
}

impl Default for Pose {
    fn default() -> Self {
        Pose::identity()
    }
}

impl Pose {
    /// The camera at the world origin, looking along world +Z.
    pub fn identity() -> Pose {
        Pose {
            iso: Isometry3::identity(),
        }
    }

    /// Wraps an isometry that maps world to camera coordinates.
    pub fn from_isometry(iso: Isometry3<f64>) -> Pose {
        Pose { iso }
    }

    /// The world-to-camera isometry.
    pub fn isometry(&self) -> &Isometry3<f64> {
        &self.iso
    }

    /// A pose from its rotation and translation.
    pub fn from_parts(rotation: UnitQuaternion<f64>, translation: Vector3<f64>) -> Pose {
        Pose {
            iso: Isometry3::from_parts(Translation3::from(translation), rotation),
        }
    }

    /// A pose from a rotation matrix and translation, as files store them. The matrix must be a
    /// proper rotation (orthonormal, determinant +1) to within 1e-6; it is re-orthonormalised.
    pub fn from_rt(r: &Matrix3<f64>, t: &Vector3<f64>) -> Result<Pose> {
        if r.iter().chain(t.iter()).any(|v| !v.is_finite()) {
            return Err(Error::InvalidPose(
                "non-finite rotation or translation".into(),
            ));
        }
        let off = (r * r.transpose() - Matrix3::identity()).amax();
        if off > ROTATION_TOLERANCE {
            return Err(Error::InvalidPose(format!(
                "rotation is not orthonormal (|R Rᵀ - I| = {off:.2e})"
            )));
        }
        if r.determinant() < 0.0 {
            return Err(Error::InvalidPose(
                "rotation is a reflection (det R < 0)".into(),
            ));
        }
        let rotation = UnitQuaternion::from_rotation_matrix(&Rotation3::from_matrix_unchecked(*r));
        Ok(Pose::from_parts(rotation, *t))
    }

    /// The pose of a camera at `eye` looking at `target`, with image "up" (−y) as close to
    /// `world_up` as the viewing direction allows. Fails when the eye and target coincide or the
    /// viewing direction is parallel to `world_up`.
    pub fn look_at(
        eye: &Point3<f64>,
        target: &Point3<f64>,
        world_up: &Vector3<f64>,
    ) -> Result<Pose> {
        let forward = target - eye;
        let values = eye
            .coords
            .iter()
            .chain(target.coords.iter())
            .chain(world_up.iter());
        if values.into_iter().any(|v| !v.is_finite()) {
            return Err(Error::InvalidPose("look_at with non-finite input".into()));
        }
        let z = forward
            .try_normalize(1e-12)
            .ok_or_else(|| Error::InvalidPose("look_at: eye and target coincide".into()))?;
        let x = z.cross(world_up).try_normalize(1e-9).ok_or_else(|| {
            Error::InvalidPose("look_at: viewing direction is parallel to world up".into())
        })?;
        let y = z.cross(&x);
        let r = Matrix3::from_rows(&[x.transpose(), y.transpose(), z.transpose()]);
        let rotation = UnitQuaternion::from_rotation_matrix(&Rotation3::from_matrix_unchecked(r));
        let t = -(rotation * eye.coords);
        Ok(Pose::from_parts(rotation, t))
    }

    /// The world-to-camera rotation.
    pub fn rotation(&self) -> &UnitQuaternion<f64> {
        &self.iso.rotation
    }

    /// The world-to-camera rotation as a matrix.
    pub fn rotation_matrix(&self) -> Matrix3<f64> {
        self.iso.rotation.to_rotation_matrix().into_inner()
    }

    /// The world-to-camera translation `t`.
    pub fn translation(&self) -> Vector3<f64> {
        self.iso.translation.vector
    }

    /// A world point in camera coordinates.
    pub fn transform_point(&self, p_world: &Point3<f64>) -> Point3<f64> {
        self.iso.transform_point(p_world)
    }

    /// A world direction in camera coordinates (rotation only).
    pub fn transform_vector(&self, v_world: &Vector3<f64>) -> Vector3<f64> {
        self.iso.rotation * v_world
    }

    /// `self ∘ other`: applies `other` first, then `self`.
    pub fn compose(&self, other: &Pose) -> Pose {
        Pose {
            iso: self.iso * other.iso,
        }
    }

    /// The inverse transform (camera-to-world).
    pub fn inverse(&self) -> Pose {
        Pose {
            iso: self.iso.inverse(),
        }
    }

    /// The camera centre in world coordinates, `-Rᵀ t`.
    pub fn center(&self) -> Point3<f64> {
        self.iso.inverse_transform_point(&Point3::origin())
    }

    /// The pose a fraction `s` of the way from `self` to `other`: rotation by spherical linear
    /// interpolation along the shortest arc, camera centre linearly.
    pub fn interpolate(&self, other: &Pose, s: f64) -> Pose {
        let qa = self.iso.rotation;
        let mut qb = other.iso.rotation;
        if qa.coords.dot(&qb.coords) < 0.0 {
            qb = UnitQuaternion::new_unchecked(-qb.into_inner());
        }
        let rotation = qa.try_slerp(&qb, s, 1e-12).unwrap_or(qa);
        let center = self.center().coords.lerp(&other.center().coords, s);
        Pose::from_parts(rotation, -(rotation * center))
    }

    /// Rotation error in radians: the angle of `R_self · R_otherᵀ`.
    pub fn rotation_error(&self, other: &Pose) -> f64 {
        self.iso.rotation.angle_to(&other.iso.rotation)
    }

    /// Distance in metres between the two camera centres.
    pub fn center_error(&self, other: &Pose) -> f64 {
        (self.center() - other.center()).norm()
    }

    /// Euclidean distance between the two translation vectors `t`.
    pub fn translation_error(&self, other: &Pose) -> f64 {
        (self.translation() - other.translation()).norm()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pose(axis: Vector3<f64>, angle: f64, t: Vector3<f64>) -> Pose {
        Pose::from_parts(
            UnitQuaternion::from_scaled_axis(axis.normalize() * angle),
            t,
        )
    }

    #[test]
    fn centre_is_where_the_camera_sits() {
        let p = pose(
            Vector3::new(0.3, 1.0, -0.2),
            0.7,
            Vector3::new(1.0, -2.0, 3.0),
        );
        let c = p.center();
        assert!(p.transform_point(&c).coords.norm() < 1e-12);
    }

    #[test]
    fn look_at_puts_the_target_on_the_optical_axis_with_up_up() {
        let eye = Point3::new(1.0, 2.0, 1.5);
        let target = Point3::new(4.0, 6.0, 1.5);
        let up = Vector3::z();
        let p = Pose::look_at(&eye, &target, &up).unwrap();
        let t = p.transform_point(&target);
        assert!(t.x.abs() < 1e-12 && t.y.abs() < 1e-12 && t.z > 0.0);
        assert!((p.center() - eye).norm() < 1e-12);
        // World up appears as image up, i.e. camera -y.
        let up_cam = p.transform_vector(&up);
        assert!((up_cam - Vector3::new(0.0, -1.0, 0.0)).norm() < 1e-12);
        assert!(Pose::look_at(&eye, &eye, &up).is_err());
        assert!(Pose::look_at(&eye, &Point3::new(1.0, 2.0, 5.0), &up).is_err());
        assert!(Pose::look_at(&eye, &Point3::new(f64::NAN, 0.0, 0.0), &up).is_err());
    }

    #[test]
    fn from_rt_validates_the_rotation() {
        let p = pose(
            Vector3::new(1.0, 2.0, 3.0),
            1.1,
            Vector3::new(0.5, 0.0, -1.0),
        );
        let back = Pose::from_rt(&p.rotation_matrix(), &p.translation()).unwrap();
        assert!(back.rotation_error(&p) < 1e-12 && back.translation_error(&p) < 1e-12);
        let t = Vector3::zeros();
        let scaled = Matrix3::identity() * 1.01;
        assert!(Pose::from_rt(&scaled, &t).is_err());
        let reflection = Matrix3::from_diagonal(&Vector3::new(1.0, 1.0, -1.0));
        let err = Pose::from_rt(&reflection, &t).unwrap_err();
        assert!(err.to_string().contains("reflection"));
        let mut nan = Matrix3::identity();
        nan[(0, 1)] = f64::NAN;
        assert!(Pose::from_rt(&nan, &t).is_err());
        assert!(
            Pose::from_rt(&Matrix3::identity(), &Vector3::new(0.0, f64::INFINITY, 0.0)).is_err()
        );
    }

    #[test]
    fn interpolation_hits_the_ends_and_the_middle() {
        let a = pose(Vector3::z(), 0.2, Vector3::new(0.0, 0.0, 0.0));
        let b = pose(Vector3::z(), 1.0, Vector3::new(2.0, 0.0, 0.0));
        assert!(a.interpolate(&b, 0.0).rotation_error(&a) < 1e-12);
        assert!(a.interpolate(&b, 1.0).rotation_error(&b) < 1e-12);
        assert!(a.interpolate(&b, 1.0).center_error(&b) < 1e-12);
        let mid = a.interpolate(&b, 0.5);
        assert!((mid.rotation_error(&a) - 0.4).abs() < 1e-12);
        let expected = (a.center().coords + b.center().coords) / 2.0;
        assert!((mid.center().coords - expected).norm() < 1e-12);
        // Opposite quaternion signs describe the same rotation: take the short way.
        let b_neg = Pose::from_parts(
            UnitQuaternion::new_unchecked(-b.rotation().into_inner()),
            b.translation(),
        );
        assert!((a.interpolate(&b_neg, 0.5).rotation_error(&a) - 0.4).abs() < 1e-12);
    }

    #[test]
    fn error_metrics() {
        let a = pose(Vector3::x(), 0.0, Vector3::new(1.0, 0.0, 0.0));
        let b = pose(Vector3::y(), 0.25, Vector3::new(1.0, 0.0, 0.0));
        assert!((a.rotation_error(&b) - 0.25).abs() < 1e-12);
        assert_eq!(a.translation_error(&b), 0.0);
        assert!(a.center_error(&b) > 0.0);
    }

    fn arb_pose() -> impl Strategy<Value = Pose> {
        (
            prop::array::uniform3(-1.0f64..1.0),
            0.0f64..3.1,
            prop::array::uniform3(-10.0f64..10.0),
        )
            .prop_filter("axis must not vanish", |(a, _, _)| {
                Vector3::from(*a).norm() > 1e-3
            })
            .prop_map(|(a, angle, t)| pose(Vector3::from(a), angle, Vector3::from(t)))
    }

    proptest! {
        #[test]
        fn inverse_and_compose_round_trip(a in arb_pose(), b in arb_pose(), p in prop::array::uniform3(-5.0f64..5.0)) {
            let x = Point3::from(Vector3::from(p));
            let id = a.compose(&a.inverse());
            prop_assert!(id.rotation_error(&Pose::identity()) < 1e-9);
            prop_assert!(id.translation().norm() < 1e-9);
            let ab = a.compose(&b);
            let direct = a.transform_point(&b.transform_point(&x));
            prop_assert!((ab.transform_point(&x) - direct).norm() < 1e-9);
            let r = Pose::from_rt(&a.rotation_matrix(), &a.translation()).unwrap();
            prop_assert!(r.rotation_error(&a) < 1e-9 && r.translation_error(&a) < 1e-9);
        }
    }
}
