//! Encoding rendered RGB into the pixel formats phone cameras deliver.
//!
//! Luma is always the runtime's [`rgb_to_luma`], so every format of one image converts to the same
//! gray image. NV12/NV21 chroma is BT.601 full range, computed from the 2×2 average of RGB.

use sextant_runtime::{Frame, GrayImage, PixelFormat, rgb_to_luma};

use crate::error::{Result, SimError};
use crate::image::RgbImage;

/// An owned pixel buffer in one of the runtime's formats, tightly packed; NV12/NV21 have the
/// interleaved chroma plane right after the luma plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Pixel layout.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bytes between row starts (of each plane).
    pub stride: usize,
    /// The bytes.
    pub data: Vec<u8>,
}

impl EncodedFrame {
    /// A borrowed runtime [`Frame`] over these bytes.
    pub fn as_frame(&self) -> Result<Frame<'_>> {
        Ok(Frame::new(
            self.format,
            self.width,
            self.height,
            self.stride,
            &self.data,
        )?)
    }
}

/// The gray image of `img` (the runtime's luma).
pub fn rgb_to_gray(img: &RgbImage) -> GrayImage {
    let data = img
        .as_slice()
        .chunks_exact(3)
        .map(|p| rgb_to_luma(p[0], p[1], p[2]))
        .collect();
    // Sizes agree by construction.
    GrayImage::from_vec(img.width(), img.height(), data)
        .unwrap_or_else(|_| GrayImage::new(img.width(), img.height()))
}

#[inline]
fn clamp_u8(v: f32) -> u8 {
    (v + 0.5).clamp(0.0, 255.0) as u8
}

/// BT.601 full-range chroma `(Cb, Cr)` of an RGB colour (0–255 floats).
#[inline]
fn chroma(r: f32, g: f32, b: f32) -> (u8, u8) {
    let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
    let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    (clamp_u8(cb), clamp_u8(cr))
}

/// Encodes `img` in `format`. NV12/NV21 need even width and height.
pub fn encode(img: &RgbImage, format: PixelFormat) -> Result<EncodedFrame> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_slice();
    let (stride, data) = match format {
        PixelFormat::Gray8 => (w, rgb_to_gray(img).into_vec()),
        PixelFormat::Rgba8 | PixelFormat::Bgra8 => {
            let mut data = Vec::with_capacity(w * h * 4);
            for p in src.chunks_exact(3) {
                if format == PixelFormat::Rgba8 {
                    data.extend_from_slice(&[p[0], p[1], p[2], 255]);
                } else {
                    data.extend_from_slice(&[p[2], p[1], p[0], 255]);
                }
            }
            (w * 4, data)
        }
        PixelFormat::Nv12 | PixelFormat::Nv21 => {
            if w % 2 != 0 || h % 2 != 0 {
                return Err(SimError::Encode(format!(
                    "{format} needs even width and height, got {w}x{h}"
                )));
            }
            let mut data = rgb_to_gray(img).into_vec();
            data.reserve(w * h / 2);
            for y in (0..h).step_by(2) {
                for x in (0..w).step_by(2) {
                    let mut sum = [0u32; 3];
                    for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                        let i = ((y + dy) * w + x + dx) * 3;
                        for c in 0..3 {
                            sum[c] += u32::from(src[i + c]);
                        }
                    }
                    let (cb, cr) = chroma(
                        sum[0] as f32 / 4.0,
                        sum[1] as f32 / 4.0,
                        sum[2] as f32 / 4.0,
                    );
                    if format == PixelFormat::Nv12 {
                        data.extend_from_slice(&[cb, cr]);
                    } else {
                        data.extend_from_slice(&[cr, cb]);
                    }
                }
            }
            (w, data)
        }
    };
    Ok(EncodedFrame {
        format,
        width: img.width(),
        height: img.height(),
        stride,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroma_of_primaries() {
        assert_eq!(chroma(128.0, 128.0, 128.0), (128, 128));
        let (cb, cr) = chroma(255.0, 0.0, 0.0);
        assert_eq!((cb, cr), (85, 255));
        let (cb, cr) = chroma(0.0, 0.0, 255.0);
        assert_eq!((cb, cr), (255, 107));
    }

    #[test]
    fn odd_sizes_rejected_for_nv12_only() {
        let img = RgbImage::new(3, 2);
        assert!(encode(&img, PixelFormat::Nv12).is_err());
        assert!(encode(&img, PixelFormat::Nv21).is_err());
        assert!(encode(&img, PixelFormat::Rgba8).is_ok());
    }

    #[test]
    fn nv12_and_nv21_swap_chroma() {
        let img = RgbImage::from_vec(2, 2, [200, 30, 60].repeat(4)).unwrap();
        let a = encode(&img, PixelFormat::Nv12).unwrap();
        let b = encode(&img, PixelFormat::Nv21).unwrap();
        assert_eq!(a.data.len(), 6);
        assert_eq!((a.data[4], a.data[5]), (b.data[5], b.data[4]));
        assert!(a.data[5] > 200, "strong red gives high Cr: {:?}", a.data);
    }
}
