//! PNG reading and writing (8-bit gray/RGB/RGBA, 16-bit gray for depth) via the `png` crate.

use std::io::Cursor;
use std::path::Path;

use crate::error::{Result, SimError};
use crate::image::RgbImage;
use sextant_runtime::GrayImage;

/// A decoded 8-bit image: gray, or colour converted to RGB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodedImage {
    /// One channel.
    Gray(GrayImage),
    /// Three channels (alpha, if any, dropped).
    Rgb(RgbImage),
}

impl DecodedImage {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        match self {
            DecodedImage::Gray(g) => g.width(),
            DecodedImage::Rgb(c) => c.width(),
        }
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        match self {
            DecodedImage::Gray(g) => g.height(),
            DecodedImage::Rgb(c) => c.height(),
        }
    }

    /// The image as RGB (gray replicated).
    pub fn to_rgb(&self) -> RgbImage {
        match self {
            DecodedImage::Rgb(c) => c.clone(),
            DecodedImage::Gray(g) => {
                let mut out = RgbImage::new(g.width(), g.height());
                for (o, &v) in out.as_mut_slice().chunks_exact_mut(3).zip(g.as_slice()) {
                    o.copy_from_slice(&[v, v, v]);
                }
                out
            }
        }
    }

    /// The image as gray, colour converted with the runtime's `rgb_to_luma`.
    pub fn to_gray(&self) -> GrayImage {
        match self {
            DecodedImage::Gray(g) => g.clone(),
            DecodedImage::Rgb(c) => crate::encode::rgb_to_gray(c),
        }
    }
}

fn png_err(what: &str, e: impl std::fmt::Display) -> SimError {
    SimError::Png {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// Largest accepted image side: guards against absurd headers in untrusted files.
const MAX_SIDE: u32 = 16_384;

fn read_png(bytes: &[u8], what: &str, keep_16: bool) -> Result<(png::OutputInfo, Vec<u8>)> {
    let mut decoder = png::Decoder::new(Cursor::new(bytes));
    decoder.set_transformations(if keep_16 {
        png::Transformations::EXPAND
    } else {
        png::Transformations::normalize_to_color8()
    });
    let mut reader = decoder.read_info().map_err(|e| png_err(what, e))?;
    let (w, h) = (reader.info().width, reader.info().height);
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(png_err(what, format!("unsupported size {w}x{h}")));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| png_err(what, "image too large"))?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(|e| png_err(what, e))?;
    buf.truncate(info.buffer_size());
    Ok((info, buf))
}

/// Decodes an 8-bit (or 16-bit, reduced to 8) gray, gray+alpha, RGB, RGBA or palette PNG.
pub fn decode_png(bytes: &[u8], what: &str) -> Result<DecodedImage> {
    let (info, buf) = read_png(bytes, what, false)?;
    let (w, h) = (info.width, info.height);
    let n = w as usize * h as usize;
    let stride = info.line_size;
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(png_err(what, "palette not expanded")),
    };
    if info.bit_depth != png::BitDepth::Eight || buf.len() < stride * h as usize {
        return Err(png_err(what, "unexpected decoded layout"));
    }
    let rows = buf.chunks_exact(stride).take(h as usize);
    if channels <= 2 {
        let mut data = Vec::with_capacity(n);
        for row in rows {
            data.extend(row[..w as usize * channels].iter().step_by(channels));
        }
        Ok(DecodedImage::Gray(GrayImage::from_vec(w, h, data)?))
    } else {
        let mut data = Vec::with_capacity(n * 3);
        for row in rows {
            for px in row[..w as usize * channels].chunks_exact(channels) {
                data.extend_from_slice(&px[..3]);
            }
        }
        Ok(DecodedImage::Rgb(RgbImage::from_vec(w, h, data)?))
    }
}

/// Reads and decodes a PNG file.
pub fn read_png_file(path: &Path) -> Result<DecodedImage> {
    let bytes = std::fs::read(path).map_err(|e| SimError::io(path, e))?;
    decode_png(&bytes, &path.display().to_string())
}

/// Decodes a 16-bit gray PNG (depth in millimetres) into `(width, height, values)`.
pub fn decode_png16(bytes: &[u8], what: &str) -> Result<(u32, u32, Vec<u16>)> {
    let (info, buf) = read_png(bytes, what, true)?;
    if info.color_type != png::ColorType::Grayscale || info.bit_depth != png::BitDepth::Sixteen {
        return Err(png_err(
            what,
            format!(
                "expected 16-bit gray, found {:?} {:?}",
                info.color_type, info.bit_depth
            ),
        ));
    }
    let (w, h) = (info.width, info.height);
    let mut out = Vec::with_capacity(w as usize * h as usize);
    for row in buf.chunks_exact(info.line_size).take(h as usize) {
        out.extend(
            row[..w as usize * 2]
                .chunks_exact(2)
                .map(|b| u16::from_be_bytes([b[0], b[1]])),
        );
    }
    Ok((w, h, out))
}

fn encode(
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(color);
        enc.set_depth(depth);
        enc.set_compression(png::Compression::Fast);
        let mut writer = enc.write_header().map_err(|e| png_err("encode", e))?;
        writer
            .write_image_data(data)
            .map_err(|e| png_err("encode", e))?;
        writer.finish().map_err(|e| png_err("encode", e))?;
    }
    Ok(out)
}

/// Encodes an 8-bit gray PNG.
pub fn encode_gray(img: &GrayImage) -> Result<Vec<u8>> {
    encode(
        img.width(),
        img.height(),
        png::ColorType::Grayscale,
        png::BitDepth::Eight,
        img.as_slice(),
    )
}

/// Encodes an 8-bit RGB PNG.
pub fn encode_rgb(img: &RgbImage) -> Result<Vec<u8>> {
    encode(
        img.width(),
        img.height(),
        png::ColorType::Rgb,
        png::BitDepth::Eight,
        img.as_slice(),
    )
}

/// Encodes an 8-bit RGBA PNG from packed RGBA bytes.
pub fn encode_rgba(w: u32, h: u32, rgba: &[u8]) -> Result<Vec<u8>> {
    encode(w, h, png::ColorType::Rgba, png::BitDepth::Eight, rgba)
}

/// Encodes a 16-bit gray PNG (big-endian samples, as PNG stores them).
pub fn encode_gray16(w: u32, h: u32, values: &[u16]) -> Result<Vec<u8>> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    encode(
        w,
        h,
        png::ColorType::Grayscale,
        png::BitDepth::Sixteen,
        &bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray16_round_trip() {
        let vals: Vec<u16> = (0..12).map(|i| i * 5000).collect();
        let bytes = encode_gray16(4, 3, &vals).unwrap();
        let (w, h, back) = decode_png16(&bytes, "t").unwrap();
        assert_eq!((w, h), (4, 3));
        assert_eq!(back, vals);
    }

    #[test]
    fn truncated_png_is_an_error() {
        let img = RgbImage::from_vec(2, 2, (0..12).collect()).unwrap();
        let bytes = encode_rgb(&img).unwrap();
        assert_eq!(decode_png(&bytes, "t").unwrap(), DecodedImage::Rgb(img));
        for cut in [0, 8, 20, bytes.len() / 2, bytes.len() - 13] {
            assert!(decode_png(&bytes[..cut], "t").is_err(), "cut at {cut}");
        }
    }
}
