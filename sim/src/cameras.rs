//! Named camera models for the command line and the demo.

use sextant_runtime::{Camera, Distortion};

use crate::error::{Result, SimError};

/// Names accepted by [`camera_preset`].
pub const CAMERA_PRESETS: [&str; 4] = ["vga", "phone-wide", "phone-main", "hd"];

/// A named camera:
/// - `vga`: 640×480 pinhole, fx = fy = 500 (65° horizontal field of view);
/// - `phone-wide`: 640×480, fx = fy = 420 with barrel distortion (k1 = −0.12, k2 = 0.03) — a
///   phone's ultra-wide lens scaled down;
/// - `phone-main`: 640×480, fx = fy = 560, mild distortion (k1 = 0.04, p1 = 0.0005);
/// - `hd`: 1280×720 pinhole, fx = fy = 1000.
pub fn camera_preset(name: &str) -> Result<Camera> {
    let d = |k1, k2, p1| Distortion {
        k1,
        k2,
        k3: 0.0,
        p1,
        p2: 0.0,
    };
    let cam = match name {
        "vga" => Camera::pinhole(640, 480, 500.0, 500.0, 320.0, 240.0),
        "phone-wide" => Camera::new(640, 480, 420.0, 420.0, 320.0, 240.0, d(-0.12, 0.03, 0.0)),
        "phone-main" => Camera::new(640, 480, 560.0, 560.0, 321.5, 238.5, d(0.04, 0.0, 0.0005)),
        "hd" => Camera::pinhole(1280, 720, 1000.0, 1000.0, 640.0, 360.0),
        _ => {
            return Err(SimError::InvalidArgument(format!(
                "unknown camera preset {name:?} (expected one of {})",
                CAMERA_PRESETS.join(", ")
            )));
        }
    };
    Ok(cam?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_build_and_unknown_names_fail() {
        for name in CAMERA_PRESETS {
            let c = camera_preset(name).unwrap();
            assert!(c.width() >= 640, "{name}");
        }
        assert!(camera_preset("phone-wide").unwrap().distortion().k1 < 0.0);
        assert!(camera_preset("vga").unwrap().is_pinhole());
        let e = camera_preset("fisheye").unwrap_err().to_string();
        assert!(e.contains("phone-wide"), "{e}");
    }
}
