//! Helpers shared by the end-to-end tests and the localisation bench (`mod common;`, or
//! `#[path]` from `benches/`). Each user takes what it needs.
#![allow(dead_code)]

use sextant_runtime::Camera;
use sextant_runtime::map::{MapBuilder, MapFrame};
use sextant_sim::Capture;
use sextant_sim::encode::rgb_to_gray;

/// Adds a simulator capture to a map being built: its gray image, its true pose and its depth.
pub fn add_capture(builder: &mut MapBuilder, camera: &Camera, c: &Capture) {
    let gray = rgb_to_gray(&c.rgb);
    builder
        .add_frame(&MapFrame {
            gray: &gray,
            camera,
            pose: &c.pose,
            depth: Some(&c.depth),
        })
        .expect("add frame");
}
