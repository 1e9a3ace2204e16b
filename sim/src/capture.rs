//! A capture: render (with motion blur if asked), then the sensor model → 8-bit RGB + depth.

use nalgebra::{Unit, UnitQuaternion, Vector3};
use sextant_runtime::{Camera, Pose};

use crate::image::{RgbF32, RgbImage};
use crate::photometric::Photometric;
use crate::render::{Rendered, Renderer};
use crate::rng::SimRng;
use crate::scene::Scene;

/// One simulated camera image with its ground truth.
#[derive(Clone, Debug)]
pub struct Capture {
    /// The image as the sensor delivers it.
    pub rgb: RgbImage,
    /// Depth along the optical axis, metres, row-major (0 = no surface); at the recorded pose.
    pub depth: Vec<f32>,
    /// The recorded pose (mid-exposure when blurred).
    pub pose: Pose,
}

/// Renders captures for one camera, keeping buffers between frames.
#[derive(Clone, Debug)]
pub struct Capturer {
    renderer: Renderer,
    main: Rendered,
    sub: Rendered,
    acc: RgbF32,
}

impl Capturer {
    /// A capturer for `camera`.
    pub fn new(camera: &Camera) -> Capturer {
        let (w, h) = (camera.width(), camera.height());
        Capturer {
            renderer: Renderer::new(camera),
            main: Rendered::new(w, h),
            sub: Rendered::new(w, h),
            acc: RgbF32::new(w, h),
        }
    }

    /// The underlying renderer.
    pub fn renderer(&mut self) -> &mut Renderer {
        &mut self.renderer
    }

    /// Captures `scene` from `pose`. Noise and blur direction come from `(seed, index)` only, so
    /// the same arguments give the same bytes.
    pub fn capture(
        &mut self,
        scene: &Scene,
        pose: &Pose,
        photometric: &Photometric,
        seed: u64,
        index: u64,
    ) -> Capture {
        let mut rng = SimRng::derive(seed, index);
        self.renderer.render_into(scene, pose, &mut self.main);
        let rgb_src: &RgbF32 = match photometric.motion_blur {
            Some(b) if b.samples >= 2 && (b.angle_deg > 0.0 || b.shift_m > 0.0) => {
                let phi = rng.range(0.0, std::f64::consts::TAU);
                let axis = Unit::new_normalize(Vector3::new(phi.cos(), phi.sin(), 0.0));
                let psi = rng.range(0.0, std::f64::consts::TAU);
                let dir = Vector3::new(psi.cos(), psi.sin(), rng.range(-0.3, 0.3)).normalize();
                self.acc.resize(self.main.rgb.width, self.main.rgb.height);
                self.acc.data.iter_mut().for_each(|p| *p = [0.0; 3]);
                let n = b.samples;
                for k in 0..n {
                    let f = k as f64 / (n - 1) as f64 - 0.5;
                    let rot = UnitQuaternion::from_axis_angle(&axis, b.angle_deg.to_radians() * f);
                    // Camera centre moves by `dir * shift * f` in the camera frame.
                    let delta = Pose::from_parts(rot, -(rot * (dir * b.shift_m * f)));
                    self.renderer
                        .render_into(scene, &delta.compose(pose), &mut self.sub);
                    for (a, s) in self.acc.data.iter_mut().zip(&self.sub.rgb.data) {
                        a[0] += s[0];
                        a[1] += s[1];
                        a[2] += s[2];
                    }
                }
                let inv = 1.0 / n as f32;
                self.acc
                    .data
                    .iter_mut()
                    .for_each(|p| *p = [p[0] * inv, p[1] * inv, p[2] * inv]);
                &self.acc
            }
            _ => &self.main.rgb,
        };
        let rgb = photometric.apply(rgb_src, &mut rng);
        Capture {
            rgb,
            depth: self.main.depth.clone(),
            pose: *pose,
        }
    }
}
