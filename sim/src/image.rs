//! Owned 8-bit RGB images (the renderer's output before pixel-format encoding) and float buffers.

use crate::error::{Result, SimError};

/// An owned 8-bit RGB image, tightly packed (`3 * width` bytes per row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl RgbImage {
    /// A black image.
    pub fn new(width: u32, height: u32) -> RgbImage {
        RgbImage {
            width,
            height,
            data: vec![0; width as usize * height as usize * 3],
        }
    }

    /// Wraps `data` (`3 * width * height` bytes, row-major RGB).
    pub fn from_vec(width: u32, height: u32, data: Vec<u8>) -> Result<RgbImage> {
        let need = width as usize * height as usize * 3;
        if data.len() != need {
            return Err(SimError::Encode(format!(
                "RGB image {width}x{height} needs {need} bytes, got {}",
                data.len()
            )));
        }
        Ok(RgbImage {
            width,
            height,
            data,
        })
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The packed RGB bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// The packed RGB bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// The pixel at (`x`, `y`) (panics when out of bounds, like slice indexing).
    pub fn get(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// A linear-light-agnostic float RGB buffer with values nominally in `[0, 1]`: what the renderer
/// writes and the photometric model reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RgbF32 {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major pixels.
    pub data: Vec<[f32; 3]>,
}

impl RgbF32 {
    /// A black buffer.
    pub fn new(width: u32, height: u32) -> RgbF32 {
        RgbF32 {
            width,
            height,
            data: vec![[0.0; 3]; width as usize * height as usize],
        }
    }

    /// Resizes (and keeps the allocation when it is large enough).
    pub fn resize(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        self.data.resize(width as usize * height as usize, [0.0; 3]);
    }

    /// Rounds to 8 bits (values clamped to `[0, 1]`), without any photometric change.
    pub fn to_rgb8(&self) -> RgbImage {
        let mut data = Vec::with_capacity(self.data.len() * 3);
        for p in &self.data {
            for c in p {
                data.push(quantize(*c));
            }
        }
        RgbImage {
            width: self.width,
            height: self.height,
            data,
        }
    }
}

/// `[0, 1]` → `0..=255`, rounding to nearest; NaN maps to 0.
#[inline]
pub fn quantize(v: f32) -> u8 {
    let x = v * 255.0 + 0.5;
    if x >= 255.0 {
        255
    } else if x > 0.0 {
        x as u8
    } else {
        0
    }
}
