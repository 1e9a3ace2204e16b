//! Cheap image statistics that explain why a frame has too few keypoints: too dark, or too
//! blurred.

use crate::GrayImage;

/// Brightness and sharpness of a gray image (sampled every other pixel).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageQuality {
    /// Mean grey level (0–255).
    pub mean: f32,
    /// 99th-percentile grey level.
    pub p99: u8,
    /// Mean absolute gradient (grey levels per pixel) divided by the standard deviation of
    /// the grey levels: low for blurred images, independent of exposure.
    pub sharpness: f32,
}

impl ImageQuality {
    /// Almost nothing above black.
    pub fn is_too_dark(&self) -> bool {
        self.mean < 12.0 && self.p99 < 40
    }

    /// Edges spread over many pixels.
    pub fn is_too_blurred(&self) -> bool {
        self.sharpness < 0.05
    }
}

/// Statistics of `gray`.
pub fn image_quality(gray: &GrayImage) -> ImageQuality {
    let (w, h) = (gray.width() as usize, gray.height() as usize);
    let mut hist = [0u32; 256];
    let (mut sum, mut sum2, mut grad, mut n, mut ng) = (0f64, 0f64, 0f64, 0u64, 0u64);
    let data = gray.as_slice();
    for y in (0..h).step_by(2) {
        let row = &data[y * w..(y + 1) * w];
        for x in (0..w).step_by(2) {
            let v = row[x];
            hist[v as usize] += 1;
            sum += f64::from(v);
            sum2 += f64::from(v) * f64::from(v);
            n += 1;
            if x + 1 < w && y + 1 < h {
                let dx = i32::from(row[x + 1]) - i32::from(v);
                let dy = i32::from(data[(y + 1) * w + x]) - i32::from(v);
                grad += f64::from(dx.abs() + dy.abs());
                ng += 1;
            }
        }
    }
    if n == 0 {
        return ImageQuality {
            mean: 0.0,
            p99: 0,
            sharpness: 0.0,
        };
    }
    let mean = sum / n as f64;
    let std = (sum2 / n as f64 - mean * mean).max(0.0).sqrt();
    let target = (n as f64 * 0.99).ceil() as u64;
    let mut acc = 0u64;
    let mut p99 = 255u8;
    for (v, &c) in hist.iter().enumerate() {
        acc += u64::from(c);
        if acc >= target {
            p99 = v as u8;
            break;
        }
    }
    let g = if ng > 0 { grad / ng as f64 } else { 0.0 };
    ImageQuality {
        mean: mean as f32,
        p99,
        sharpness: if std > 1.0 { (g / std) as f32 } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dark_flat_and_sharp_images_are_told_apart() {
        let dark = GrayImage::from_vec(64, 48, vec![3; 64 * 48]).expect("image");
        assert!(image_quality(&dark).is_too_dark());
        let checker: Vec<u8> = (0..64 * 48)
            .map(|i| {
                if (i % 64 / 3 + i / 64 / 3) % 2 == 0 {
                    30
                } else {
                    220
                }
            })
            .collect();
        let sharp = GrayImage::from_vec(64, 48, checker).expect("image");
        let q = image_quality(&sharp);
        assert!(!q.is_too_dark() && !q.is_too_blurred(), "{q:?}");
        let ramp: Vec<u8> = (0..320 * 240).map(|i| (i % 320 / 2) as u8 + 40).collect();
        let smooth = GrayImage::from_vec(320, 240, ramp).expect("image");
        assert!(image_quality(&smooth).is_too_blurred());
    }
}
