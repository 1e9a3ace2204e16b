//! Oriented, scale-normalised patches: `PATCH x PATCH` bilinear samples on a grid rotated by the
//! keypoint's angle and spaced so the patch spans the keypoint's `size`.
//!
//! Patches are sampled from the pyramid level whose scale is the largest not above
//! `size / PATCH` (so sampling never skips pixels of the level it reads), which for the
//! runtime's own keypoints is exactly their detection level with a one-pixel step. Sampling is
//! 11-bit fixed point and clamps at the image border.

use super::pyramid::Pyramid;
use super::{Keypoint, PATCH};
use crate::image::GrayImage;

/// Fractional bits of the sampling grid's fixed-point coordinates.
pub(crate) const FRAC_BITS: i32 = 11;
const ONE: i32 = 1 << FRAC_BITS;

/// Level of `pyr` to sample a patch of diameter `size` (level-0 pixels) from, and the sample
/// step in that level's pixels.
pub(crate) fn level_for_size(pyr: &Pyramid, size: f32) -> (usize, f32) {
    let want = size / PATCH as f32;
    let mut level = 0;
    for l in 1..pyr.len() {
        let [sx, sy] = pyr.scale(l);
        if 0.5 * (sx + sy) <= want * 1.001 {
            level = l;
        }
    }
    let [sx, sy] = pyr.scale(level);
    (level, want / (0.5 * (sx + sy)))
}

/// Samples one patch for `kp` (level-0 coordinates) into `out` (`PATCH * PATCH` bytes).
pub(crate) fn sample_keypoint(pyr: &Pyramid, kp: &Keypoint, out: &mut [u8]) {
    let size = if kp.size.is_finite() && kp.size > 0.0 {
        kp.size
    } else {
        PATCH as f32
    };
    let (level, step) = level_for_size(pyr, size);
    let [sx, sy] = pyr.scale(level);
    let angle = if kp.angle.is_finite() { kp.angle } else { 0.0 };
    sample_patch(pyr.level(level), kp.x / sx, kp.y / sy, step, angle, out);
}

/// The fixed-point sampling grid of one patch on one level: sample `(i, j)` (column, row) is at
/// `(x00 + i·ux + j·vx, y00 + i·uy + j·vy)` in level pixel-index coordinates with `FRAC_BITS`
/// fractional bits. `inside`: all four corners and their `+1` taps lie inside the level, so no
/// sample needs clamping (the grid is affine, so every sample then lies inside).
///
/// This is the only floating-point part of patch sampling (the angle's sine and cosine, the
/// rounding to fixed point); it runs on the CPU for both paths, and the GPU kernel
/// (`shaders/detect.wgsl`, `patches`) samples from the uploaded geometry with the same integer
/// arithmetic as [`sample_geometry`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PatchGeometry {
    pub(crate) x00: i32,
    pub(crate) y00: i32,
    pub(crate) ux: i32,
    pub(crate) uy: i32,
    pub(crate) vx: i32,
    pub(crate) vy: i32,
    pub(crate) inside: bool,
}

/// The geometry of a patch centred at the continuous level coordinate `(cx, cy)` (pixel centres
/// at +0.5), with sample spacing `step` level pixels, its x axis along `angle`, on a `w x h`
/// level. Absurd inputs (far away, huge or NaN) are clamped so the fixed-point arithmetic stays
/// in range: `|x00|, |y00| <= 2^28`, `|ux|, … <= 2^21`.
pub(crate) fn patch_geometry(
    w: u32,
    h: u32,
    cx: f32,
    cy: f32,
    step: f32,
    angle: f32,
) -> PatchGeometry {
    let (w, h) = (w as i32, h as i32);
    const FAR: f32 = 65536.0;
    let finite_or = |v: f32, d: f32| if v.is_finite() { v } else { d };
    let cx = finite_or(cx, 0.0).clamp(-FAR, FAR);
    let cy = finite_or(cy, 0.0).clamp(-FAR, FAR);
    let step = finite_or(step, 1.0).clamp(1e-3, 1024.0);
    let angle = finite_or(angle, 0.0);
    let (sin, cos) = angle.sin_cos();
    let half = PATCH as f32 * 0.5;
    // Patch pixel (i, j) centre at offset ((i + 0.5 - half) * step, (j + 0.5 - half) * step)
    // rotated by the angle; in pixel-index coordinates (subtract 0.5).
    let to_fp = |v: f32| (v * ONE as f32).round() as i32;
    let (ux, uy) = (to_fp(cos * step), to_fp(sin * step));
    let (vx, vy) = (to_fp(-sin * step), to_fp(cos * step));
    let o = 0.5 - half;
    let x00 = to_fp(cx - 0.5 + o * step * cos - o * step * sin);
    let y00 = to_fp(cy - 0.5 + o * step * sin + o * step * cos);
    // Footprint test: all four corners (and the +1 tap) inside means no clamping is needed.
    let last = (PATCH - 1) as i32;
    let corners = [(0, 0), (last, 0), (0, last), (last, last)];
    let inside = corners.iter().all(|&(i, j)| {
        let x = x00 + i * ux + j * vx;
        let y = y00 + i * uy + j * vy;
        x >= 0 && y >= 0 && (x >> FRAC_BITS) < w - 1 && (y >> FRAC_BITS) < h - 1
    });
    PatchGeometry {
        x00,
        y00,
        ux,
        uy,
        vx,
        vy,
        inside,
    }
}

/// Samples a patch centred at the continuous level coordinate `(cx, cy)` (pixel centres at
/// +0.5), with sample spacing `step` level pixels, its x axis along `angle`.
pub(crate) fn sample_patch(
    img: &GrayImage,
    cx: f32,
    cy: f32,
    step: f32,
    angle: f32,
    out: &mut [u8],
) {
    let out = &mut out[..PATCH * PATCH];
    if img.width() == 0 || img.height() == 0 {
        out.fill(0);
        return;
    }
    let g = patch_geometry(img.width(), img.height(), cx, cy, step, angle);
    sample_geometry(img, &g, out);
}

/// Samples the `PATCH x PATCH` patch of geometry `g` (made for `img`'s size) into `out`:
/// bilinear, 11-bit weights, `(top·(2048 − fy) + bottom·fy + 2^21) >> 22` in u32, clamping at
/// the border when `g.inside` is false. With AVX2, patches well inside the image take the vector
/// sampler (`patch_x86.rs`), which gives the same bytes.
pub(crate) fn sample_geometry(img: &GrayImage, g: &PatchGeometry, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2")
        && super::patch_x86::fits(g, img.width(), img.height())
    {
        // SAFETY: AVX2 is checked at run time and `fits` just above.
        unsafe { super::patch_x86::sample_inside(img.as_slice(), img.width() as usize, g, out) };
        return;
    }
    sample_geometry_scalar(img, g, out);
}

/// The scalar sampler: the definition of [`sample_geometry`].
pub(crate) fn sample_geometry_scalar(img: &GrayImage, g: &PatchGeometry, out: &mut [u8]) {
    let (w, h) = (img.width() as i32, img.height() as i32);
    let out = &mut out[..PATCH * PATCH];
    let p = img.as_slice();
    let wu = w as usize;
    for (j, row) in out.chunks_exact_mut(PATCH).enumerate() {
        let mut x = g.x00 + j as i32 * g.vx;
        let mut y = g.y00 + j as i32 * g.vy;
        if g.inside {
            for o in row.iter_mut() {
                let (xi, yi) = ((x >> FRAC_BITS) as usize, (y >> FRAC_BITS) as usize);
                let (fx, fy) = ((x & (ONE - 1)) as u32, (y & (ONE - 1)) as u32);
                let i = yi * wu + xi;
                let top = u32::from(p[i]) * (ONE as u32 - fx) + u32::from(p[i + 1]) * fx;
                let bot = u32::from(p[i + wu]) * (ONE as u32 - fx) + u32::from(p[i + wu + 1]) * fx;
                *o = ((top * (ONE as u32 - fy) + bot * fy + (1 << (2 * FRAC_BITS - 1)))
                    >> (2 * FRAC_BITS)) as u8;
                x += g.ux;
                y += g.uy;
            }
        } else {
            for o in row.iter_mut() {
                *o = sample_clamped(p, w, h, x, y);
                x += g.ux;
                y += g.uy;
            }
        }
    }
}

fn sample_clamped(p: &[u8], w: i32, h: i32, x: i32, y: i32) -> u8 {
    let (xi, yi) = (x >> FRAC_BITS, y >> FRAC_BITS);
    let (fx, fy) = ((x & (ONE - 1)) as u32, (y & (ONE - 1)) as u32);
    let at = |xx: i32, yy: i32| {
        let xx = xx.clamp(0, w - 1) as usize;
        let yy = yy.clamp(0, h - 1) as usize;
        u32::from(p[yy * w as usize + xx])
    };
    let top = at(xi, yi) * (ONE as u32 - fx) + at(xi + 1, yi) * fx;
    let bot = at(xi, yi + 1) * (ONE as u32 - fx) + at(xi + 1, yi + 1) * fx;
    ((top * (ONE as u32 - fy) + bot * fy + (1 << (2 * FRAC_BITS - 1))) >> (2 * FRAC_BITS)) as u8
}
