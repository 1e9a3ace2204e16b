//! Owned 8-bit grayscale images, the form every frame is reduced to before feature extraction.

use crate::error::{Error, Result};

/// An owned, tightly packed (stride = width) 8-bit grayscale image.
#[derive(Clone, PartialEq, Eq)]
pub struct GrayImage {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl std::fmt::Debug for GrayImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrayImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl GrayImage {
    /// A black image of the given size.
    pub fn new(width: u32, height: u32) -> GrayImage {
        GrayImage {
            width,
            height,
            data: vec![0; width as usize * height as usize],
        }
    }

    /// Wraps row-major pixels; `data.len()` must equal `width * height`.
    pub fn from_vec(width: u32, height: u32, data: Vec<u8>) -> Result<GrayImage> {
        let expected = width as usize * height as usize;
        if data.len() != expected {
            return Err(Error::InvalidImage(format!(
                "{width}x{height} needs {expected} bytes, got {}",
                data.len()
            )));
        }
        Ok(GrayImage {
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

    /// The pixels, row-major, `width` bytes per row.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// The pixels, mutable, row-major, `width` bytes per row.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Consumes the image, returning its pixels.
    pub fn into_vec(self) -> Vec<u8> {
        self.data
    }

    /// One row of pixels. Panics if `y >= height` (an indexing error, like slice indexing).
    pub fn row(&self, y: u32) -> &[u8] {
        let w = self.width as usize;
        &self.data[y as usize * w..(y as usize + 1) * w]
    }

    /// The pixel at column `x`, row `y`. Panics when out of bounds, like slice indexing.
    pub fn get(&self, x: u32, y: u32) -> u8 {
        self.data[y as usize * self.width as usize + x as usize]
    }

    /// Resizes to `width x height`, reusing the allocation when it is large enough. Contents are
    /// unspecified afterwards.
    pub fn resize(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        self.data.resize(width as usize * height as usize, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vec_checks_length() {
        assert!(GrayImage::from_vec(4, 3, vec![0; 12]).is_ok());
        let err = GrayImage::from_vec(4, 3, vec![0; 11]).unwrap_err();
        assert!(matches!(err, Error::InvalidImage(_)), "{err}");
    }

    #[test]
    fn rows_and_pixels_are_row_major() {
        let img = GrayImage::from_vec(3, 2, vec![1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(img.row(1), &[4, 5, 6]);
        assert_eq!(img.get(2, 0), 3);
        assert_eq!(img.get(0, 1), 4);
    }
}
