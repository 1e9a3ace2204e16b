//! Which map landmarks a camera at a given pose sees: the landmarks of the nearby tiles that
//! project into its image, in front of it, within the mapped range, and seen from a direction
//! close to the one they were mapped from.

use nalgebra::{Vector2, Vector3};

use crate::Camera;
use crate::Pose;
use crate::geometry::CameraPose;
use crate::map::{Map, TileRange, view_direction};

/// The selected landmarks with their predicted pixels, deduplicated across several poses.
#[derive(Debug, Default)]
pub(super) struct Visibility {
    stamp: Vec<u32>,
    current: u32,
    indices: Vec<u32>,
    predicted: Vec<[f32; 2]>,
}

impl Visibility {
    /// Starts a new selection over a map of `n` landmarks.
    pub(super) fn begin(&mut self, n: usize) {
        if self.stamp.len() != n || self.current == u32::MAX {
            self.stamp.clear();
            self.stamp.resize(n, 0);
            self.current = 0;
        }
        self.current += 1;
        self.indices.clear();
        self.predicted.clear();
    }

    /// Adds the landmarks of `tiles` that a camera at `pose` sees.
    pub(super) fn add_visible<B: AsRef<[u8]>>(
        &mut self,
        map: &Map<B>,
        pose: &Pose,
        camera: &Camera,
        tiles: &TileRange,
        range_m: f64,
        max_view_angle_deg: f64,
    ) {
        let cp = CameraPose::from_pose(pose);
        let centre = pose.center().coords;
        let cos_max = max_view_angle_deg.to_radians().cos();
        let positions = map.positions();
        let views = map.views();
        let range2 = range_m * range_m;
        let (w, h) = (f64::from(camera.width()), f64::from(camera.height()));
        for &(a, b) in tiles.ranges() {
            for i in a as usize..b as usize {
                if self.stamp[i] == self.current {
                    continue;
                }
                let p = positions[i];
                let pw = Vector3::new(f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
                let pc = cp.transform(&pw);
                if pc.z < 0.05 || pc.norm_squared() > range2 {
                    continue;
                }
                // Cheap frustum test on the pinhole projection before the distorted one.
                let (u, v) = (
                    camera.fx() * pc.x / pc.z + camera.cx(),
                    camera.fy() * pc.y / pc.z + camera.cy(),
                );
                if !(u > -0.25 * w && u < 1.25 * w && v > -0.25 * h && v < 1.25 * h) {
                    continue;
                }
                let Some(px) = camera.project(&pc) else {
                    continue;
                };
                if !camera.contains(&Vector2::new(px.x, px.y)) {
                    continue;
                }
                let d = view_direction(&views[i]);
                if d.norm_squared() > 0.0 {
                    let to_cam = (centre - pw).normalize();
                    let c = f64::from(d.x) * to_cam.x
                        + f64::from(d.y) * to_cam.y
                        + f64::from(d.z) * to_cam.z;
                    if c < cos_max {
                        continue;
                    }
                }
                self.stamp[i] = self.current;
                self.indices.push(i as u32);
                self.predicted.push([px.x as f32, px.y as f32]);
            }
        }
    }

    /// The selected landmark indices.
    pub(super) fn indices(&self) -> &[u32] {
        &self.indices
    }

    /// Their predicted pixels (in the last pose's camera that selected them).
    pub(super) fn predicted(&self) -> &[[f32; 2]] {
        &self.predicted
    }

    /// Copies the selected landmarks' descriptors into `out`.
    pub(super) fn gather<B: AsRef<[u8]>>(&self, map: &Map<B>, out: &mut Vec<i8>) {
        let dim = map.descriptor_dim();
        let all = map.descriptors();
        out.clear();
        for &i in &self.indices {
            let i = i as usize;
            out.extend_from_slice(&all[i * dim..(i + 1) * dim]);
        }
    }
}
