//! Textures as mip pyramids, sampled trilinearly (bilinear within a level, linear across levels).
//!
//! Texels are stored as `[f32; 4]` (RGB + padding, in `[0, 1]`) so a bilinear tap is four
//! 16-byte loads and four vector multiply-adds, which the compiler turns into SSE/NEON. Texture
//! coordinates are normalised: `(0, 0)` is the top-left corner of the image, `(1, 1)` the
//! bottom-right; the level of detail is `log2` of the pixel footprint measured in level-0 texels.

use crate::image::RgbImage;

/// How coordinates outside `[0, 1)` are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrap {
    /// Tile the image (for surfaces with a repeat length).
    Repeat,
    /// Clamp to the edge texels (for images stretched once over a surface, like posters).
    Clamp,
}

#[derive(Clone, Debug)]
struct Level {
    w: usize,
    h: usize,
    texels: Vec<[f32; 4]>,
}

/// A mip-mapped RGB texture.
#[derive(Clone, Debug)]
pub struct Texture {
    levels: Vec<Level>,
}

impl Texture {
    /// Builds the mip pyramid of `img` (2×2 box filter down to 1×1).
    pub fn from_rgb(img: &RgbImage) -> Texture {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let texels = img
            .as_slice()
            .chunks_exact(3)
            .map(|p| [p[0], p[1], p[2]].map(|c| f32::from(c) * (1.0 / 255.0)))
            .map(|[r, g, b]| [r, g, b, 0.0])
            .collect();
        let mut levels = vec![Level { w, h, texels }];
        while let Some(last) = levels.last() {
            if last.w == 1 && last.h == 1 {
                break;
            }
            let next = downsample(last);
            levels.push(next);
        }
        Texture { levels }
    }

    /// Level-0 width in texels.
    pub fn width(&self) -> u32 {
        self.levels[0].w as u32
    }

    /// Level-0 height in texels.
    pub fn height(&self) -> u32 {
        self.levels[0].h as u32
    }

    /// Number of mip levels.
    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    /// Trilinear sample at normalised `(u, v)` with level of detail `lod` (0 = full resolution),
    /// as RGB in `[0, 1]`.
    #[inline]
    pub fn sample(&self, u: f32, v: f32, lod: f32, wrap: Wrap) -> [f32; 3] {
        let max = (self.levels.len() - 1) as f32;
        let lod = if lod > 0.0 { lod.min(max) } else { 0.0 };
        let l0 = lod as usize;
        let frac = lod - l0 as f32;
        let a = bilinear(&self.levels[l0], u, v, wrap);
        if frac < 1.0 / 64.0 || l0 + 1 >= self.levels.len() {
            return [a[0], a[1], a[2]];
        }
        let b = bilinear(&self.levels[l0 + 1], u, v, wrap);
        let k = 1.0 - frac;
        [
            a[0] * k + b[0] * frac,
            a[1] * k + b[1] * frac,
            a[2] * k + b[2] * frac,
        ]
    }
}

fn downsample(l: &Level) -> Level {
    let (w, h) = ((l.w / 2).max(1), (l.h / 2).max(1));
    let mut texels = Vec::with_capacity(w * h);
    for y in 0..h {
        let (y0, y1) = ((2 * y).min(l.h - 1), (2 * y + 1).min(l.h - 1));
        for x in 0..w {
            let (x0, x1) = ((2 * x).min(l.w - 1), (2 * x + 1).min(l.w - 1));
            let p = [
                l.texels[y0 * l.w + x0],
                l.texels[y0 * l.w + x1],
                l.texels[y1 * l.w + x0],
                l.texels[y1 * l.w + x1],
            ];
            let mut t = [0.0f32; 4];
            for (c, out) in t.iter_mut().enumerate() {
                *out = 0.25 * (p[0][c] + p[1][c] + p[2][c] + p[3][c]);
            }
            texels.push(t);
        }
    }
    Level { w, h, texels }
}

/// `floor` without a libm call (baseline x86-64 has no SSE4.1 `roundss`); exact for |x| < 2^31.
#[inline(always)]
fn floor_i(x: f32) -> i32 {
    let i = x as i32;
    if (i as f32) > x { i - 1 } else { i }
}

/// Integer texel indices and weight along one axis: `(i0, i1, frac)`.
/// No integer division: the repeat case wraps the coordinate into `[0, 1)` first.
#[inline(always)]
fn axis(coord: f32, n: usize, wrap: Wrap) -> (usize, usize, f32) {
    let n_i = n as i32;
    match wrap {
        Wrap::Repeat => {
            let c = coord - floor_i(coord.clamp(-1.0e6, 1.0e6)) as f32;
            let x = c * n as f32 - 0.5;
            let f = floor_i(x);
            let frac = x - f as f32;
            let mut i0 = f;
            if i0 < 0 {
                i0 += n_i;
            }
            if i0 >= n_i {
                i0 -= n_i;
            }
            let i1 = if i0 + 1 >= n_i { 0 } else { i0 + 1 };
            (i0 as usize, i1 as usize, frac)
        }
        Wrap::Clamp => {
            let x = coord.clamp(-1.0, 2.0) * n as f32 - 0.5;
            let f = floor_i(x);
            (
                f.clamp(0, n_i - 1) as usize,
                (f + 1).clamp(0, n_i - 1) as usize,
                x - f as f32,
            )
        }
    }
}

/// Bilinear sample, RGB in `[0, 1]` (the padding lane rides along so the loop vectorises).
#[inline(always)]
fn bilinear(l: &Level, u: f32, v: f32, wrap: Wrap) -> [f32; 4] {
    let (x0, x1, fx) = axis(u, l.w, wrap);
    let (y0, y1, fy) = axis(v, l.h, wrap);
    let r0 = y0 * l.w;
    let r1 = y1 * l.w;
    let (a, b, c, d) = (
        l.texels[r0 + x0],
        l.texels[r0 + x1],
        l.texels[r1 + x0],
        l.texels[r1 + x1],
    );
    let w = [
        (1.0 - fx) * (1.0 - fy),
        fx * (1.0 - fy),
        (1.0 - fx) * fy,
        fx * fy,
    ];
    let mut out = [0.0f32; 4];
    for ch in 0..4 {
        out[ch] = a[ch] * w[0] + b[ch] * w[1] + c[ch] * w[2] + d[ch] * w[3];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(n: u32) -> RgbImage {
        let mut data = Vec::new();
        for y in 0..n {
            for x in 0..n {
                let v = if (x + y) % 2 == 0 { 255 } else { 0 };
                data.extend_from_slice(&[v, v, v]);
            }
        }
        RgbImage::from_vec(n, n, data).unwrap()
    }

    #[test]
    fn pyramid_averages_and_ends_at_one_texel() {
        let t = Texture::from_rgb(&checker(64));
        assert_eq!(t.levels(), 7);
        // Level 0 at a texel centre is the texel; the coarsest level is the mean gray.
        let c = t.sample(0.5 / 64.0, 0.5 / 64.0, 0.0, Wrap::Clamp);
        assert!((c[0] - 1.0).abs() < 1e-6);
        let m = t.sample(0.3, 0.7, 100.0, Wrap::Repeat);
        assert!((m[0] - 0.5).abs() < 0.01, "{m:?}");
        // Between texel centres: the bilinear mean.
        let mid = t.sample(1.0 / 64.0, 0.5 / 64.0, 0.0, Wrap::Clamp);
        assert!((mid[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn repeat_wraps_and_clamp_does_not() {
        let t = Texture::from_rgb(&checker(4));
        let a = t.sample(0.125, 0.125, 0.0, Wrap::Repeat);
        let b = t.sample(1.125, -0.875, 0.0, Wrap::Repeat);
        assert_eq!(a, b);
        let c = t.sample(-3.0, 0.125, 0.0, Wrap::Clamp);
        assert_eq!(c, a);
    }
}
