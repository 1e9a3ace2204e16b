//! Camera frames: borrowed pixel buffers as the platform camera APIs hand them out.
//!
//! A [`Frame`] wraps the app's buffer without copying (ARKit's `CVPixelBuffer` planes, Android's
//! `ImageReader` planes) together with its layout, and checks every size and stride up front, so
//! the rest of the runtime can index it without further checks. Feature extraction works on gray
//! images; [`Frame::to_gray_into`] produces one into a reusable buffer.
//!
//! The gray conversion is defined once, by [`rgb_to_luma`] (BT.601 weights in 8-bit fixed point),
//! and NV12/NV21 use their Y plane as is. A renderer that writes NV12 computes Y with the same
//! function, so every pixel format of one image reduces to the same gray image.

use nalgebra::Vector3;

use crate::error::{Error, Result};
use crate::image::GrayImage;

/// Largest frame side accepted, in pixels.
const MAX_SIDE: u32 = 1 << 15;

/// How a frame's pixels are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// One byte of luminance per pixel.
    Gray8,
    /// A full-resolution Y plane followed by a half-resolution interleaved U,V plane.
    Nv12,
    /// A full-resolution Y plane followed by a half-resolution interleaved V,U plane (Android).
    Nv21,
    /// Four bytes per pixel: red, green, blue, alpha.
    Rgba8,
    /// Four bytes per pixel: blue, green, red, alpha (iOS `kCVPixelFormatType_32BGRA`).
    Bgra8,
}

impl PixelFormat {
    /// Every format, for tests and command-line parsing.
    pub const ALL: [PixelFormat; 5] = [
        PixelFormat::Gray8,
        PixelFormat::Nv12,
        PixelFormat::Nv21,
        PixelFormat::Rgba8,
        PixelFormat::Bgra8,
    ];

    /// Bytes per pixel of the first (or only) plane.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Gray8 | PixelFormat::Nv12 | PixelFormat::Nv21 => 1,
            PixelFormat::Rgba8 | PixelFormat::Bgra8 => 4,
        }
    }

    /// Whether the format has a separate chroma plane.
    pub fn is_biplanar(self) -> bool {
        matches!(self, PixelFormat::Nv12 | PixelFormat::Nv21)
    }

    /// The lower-case name used in files and on the command line (`gray8`, `nv12`, …).
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Gray8 => "gray8",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::Nv21 => "nv21",
            PixelFormat::Rgba8 => "rgba8",
            PixelFormat::Bgra8 => "bgra8",
        }
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PixelFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        PixelFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::InvalidFrame(format!(
                    "unknown pixel format {s:?} (expected gray8, nv12, nv21, rgba8 or bgra8)"
                ))
            })
    }
}

/// The gray level of an sRGB pixel: `(77 r + 150 g + 29 b + 128) >> 8` (BT.601 luma weights in
/// 8-bit fixed point, rounded). This is *the* gray conversion of the runtime, on CPU and GPU.
#[inline]
pub fn rgb_to_luma(r: u8, g: u8, b: u8) -> u8 {
    ((77 * u32::from(r) + 150 * u32::from(g) + 29 * u32::from(b) + 128) >> 8) as u8
}

/// One plane of pixels: the bytes and the distance between row starts.
#[derive(Debug, Clone, Copy)]
struct Plane<'a> {
    data: &'a [u8],
    stride: usize,
}

impl Plane<'_> {
    fn row(&self, y: usize, len: usize) -> &[u8] {
        let start = y * self.stride;
        &self.data[start..start + len]
    }
}

/// A camera frame: borrowed pixels with their layout, capture time and optional gravity.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    format: PixelFormat,
    width: u32,
    height: u32,
    luma: Plane<'a>,
    chroma: Option<Plane<'a>>,
    timestamp: f64,
    gravity: Option<Vector3<f64>>,
}

fn invalid<T>(why: String) -> Result<T> {
    Err(Error::InvalidFrame(why))
}

/// Checks that `data` holds `rows` rows of `row_bytes` bytes spaced `stride` apart. The last row
/// need not be padded to the full stride (Android's `ImageReader` buffers end early).
fn check_plane(
    name: &str,
    data: &[u8],
    stride: usize,
    rows: usize,
    row_bytes: usize,
) -> Result<()> {
    if stride < row_bytes {
        return invalid(format!(
            "{name} row stride {stride} is shorter than a row of {row_bytes} bytes"
        ));
    }
    let needed = stride
        .checked_mul(rows.saturating_sub(1))
        .and_then(|n| n.checked_add(row_bytes))
        .ok_or_else(|| Error::InvalidFrame(format!("{name} size overflows")))?;
    if data.len() < needed {
        return invalid(format!(
            "{name} buffer holds {} bytes, but {rows} rows at stride {stride} need {needed}",
            data.len()
        ));
    }
    Ok(())
}

fn check_size(format: PixelFormat, width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return invalid(format!(
            "frame size {width}x{height} must be between 1 and {MAX_SIDE} on each side"
        ));
    }
    if format.is_biplanar() && (!width.is_multiple_of(2) || !height.is_multiple_of(2)) {
        return invalid(format!(
            "{format} needs even dimensions, got {width}x{height}"
        ));
    }
    Ok(())
}

impl<'a> Frame<'a> {
    /// A frame in one buffer. For Gray8, RGBA8 and BGRA8 that is the only plane; for NV12 and
    /// NV21 the chroma plane follows the luma plane at offset `stride * height`, with the same
    /// stride. Fails when the sizes, stride and buffer length do not fit together, or when NV12/NV21
    /// dimensions are odd.
    pub fn new(
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: usize,
        data: &'a [u8],
    ) -> Result<Frame<'a>> {
        check_size(format, width, height)?;
        let row_bytes = width as usize * format.bytes_per_pixel();
        if format.is_biplanar() {
            let luma_len = stride
                .checked_mul(height as usize)
                .ok_or_else(|| Error::InvalidFrame("luma plane size overflows".to_string()))?;
            check_plane("luma", data, stride, height as usize, row_bytes)?;
            if data.len() <= luma_len {
                return invalid(format!(
                    "{format} buffer of {} bytes ends before its chroma plane at offset {luma_len}",
                    data.len()
                ));
            }
            let (luma, chroma) = data.split_at(luma_len);
            return Frame::new_biplanar(format, width, height, luma, stride, chroma, stride);
        }
        check_plane("pixel", data, stride, height as usize, row_bytes)?;
        Ok(Frame {
            format,
            width,
            height,
            luma: Plane { data, stride },
            chroma: None,
            timestamp: 0.0,
            gravity: None,
        })
    }

    /// An NV12 or NV21 frame whose two planes live in separate buffers, as `CVPixelBuffer` and
    /// `ImageReader` expose them.
    pub fn new_biplanar(
        format: PixelFormat,
        width: u32,
        height: u32,
        luma: &'a [u8],
        luma_stride: usize,
        chroma: &'a [u8],
        chroma_stride: usize,
    ) -> Result<Frame<'a>> {
        if !format.is_biplanar() {
            return invalid(format!("{format} is not a two-plane format"));
        }
        check_size(format, width, height)?;
        check_plane("luma", luma, luma_stride, height as usize, width as usize)?;
        check_plane(
            "chroma",
            chroma,
            chroma_stride,
            height as usize / 2,
            width as usize,
        )?;
        Ok(Frame {
            format,
            width,
            height,
            luma: Plane {
                data: luma,
                stride: luma_stride,
            },
            chroma: Some(Plane {
                data: chroma,
                stride: chroma_stride,
            }),
            timestamp: 0.0,
            gravity: None,
        })
    }

    /// Sets the capture time in seconds.
    pub fn with_timestamp(mut self, timestamp: f64) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// Sets gravity: the world up direction in the camera frame, as the AR framework reports it.
    /// It is normalised; a zero, infinite or NaN vector is an error.
    pub fn with_gravity(mut self, gravity: Vector3<f64>) -> Result<Self> {
        if gravity.iter().any(|v| !v.is_finite()) {
            return invalid(format!("gravity {gravity:?} is not finite"));
        }
        let unit = gravity
            .try_normalize(1e-9)
            .ok_or_else(|| Error::InvalidFrame("gravity vector has zero length".into()))?;
        self.gravity = Some(unit);
        Ok(self)
    }

    /// The pixel format.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Capture time in seconds (0 unless set).
    pub fn timestamp(&self) -> f64 {
        self.timestamp
    }

    /// The unit world-up direction in the camera frame, when known.
    pub fn gravity(&self) -> Option<Vector3<f64>> {
        self.gravity
    }

    /// Row stride in bytes of the first (or only) plane.
    pub fn stride(&self) -> usize {
        self.luma.stride
    }

    /// The bytes of the first (or only) plane, as borrowed.
    pub fn plane_data(&self) -> &'a [u8] {
        self.luma.data
    }

    /// The chroma plane's bytes and stride, for NV12/NV21.
    pub fn chroma_plane(&self) -> Option<(&'a [u8], usize)> {
        self.chroma.map(|p| (p.data, p.stride))
    }

    /// The frame as an owned gray image.
    pub fn to_gray(&self) -> GrayImage {
        let mut out = GrayImage::new(0, 0);
        self.to_gray_into(&mut out);
        out
    }

    /// Writes the frame's gray image into `out`, reusing its buffer (no allocation when it is
    /// already large enough).
    pub fn to_gray_into(&self, out: &mut GrayImage) {
        let (w, h) = (self.width as usize, self.height as usize);
        out.resize(self.width, self.height);
        let dst = out.as_mut_slice();
        match self.format {
            PixelFormat::Gray8 | PixelFormat::Nv12 | PixelFormat::Nv21 => {
                for (y, row) in dst.chunks_exact_mut(w).enumerate() {
                    row.copy_from_slice(self.luma.row(y, w));
                }
            }
            PixelFormat::Rgba8 | PixelFormat::Bgra8 => {
                let (ri, bi) = if self.format == PixelFormat::Rgba8 {
                    (0, 2)
                } else {
                    (2, 0)
                };
                for (y, row) in dst.chunks_exact_mut(w).enumerate() {
                    let src = self.luma.row(y, 4 * w);
                    for (d, px) in row.iter_mut().zip(src.chunks_exact(4)) {
                        *d = rgb_to_luma(px[ri], px[1], px[bi]);
                    }
                }
            }
        }
        debug_assert_eq!(dst.len(), w * h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_weights_are_bt601_and_saturate_correctly() {
        assert_eq!(rgb_to_luma(0, 0, 0), 0);
        assert_eq!(rgb_to_luma(255, 255, 255), 255);
        assert_eq!(rgb_to_luma(255, 0, 0), 77);
        assert_eq!(rgb_to_luma(0, 255, 0), 149);
        assert_eq!(rgb_to_luma(0, 0, 255), 29);
        for v in 0..=255u8 {
            assert_eq!(rgb_to_luma(v, v, v), v, "gray stays gray");
        }
    }

    #[test]
    fn rgba_and_bgra_agree_with_padded_strides() {
        let (w, h, stride) = (5u32, 3u32, 24usize);
        let mut rgba = vec![0u8; stride * h as usize];
        let mut bgra = rgba.clone();
        for y in 0..h as usize {
            for x in 0..w as usize {
                let (r, g, b) = ((x * 40) as u8, (y * 70) as u8, (x * y * 13) as u8);
                rgba[y * stride + 4 * x..][..4].copy_from_slice(&[r, g, b, 255]);
                bgra[y * stride + 4 * x..][..4].copy_from_slice(&[b, g, r, 255]);
            }
        }
        let a = Frame::new(PixelFormat::Rgba8, w, h, stride, &rgba)
            .unwrap()
            .to_gray();
        let b = Frame::new(PixelFormat::Bgra8, w, h, stride, &bgra)
            .unwrap()
            .to_gray();
        assert_eq!(a, b);
        assert_eq!(a.get(4, 2), rgb_to_luma(160, 140, 104));
    }

    #[test]
    fn nv12_uses_the_luma_plane_in_one_or_two_buffers() {
        let (w, h, stride) = (4u32, 2u32, 6usize);
        let mut data = vec![0u8; stride * 3];
        for (i, v) in data.iter_mut().enumerate() {
            *v = i as u8;
        }
        let one = Frame::new(PixelFormat::Nv12, w, h, stride, &data).unwrap();
        let gray = one.to_gray();
        assert_eq!(gray.as_slice(), &[0, 1, 2, 3, 6, 7, 8, 9]);
        let (luma, chroma) = data.split_at(stride * 2);
        let two =
            Frame::new_biplanar(PixelFormat::Nv21, w, h, luma, stride, chroma, stride).unwrap();
        assert_eq!(two.to_gray(), gray);
        assert_eq!(two.chroma_plane().unwrap().0.len(), 6);
    }

    #[test]
    fn last_row_need_not_be_padded() {
        let data = vec![7u8; 10 * 2 + 4];
        let f = Frame::new(PixelFormat::Gray8, 4, 3, 10, &data).unwrap();
        assert_eq!(f.to_gray().as_slice(), &[7; 12]);
    }

    #[test]
    fn to_gray_into_reuses_the_buffer() {
        let data = vec![9u8; 64 * 48];
        let f = Frame::new(PixelFormat::Gray8, 64, 48, 64, &data).unwrap();
        let mut out = GrayImage::new(64, 48);
        let before = out.as_slice().as_ptr();
        f.to_gray_into(&mut out);
        assert_eq!(out.as_slice().as_ptr(), before);
        assert!(out.as_slice().iter().all(|&v| v == 9));
    }

    #[test]
    fn every_bad_layout_is_an_error_not_a_panic() {
        let buf = vec![0u8; 1000];
        let cases: Vec<(Result<Frame<'_>>, &str)> = vec![
            (
                Frame::new(PixelFormat::Gray8, 0, 10, 10, &buf),
                "frame size",
            ),
            (
                Frame::new(PixelFormat::Gray8, 10, 0, 10, &buf),
                "frame size",
            ),
            (
                Frame::new(PixelFormat::Gray8, 40_000, 1, 40_000, &buf),
                "frame size",
            ),
            (Frame::new(PixelFormat::Gray8, 10, 10, 9, &buf), "stride"),
            (Frame::new(PixelFormat::Rgba8, 10, 10, 30, &buf), "stride"),
            (Frame::new(PixelFormat::Gray8, 32, 32, 32, &buf), "need"),
            (Frame::new(PixelFormat::Rgba8, 16, 16, 64, &buf), "need"),
            (Frame::new(PixelFormat::Nv12, 9, 10, 10, &buf), "even"),
            (Frame::new(PixelFormat::Nv21, 10, 7, 10, &buf), "even"),
            (Frame::new(PixelFormat::Nv12, 20, 50, 20, &buf), "chroma"),
            (
                Frame::new(PixelFormat::Nv12, 20, 40, 20, &buf[..810]),
                "chroma",
            ),
            (
                Frame::new(PixelFormat::Gray8, 10, 10, usize::MAX, &buf),
                "overflow",
            ),
            (
                Frame::new(PixelFormat::Nv12, 10, 10, usize::MAX / 2, &buf),
                "overflow",
            ),
            (
                Frame::new_biplanar(PixelFormat::Gray8, 10, 10, &buf, 10, &buf, 10),
                "two-plane",
            ),
            (
                Frame::new_biplanar(PixelFormat::Nv12, 10, 10, &buf, 10, &buf[..30], 10),
                "chroma",
            ),
        ];
        for (result, needle) in cases {
            let err = result.expect_err(needle);
            assert!(matches!(err, Error::InvalidFrame(_)));
            assert!(
                err.to_string().contains(needle),
                "{err} should mention {needle}"
            );
        }
    }

    #[test]
    fn gravity_is_validated_and_normalised() {
        let buf = [0u8; 4];
        let f = Frame::new(PixelFormat::Gray8, 2, 2, 2, &buf).unwrap();
        let g = f.with_gravity(Vector3::new(0.0, -9.81, 0.0)).unwrap();
        assert_eq!(g.gravity(), Some(Vector3::new(0.0, -1.0, 0.0)));
        assert!(f.with_gravity(Vector3::new(f64::NAN, 1.0, 0.0)).is_err());
        assert!(
            f.with_gravity(Vector3::new(0.0, f64::INFINITY, 0.0))
                .is_err()
        );
        assert!(f.with_gravity(Vector3::zeros()).is_err());
        assert_eq!(f.with_timestamp(1.5).timestamp(), 1.5);
    }

    #[test]
    fn pixel_formats_parse_by_name() {
        for f in PixelFormat::ALL {
            assert_eq!(f.name().parse::<PixelFormat>().unwrap(), f);
        }
        assert!("yuv420".parse::<PixelFormat>().is_err());
    }
}
