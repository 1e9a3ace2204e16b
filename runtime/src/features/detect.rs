//! Corner response: the Shi–Tomasi minimum eigenvalue of the gradient structure tensor, as an
//! exactly defined integer function (so the GPU kernel in `shaders/detect.wgsl` reproduces it bit
//! for bit).
//!
//! # Arithmetic contract (shared with `shaders/detect.wgsl`)
//!
//! For every pixel `(x, y)` with `3 <= x < w - 3` and `3 <= y < h - 3` (every other pixel, and every
//! pixel of an image narrower or lower than 7, is exactly `0.0`):
//!
//! ```text
//! gx, gy   raw 3×3 Sobel of the u8 image, i32 (|g| <= 1020), at pixels 1 <= x < w-1, 1 <= y < h-1
//! xx = gx², yy = gy², xy = gx·gy                                   i32
//! A, B, C  = Σ k(i)·k(j)·{xx, xy, yy}(x+i, y+j), i, j in -2..=2,
//!            k = (1, 4, 6, 4, 1)                                   exact i32 (|·| < 2^28)
//! a = A >> 6, b = B >> 6, c = C >> 6                               arithmetic shifts
//! D = (a − c)² + 4·b²                                              exact (< 2^47; f64 here)
//! s = isqrt(D) = floor(sqrt(D))                                    exact
//! λ2 = max(0, (a + c) − s)                                         i32 (< 2^24)
//! response = λ2 as f32 / 512                                       exact (power-of-two scale)
//! ```
//!
//! `λ2 / 2` is the smaller eigenvalue of `[[a, b], [b, c]]` (rounded up to an integer), and the
//! units work out as before: the Sobel gain is 8 (squared 64), the window's sum 256 and `a` is
//! `A / 64`, so `λ2 / 512 = λ_min(A, B, C) / (64 · 256)`: the response is `λ_min` in
//! (grey level / pixel)², invariant to rotation and to brightness offsets, scaling with contrast
//! squared.
//!
//! On the CPU `D` is computed in f64 (exact below 2^53) and `floor(sqrt(D))` from the f32 square
//! root, corrected by one exact step each way ([`isqrt_below_2_pow_47`], with the proof; checked
//! against an integer square root in the tests). The loops run over equal-length shifted slices
//! so they auto-vectorise.

use crate::image::GrayImage;

/// Rows of gradient products kept at once: the 5-tap vertical window.
const RING: usize = 5;

/// Reusable buffers for the response of one level.
#[derive(Debug, Default)]
pub(crate) struct ResponseScratch {
    /// Gradient products of the last [`RING`] rows, row `y` in slot `y % RING` (`RING * w`).
    xx: Vec<i32>,
    yy: Vec<i32>,
    xy: Vec<i32>,
    vxx: Vec<i32>,
    vyy: Vec<i32>,
    vxy: Vec<i32>,
    ra: Vec<i32>,
    rb: Vec<i32>,
    rc: Vec<i32>,
    /// The response, `w * h`, zero within 3 pixels of the border.
    pub(crate) response: Vec<f32>,
}

crate::simd::multiversion! {
    /// Computes the Shi–Tomasi response of `img` into `s.response` (AVX-512, AVX2 or baseline
    /// code, the same exact arithmetic).
    pub(crate) fn shi_tomasi(img: &GrayImage, s: &mut ResponseScratch) => shi_tomasi_body
}

/// The portable body, for tests comparing it with the dispatched kernels.
#[cfg(test)]
pub(crate) fn shi_tomasi_portable(img: &GrayImage, s: &mut ResponseScratch) {
    shi_tomasi_body(img, s);
}

// Index loops over equal-length shifted slices: bounds checks vanish and the loops vectorise.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn shi_tomasi_body(img: &GrayImage, s: &mut ResponseScratch) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    // No clearing: every product and response the loops below read is written first in this
    // call (stale values in the products' outer columns are summed by `vertical5` but never
    // used), and only the response's 3-pixel border is zeroed. Clearing every buffer of every
    // level cost as much as the maxima. The products live in a ring of five rows, so they stay
    // in the L1/L2 cache instead of streaming three image-sized i32 planes through memory.
    for b in [&mut s.xx, &mut s.yy, &mut s.xy] {
        b.resize(RING * w, 0);
    }
    s.response.resize(w * h, 0.0);
    for b in [
        &mut s.vxx, &mut s.vyy, &mut s.vxy, &mut s.ra, &mut s.rb, &mut s.rc,
    ] {
        b.resize(w, 0);
    }
    if w < 7 || h < 7 {
        s.response.fill(0.0);
        return;
    }
    s.response[..3 * w].fill(0.0);
    s.response[(h - 3) * w..].fill(0.0);
    for row in s.response[3 * w..(h - 3) * w].chunks_exact_mut(w) {
        row[..3].fill(0.0);
        row[w - 3..].fill(0.0);
    }
    let p = img.as_slice();
    for y in 1..5 {
        products(p, w, y, s);
    }
    let m = w - 6;
    for y in 3..h - 3 {
        products(p, w, y + 2, s);
        vertical5(&s.xx, w, y, &mut s.vxx);
        vertical5(&s.yy, w, y, &mut s.vyy);
        vertical5(&s.xy, w, y, &mut s.vxy);
        let [a0, a1, a2, a3, a4] = taps(&s.vxx, m);
        let [c0, c1, c2, c3, c4] = taps(&s.vyy, m);
        let [b0, b1, b2, b3, b4] = taps(&s.vxy, m);
        let (ra, rb, rc) = (&mut s.ra[..m], &mut s.rb[..m], &mut s.rc[..m]);
        for i in 0..m {
            ra[i] = (a0[i] + 4 * (a1[i] + a3[i]) + 6 * a2[i] + a4[i]) >> 6;
            rc[i] = (c0[i] + 4 * (c1[i] + c3[i]) + 6 * c2[i] + c4[i]) >> 6;
            rb[i] = (b0[i] + 4 * (b1[i] + b3[i]) + 6 * b2[i] + b4[i]) >> 6;
        }
        let out = &mut s.response[y * w + 3..y * w + 3 + m];
        let (ra, rb, rc) = (&s.ra[..m], &s.rb[..m], &s.rc[..m]);
        for i in 0..m {
            out[i] = eigen_response(ra[i], rb[i], rc[i]);
        }
    }
}

/// Gradient products (raw Sobel) of row `y` of the `w`-wide image `p` into ring slot
/// `y % RING`, columns `1..w - 1`. Shifted slices of equal length let the compiler drop bounds
/// checks and vectorise; inlined so it is compiled with the caller's target features.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn products(p: &[u8], w: usize, y: usize, s: &mut ResponseScratch) {
    let n = w - 2;
    let r0 = &p[(y - 1) * w..y * w];
    let r1 = &p[y * w..(y + 1) * w];
    let r2 = &p[(y + 1) * w..(y + 2) * w];
    let (r0l, r0c, r0r) = (&r0[..n], &r0[1..n + 1], &r0[2..n + 2]);
    let (r1l, r1r) = (&r1[..n], &r1[2..n + 2]);
    let (r2l, r2c, r2r) = (&r2[..n], &r2[1..n + 1], &r2[2..n + 2]);
    let slot = (y % RING) * w + 1;
    let row = slot..slot + n;
    let xx = &mut s.xx[row.clone()];
    let yy = &mut s.yy[row.clone()];
    let xy = &mut s.xy[row];
    for i in 0..n {
        let v = |a: &[u8]| i32::from(a[i]);
        let gx = (v(r0r) - v(r0l)) + 2 * (v(r1r) - v(r1l)) + (v(r2r) - v(r2l));
        let gy = (v(r2l) - v(r0l)) + 2 * (v(r2c) - v(r0c)) + (v(r2r) - v(r0r));
        xx[i] = gx * gx;
        yy[i] = gy * gy;
        xy[i] = gx * gy;
    }
}

/// `max(0, (a + c) − isqrt((a − c)² + 4b²)) / 512` for the shifted tensor sums (contract above).
#[inline(always)]
pub(crate) fn eigen_response(a: i32, b: i32, c: i32) -> f32 {
    let d = f64::from(a - c);
    let b = f64::from(b);
    // Exact: every term is an integer below 2^53, and Rust never fuses the multiply-add.
    let disc = d * d + 4.0 * (b * b);
    let s = isqrt_below_2_pow_47(disc);
    let l2 = ((a + c) - s).max(0);
    l2 as f32 * (1.0 / 512.0)
}

/// `floor(sqrt(D))` of an integer `0 <= D < 2^47` held exactly in an f64.
///
/// The square root is taken in f32 (in vector form several times cheaper than f64's) and made
/// exact by one correction step each way, in exact f64 arithmetic. Why one step suffices:
/// rounding `D` to f32 moves `sqrt(D)` by at most `sqrt(D)·2^-25 < 0.36` (`sqrt(D) < 2^23.5`), the
/// rounded f32 square root adds at most half an ulp, `<= 0.5` below 2^24, so the truncated
/// estimate is within 1 of `floor(sqrt(D))`; `s²` and `(s+1)²` are below 2^48, exact in f64.
#[inline(always)]
pub(crate) fn isqrt_below_2_pow_47(disc: f64) -> i32 {
    let s = f64::from((disc as f32).sqrt().trunc());
    let s =
        s - f64::from(u8::from(s * s > disc)) + f64::from(u8::from((s + 1.0) * (s + 1.0) <= disc));
    // SAFETY: 0 <= s < 2^24 (the floor of a square root of D < 2^47), so it fits an i32 and the
    // unchecked conversion (one vector instruction, where `as` saturates) is exact.
    unsafe { s.to_int_unchecked::<i32>() }
}

/// The five shifted windows of a 5-tap filter over `a` for outputs `3..3 + m`.
fn taps(a: &[i32], m: usize) -> [&[i32]; 5] {
    [
        &a[1..1 + m],
        &a[2..2 + m],
        &a[3..3 + m],
        &a[4..4 + m],
        &a[5..5 + m],
    ]
}

#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn vertical5(ring: &[i32], w: usize, y: usize, out: &mut [i32]) {
    let r = |k: usize| &ring[(k % RING) * w..(k % RING + 1) * w];
    let (a, b, c, d, e) = (r(y - 2), r(y - 1), r(y), r(y + 1), r(y + 2));
    let out = &mut out[..w];
    for i in 0..w {
        out[i] = a[i] + 4 * (b[i] + d[i]) + 6 * c[i] + e[i];
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

    /// The dispatched kernel (AVX-512 or AVX2 where the CPU has them) gives the portable body's
    /// response bit for bit, on noise with strong gradients, at sizes around the 7-pixel
    /// minimum and with widths that leave vector remainders; scratch reused across sizes.
    #[test]
    fn dispatched_response_equals_the_portable_one() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut fast, mut portable) = (ResponseScratch::default(), ResponseScratch::default());
        for (w, h) in [
            (7, 7),
            (8, 9),
            (33, 17),
            (640, 480),
            (71, 64),
            (6, 40),
            (129, 7),
        ] {
            let data: Vec<u8> = (0..w * h)
                .map(|_| {
                    if next() % 5 == 0 {
                        255
                    } else {
                        (next() % 256) as u8
                    }
                })
                .collect();
            let img = GrayImage::from_vec(w, h, data).unwrap();
            shi_tomasi(&img, &mut fast);
            shi_tomasi_portable(&img, &mut portable);
            assert_eq!(fast.response.len(), (w * h) as usize);
            assert!(
                fast.response
                    .iter()
                    .zip(&portable.response)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{w}x{h}"
            );
            if w >= 7 && h >= 7 {
                assert!(fast.response.iter().any(|&r| r > 0.0), "{w}x{h} all zero");
            }
        }
    }

    /// The exact integer square root, by bisection on u64 (no floating point).
    fn isqrt_exact(d: u64) -> u64 {
        let (mut lo, mut hi) = (0u64, 1u64 << 32);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if mid * mid <= d {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// `floor(sqrt(D as f64))` and `isqrt_below_2_pow_47` (the f32 estimate corrected) equal the
    /// integer square root for every `D` the response can produce (`D < 2^47`), tested where it could fail: around every perfect square `k²`
    /// (`k² − 1`, `k²`, `k² + 1`, `k² + 2k` = `(k+1)² − 1`) for small `k`, for a sweep of `k`
    /// up to `2^23.5`, and at the top of the range.
    #[test]
    fn square_root_floors_are_the_exact_integer_square_root_below_2_pow_47() {
        let check = |d: u64| {
            let by_f64 = (d as f64).sqrt() as u64;
            assert_eq!(by_f64, isqrt_exact(d), "D = {d}");
            assert_eq!(
                isqrt_below_2_pow_47(d as f64) as u64,
                isqrt_exact(d),
                "D = {d} (f32 path)"
            );
        };
        let top = (1u64 << 47) - 1;
        let kmax = isqrt_exact(top);
        let mut ks: Vec<u64> = (0..5000).collect();
        let mut k = 5000u64;
        while k <= kmax {
            ks.push(k);
            k += k / 997 + 1;
        }
        ks.extend(kmax - 5000..=kmax);
        for k in ks {
            let sq = k * k;
            for d in [sq.wrapping_sub(1), sq, sq + 1, sq + 2 * k] {
                if d <= top {
                    check(d);
                }
            }
        }
        for d in [0, 1, 2, 3, top, top - 1, 1 << 46, (1 << 46) - 1] {
            check(d);
        }
    }

    /// The largest `D` the formula allows stays exact and below 2^47: `a = c = 0`, |b| maximal,
    /// and `a` maximal with `c = 0`.
    #[test]
    fn extreme_tensors_give_exact_responses() {
        let amax = (255 * 4 * 255 * 4 * 256) >> 6; // gx = 1020 everywhere: A = 1020² · 256
        assert_eq!(eigen_response(amax, 0, 0), 0.0);
        assert_eq!(eigen_response(amax, 0, amax), (2 * amax) as f32 / 512.0);
        assert_eq!(eigen_response(amax, amax, amax), 0.0);
        assert_eq!(eigen_response(amax, -amax, amax), 0.0);
        assert_eq!(eigen_response(0, 0, 0), 0.0);
        // Not positive semi-definite after the shifts: clamped to zero.
        assert_eq!(eigen_response(1, 5, 1), 0.0);
    }
}
