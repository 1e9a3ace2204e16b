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

const FRAC_BITS: i32 = 11;
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
    let (w, h) = (img.width() as i32, img.height() as i32);
    let out = &mut out[..PATCH * PATCH];
    if w == 0 || h == 0 {
        out.fill(0);
        return;
    }
    // Keep the fixed-point arithmetic in range for absurd inputs (far away, huge or NaN).
    const FAR: f32 = 65536.0;
    let finite_or = |v: f32, d: f32| if v.is_finite() { v } else { d };
    let cx = finite_or(cx, 0.0).clamp(-FAR, FAR);
    let cy = finite_or(cy, 0.0).clamp(-FAR, FAR);
    let step = finite_or(step, 1.0).clamp(1e-3, 1024.0);
    let angle = finite_or(angle, 0.0);
    let p = img.as_slice();
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
    let wu = w as usize;
    for (j, row) in out.chunks_exact_mut(PATCH).enumerate() {
        let mut x = x00 + j as i32 * vx;
        let mut y = y00 + j as i32 * vy;
        if inside {
            for o in row.iter_mut() {
                let (xi, yi) = ((x >> FRAC_BITS) as usize, (y >> FRAC_BITS) as usize);
                let (fx, fy) = ((x & (ONE - 1)) as u32, (y & (ONE - 1)) as u32);
                let i = yi * wu + xi;
                let top = u32::from(p[i]) * (ONE as u32 - fx) + u32::from(p[i + 1]) * fx;
                let bot = u32::from(p[i + wu]) * (ONE as u32 - fx) + u32::from(p[i + wu + 1]) * fx;
                *o = ((top * (ONE as u32 - fy) + bot * fy + (1 << (2 * FRAC_BITS - 1)))
                    >> (2 * FRAC_BITS)) as u8;
                x += ux;
                y += uy;
            }
        } else {
            for o in row.iter_mut() {
                *o = sample_clamped(p, w, h, x, y);
                x += ux;
                y += uy;
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
