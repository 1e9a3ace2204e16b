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
    // Gradient products (raw Sobel, scaled at the end).
    for y in 1..h - 1 {
        let r0 = &p[(y - 1) * w..y * w];
        let r1 = &p[y * w..(y + 1) * w];
        let r2 = &p[(y + 1) * w..(y + 2) * w];
        let xx = &mut s.xx[y * w..(y + 1) * w];
        let yy = &mut s.yy[y * w..(y + 1) * w];
        let xy = &mut s.xy[y * w..(y + 1) * w];
        for x in 1..w - 1 {
            let gx = (i32::from(r0[x + 1]) - i32::from(r0[x - 1]))
                + 2 * (i32::from(r1[x + 1]) - i32::from(r1[x - 1]))
                + (i32::from(r2[x + 1]) - i32::from(r2[x - 1]));
            let gy = (i32::from(r2[x - 1]) - i32::from(r0[x - 1]))
                + 2 * (i32::from(r2[x]) - i32::from(r0[x]))
                + (i32::from(r2[x + 1]) - i32::from(r0[x + 1]));
            let (gx, gy) = (gx as f32, gy as f32);
            xx[x] = gx * gx;
            yy[x] = gy * gy;
            xy[x] = gx * gy;
        }
    }
    // Sobel gain 8 (squared: 64) and binomial window 16 x 16.
    let norm = 1.0 / (64.0 * 256.0);
    for y in 3..h - 3 {
        vertical5(&s.xx, w, y, &mut s.vxx);
        vertical5(&s.yy, w, y, &mut s.vyy);
        vertical5(&s.xy, w, y, &mut s.vxy);
        let out = &mut s.response[y * w..(y + 1) * w];
        let (a, c, b) = (&s.vxx, &s.vyy, &s.vxy);
        for x in 3..w - 3 {
            let sa = a[x - 2] + 4.0 * (a[x - 1] + a[x + 1]) + 6.0 * a[x] + a[x + 2];
            let sc = c[x - 2] + 4.0 * (c[x - 1] + c[x + 1]) + 6.0 * c[x] + c[x + 2];
            let sb = b[x - 2] + 4.0 * (b[x - 1] + b[x + 1]) + 6.0 * b[x] + b[x + 2];
            let d = sa - sc;
            let lmin = 0.5 * ((sa + sc) - (d * d + 4.0 * sb * sb).sqrt());
            out[x] = lmin * norm;
        }
    }
}

fn vertical5(src: &[f32], w: usize, y: usize, out: &mut [f32]) {
    let r = |k: usize| &src[k * w..(k + 1) * w];
    let (a, b, c, d, e) = (r(y - 2), r(y - 1), r(y), r(y + 1), r(y + 2));
    for (i, o) in out.iter_mut().enumerate().take(w) {
        *o = a[i] + 4.0 * (b[i] + d[i]) + 6.0 * c[i] + e[i];
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
