//! Corner response: the Shi–Tomasi minimum eigenvalue of the gradient structure tensor.
//!
//! Gradients are 3×3 Sobel (divided by 8, so in grey levels per pixel); the tensor entries are
//! smoothed with a 5×5 binomial window (σ ≈ 1). The response is `λ_min` in (grey level / pixel)²:
//! invariant to rotation, and to brightness offsets; it scales with contrast squared.

use crate::image::GrayImage;

/// Reusable buffers for the response of one level.
#[derive(Debug, Default)]
pub(crate) struct ResponseScratch {
    xx: Vec<f32>,
    yy: Vec<f32>,
    xy: Vec<f32>,
    vxx: Vec<f32>,
    vyy: Vec<f32>,
    vxy: Vec<f32>,
    /// The response, `w * h`, zero within 3 pixels of the border.
    pub(crate) response: Vec<f32>,
}

/// Computes the Shi–Tomasi response of `img` into `s.response`.
// Index loops over equal-length shifted slices: bounds checks vanish and the loops vectorise.
#[allow(clippy::needless_range_loop)]
pub(crate) fn shi_tomasi(img: &GrayImage, s: &mut ResponseScratch) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let n = w * h;
    for b in [&mut s.xx, &mut s.yy, &mut s.xy, &mut s.response] {
        b.clear();
        b.resize(n, 0.0);
    }
    for b in [&mut s.vxx, &mut s.vyy, &mut s.vxy] {
        b.clear();
        b.resize(w, 0.0);
    }
    if w < 7 || h < 7 {
        return;
    }
    let p = img.as_slice();
    // Gradient products (raw Sobel, scaled at the end). Shifted slices of equal length let the
    // compiler drop bounds checks and vectorise.
    let n = w - 2;
    for y in 1..h - 1 {
        let r0 = &p[(y - 1) * w..y * w];
        let r1 = &p[y * w..(y + 1) * w];
        let r2 = &p[(y + 1) * w..(y + 2) * w];
        let (r0l, r0c, r0r) = (&r0[..n], &r0[1..n + 1], &r0[2..n + 2]);
        let (r1l, r1r) = (&r1[..n], &r1[2..n + 2]);
        let (r2l, r2c, r2r) = (&r2[..n], &r2[1..n + 1], &r2[2..n + 2]);
        let row = y * w + 1..y * w + 1 + n;
        let xx = &mut s.xx[row.clone()];
        let yy = &mut s.yy[row.clone()];
        let xy = &mut s.xy[row];
        for i in 0..n {
            let v = |a: &[u8]| i32::from(a[i]);
            let gx = (v(r0r) - v(r0l)) + 2 * (v(r1r) - v(r1l)) + (v(r2r) - v(r2l));
            let gy = (v(r2l) - v(r0l)) + 2 * (v(r2c) - v(r0c)) + (v(r2r) - v(r0r));
            let (gx, gy) = (gx as f32, gy as f32);
            xx[i] = gx * gx;
            yy[i] = gy * gy;
            xy[i] = gx * gy;
        }
    }
    // Sobel gain 8 (squared: 64) and binomial window 16 x 16.
    let norm = 1.0 / (64.0 * 256.0);
    let m = w - 6;
    for y in 3..h - 3 {
        vertical5(&s.xx, w, y, &mut s.vxx);
        vertical5(&s.yy, w, y, &mut s.vyy);
        vertical5(&s.xy, w, y, &mut s.vxy);
        let out = &mut s.response[y * w + 3..y * w + 3 + m];
        let [a0, a1, a2, a3, a4] = taps(&s.vxx, m);
        let [c0, c1, c2, c3, c4] = taps(&s.vyy, m);
        let [b0, b1, b2, b3, b4] = taps(&s.vxy, m);
        for i in 0..m {
            let sa = a0[i] + 4.0 * (a1[i] + a3[i]) + 6.0 * a2[i] + a4[i];
            let sc = c0[i] + 4.0 * (c1[i] + c3[i]) + 6.0 * c2[i] + c4[i];
            let sb = b0[i] + 4.0 * (b1[i] + b3[i]) + 6.0 * b2[i] + b4[i];
            let d = sa - sc;
            let lmin = 0.5 * ((sa + sc) - (d * d + 4.0 * sb * sb).sqrt());
            out[i] = lmin * norm;
        }
    }
}

/// The five shifted windows of a 5-tap filter over `a` for outputs `3..3 + m`.
fn taps(a: &[f32], m: usize) -> [&[f32]; 5] {
    [
        &a[1..1 + m],
        &a[2..2 + m],
        &a[3..3 + m],
        &a[4..4 + m],
        &a[5..5 + m],
    ]
}

#[allow(clippy::needless_range_loop)]
fn vertical5(src: &[f32], w: usize, y: usize, out: &mut [f32]) {
    let r = |k: usize| &src[k * w..(k + 1) * w];
    let (a, b, c, d, e) = (r(y - 2), r(y - 1), r(y), r(y + 1), r(y + 2));
    let out = &mut out[..w];
    for i in 0..w {
        out[i] = a[i] + 4.0 * (b[i] + d[i]) + 6.0 * c[i] + e[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corner_beats_edge_and_flat() {
        // A bright square: corners respond, edges and flat areas do not.
        let (w, h) = (40usize, 40usize);
        let mut data = vec![20u8; w * h];
        for y in 10..30 {
            for x in 10..30 {
                data[y * w + x] = 220;
            }
        }
        let img = GrayImage::from_vec(w as u32, h as u32, data).unwrap();
        let mut s = ResponseScratch::default();
        shi_tomasi(&img, &mut s);
        let r = |x: usize, y: usize| s.response[y * w + x];
        assert!(r(10, 10) > 100.0, "corner {}", r(10, 10));
        assert!(r(20, 10) < 1e-3 * r(10, 10), "edge {}", r(20, 10));
        assert_eq!(r(20, 20), 0.0);
    }
}
