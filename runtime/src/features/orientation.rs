//! Keypoint orientation by the intensity centroid (Rosin 1999, as in ORB): the angle of the
//! vector from the keypoint to the centroid of the intensities in a disc around it.

use crate::image::GrayImage;

/// Radius of the disc, in level pixels.
pub(crate) const ORIENTATION_RADIUS: usize = 15;

/// Half-widths of the disc's rows, `umax[v]` for `v = 0..=R`.
pub(crate) fn disc_half_widths() -> [usize; ORIENTATION_RADIUS + 1] {
    let mut umax = [0usize; ORIENTATION_RADIUS + 1];
    let r2 = (ORIENTATION_RADIUS * ORIENTATION_RADIUS) as f64 + 0.5;
    for (v, u) in umax.iter_mut().enumerate() {
        *u = (r2 - (v * v) as f64).sqrt().floor() as usize;
    }
    umax
}

/// The angle (radians, x right, y down) of the intensity centroid with moments `[m10, m01]`:
/// `atan2(m01, m10)` in f32. The
/// one floating-point step of the orientation; the GPU path computes the integer moments and
/// this runs on the CPU for both paths.
pub(crate) fn angle_of_moments([m10, m01]: [i64; 2]) -> f32 {
    (m01 as f32).atan2(m10 as f32)
}

/// The integer moments `[m10, m01]` (`Σ u·I`, `Σ v·I` over the disc, `u` right, `v` down) around
/// the integer pixel `(x, y)`; `|m| < 2^22`. The caller guarantees the disc lies inside the image.
pub(crate) fn moments(
    img: &GrayImage,
    x: usize,
    y: usize,
    umax: &[usize; ORIENTATION_RADIUS + 1],
) -> [i64; 2] {
    let w = img.width() as usize;
    let p = img.as_slice();
    let centre = y * w + x;
    let mut m10 = 0i64;
    let mut m01 = 0i64;
    // Row sums in i32 (at most 31 · 15 · 510 in magnitude), so the inner loops vectorise; the
    // totals in i64. The same integers as summing in i64 throughout.
    let r = umax[0];
    let row = &p[centre - r..=centre + r];
    let mut centre_row = 0i32;
    for (u, &px) in row.iter().enumerate() {
        centre_row += (u as i32 - r as i32) * i32::from(px);
    }
    m10 += i64::from(centre_row);
    for (v, &r) in umax.iter().enumerate().skip(1) {
        let below = &p[centre + v * w - r..=centre + v * w + r];
        let above = &p[centre - v * w - r..=centre - v * w + r];
        let (mut row10, mut sum) = (0i32, 0i32);
        for (u, (&b, &a)) in below.iter().zip(above).enumerate() {
            let du = u as i32 - r as i32;
            let (b, a) = (i32::from(b), i32::from(a));
            row10 += du * (b + a);
            sum += b - a;
        }
        m10 += i64::from(row10);
        m01 += v as i64 * i64::from(sum);
    }
    [m10, m01]
}
