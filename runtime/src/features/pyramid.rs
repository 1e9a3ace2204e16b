//! Image pyramid: each level a bilinear down-sampling of the one above by a fixed scale factor.
//!
//! Level sizes are `round(w / s^l) x round(h / s^l)` relative to level 0, so a level's scale
//! (level-0 pixels per level pixel) is exactly `w / w_l` horizontally and `h / h_l` vertically,
//! and a level pixel centre `i + 0.5` maps to the level-0 coordinate `(i + 0.5) * w / w_l`. The
//! resampling is centre-aligned and separable (8-bit fixed-point weights), so a 90° rotated image
//! gives the rotated pyramid.

use crate::image::GrayImage;

/// One bilinear tap: source index and the weight (0..=256) of the *next* pixel. The GPU pyramid
/// kernel uploads the very same taps, so both sides do identical integer arithmetic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tap {
    pub(crate) index: u32,
    pub(crate) next: u32,
    pub(crate) weight: u32,
}

/// The sizes of the levels after level 0 that [`Pyramid::build_from_base`] builds for a level 0
/// of `w0 x h0`, in order: `round(w0 / s^l) x round(h0 / s^l)` for `l = 1..max_levels`, stopping
/// before the first level with a side below `min_side`.
pub(crate) fn level_sizes(
    w0: u32,
    h0: u32,
    scale_factor: f32,
    max_levels: usize,
    min_side: u32,
) -> impl Iterator<Item = (u32, u32)> {
    let mut s = 1.0f64;
    (1..max_levels.max(1))
        .map(move |_| {
            s *= f64::from(scale_factor);
            let w = (f64::from(w0) / s).round() as u32;
            let h = (f64::from(h0) / s).round() as u32;
            (w, h)
        })
        .take_while(move |&(w, h)| !(w < min_side || h < min_side || w == 0 || h == 0))
}

/// Level-0 pixels per pixel of a `w x h` level of a `w0 x h0` pyramid, horizontally and
/// vertically.
pub(crate) fn level_scale(w0: u32, h0: u32, w: u32, h: u32) -> [f32; 2] {
    [w0 as f32 / w as f32, h0 as f32 / h as f32]
}

/// A reusable image pyramid. Level 0 is the full-resolution gray image.
#[derive(Debug, Default)]
pub(crate) struct Pyramid {
    levels: Vec<GrayImage>,
    scales: Vec<[f32; 2]>,
    len: usize,
    tmp: Vec<u16>,
    xtaps: Vec<Tap>,
    ytaps: Vec<Tap>,
}

impl Pyramid {
    /// Number of levels built.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Level `l` (0 = full resolution).
    pub(crate) fn level(&self, l: usize) -> &GrayImage {
        &self.levels[l]
    }

    /// Level-0 pixels per level-`l` pixel, horizontally and vertically.
    pub(crate) fn scale(&self, l: usize) -> [f32; 2] {
        self.scales[l]
    }

    /// Mutable level 0, to write the gray image into without a copy.
    pub(crate) fn base_mut(&mut self) -> &mut GrayImage {
        if self.levels.is_empty() {
            self.levels.push(GrayImage::new(0, 0));
            self.scales.push([1.0, 1.0]);
        }
        &mut self.levels[0]
    }

    /// Builds levels 1.. from level 0 (already written through [`Pyramid::base_mut`]); stops
    /// after `max_levels` levels or when a side would drop below `min_side`.
    pub(crate) fn build_from_base(&mut self, scale_factor: f32, max_levels: usize, min_side: u32) {
        self.base_mut();
        let (w0, h0) = (self.levels[0].width(), self.levels[0].height());
        self.scales[0] = [1.0, 1.0];
        self.len = 1;
        for (i, (w, h)) in level_sizes(w0, h0, scale_factor, max_levels, min_side).enumerate() {
            let l = i + 1;
            if self.levels.len() <= l {
                self.levels.push(GrayImage::new(0, 0));
                self.scales.push([1.0, 1.0]);
            }
            let (src, dst) = self.levels.split_at_mut(l);
            resize_bilinear(
                &src[l - 1],
                &mut dst[0],
                w,
                h,
                &mut self.tmp,
                &mut self.xtaps,
                &mut self.ytaps,
            );
            self.scales[l] = level_scale(w0, h0, w, h);
            self.len = l + 1;
        }
    }

    /// Builds the whole pyramid from a gray image (copies it into level 0).
    pub(crate) fn build(
        &mut self,
        gray: &GrayImage,
        scale_factor: f32,
        max_levels: usize,
        min_side: u32,
    ) {
        let base = self.base_mut();
        base.resize(gray.width(), gray.height());
        base.as_mut_slice().copy_from_slice(gray.as_slice());
        self.build_from_base(scale_factor, max_levels, min_side);
    }
}

/// The taps resampling a row (or column) of `src_len` pixels to `dst_len`, centre-aligned.
pub(crate) fn fill_taps(taps: &mut Vec<Tap>, src_len: u32, dst_len: u32) {
    taps.clear();
    let ratio = f64::from(src_len) / f64::from(dst_len);
    let last = src_len.saturating_sub(1);
    for i in 0..dst_len {
        let s = ((f64::from(i) + 0.5) * ratio - 0.5).max(0.0);
        let i0 = (s.floor() as u32).min(last);
        let frac = (s - f64::from(i0)).clamp(0.0, 1.0);
        taps.push(Tap {
            index: i0,
            next: (i0 + 1).min(last),
            weight: (frac * 256.0).round() as u32,
        });
    }
}

crate::simd::multiversion! {
    /// Centre-aligned bilinear resize of `src` into `dst` (`w x h`), separable, 8-bit weights
    /// (AVX-512, AVX2 or baseline code, the same integers).
    fn resize_bilinear(
        src: &GrayImage,
        dst: &mut GrayImage,
        w: u32,
        h: u32,
        tmp: &mut Vec<u16>,
        xtaps: &mut Vec<Tap>,
        ytaps: &mut Vec<Tap>,
    ) => resize_bilinear_body
}

/// Centre-aligned bilinear resize of `src` into `dst` (`w x h`), separable, 8-bit weights.
#[inline(always)]
fn resize_bilinear_body(
    src: &GrayImage,
    dst: &mut GrayImage,
    w: u32,
    h: u32,
    tmp: &mut Vec<u16>,
    xtaps: &mut Vec<Tap>,
    ytaps: &mut Vec<Tap>,
) {
    dst.resize(w, h);
    let (sw, sh) = (src.width() as usize, src.height() as usize);
    if sw == 0 || sh == 0 || w == 0 || h == 0 {
        return;
    }
    fill_taps(xtaps, src.width(), w);
    fill_taps(ytaps, src.height(), h);
    // Vertical pass first (it vectorises), then the horizontal gather on the fewer output rows.
    // Both orders compute the same exact sum Σ wx·wy·p before the one rounding, so the result
    // is the same integers as horizontal-then-vertical (and as the GPU kernel's).
    let w = w as usize;
    tmp.clear();
    tmp.resize(sw * h as usize, 0);
    let s = src.as_slice();
    for (row_out, t) in tmp.chunks_exact_mut(sw).zip(ytaps.iter()) {
        let a = &s[t.index as usize * sw..][..sw];
        let b = &s[t.next as usize * sw..][..sw];
        let (wa, wb) = (256 - t.weight, t.weight);
        for ((o, &pa), &pb) in row_out.iter_mut().zip(a).zip(b) {
            *o = (u32::from(pa) * wa + u32::from(pb) * wb) as u16;
        }
    }
    let d = dst.as_mut_slice();
    for (row_in, row_out) in tmp.chunks_exact(sw).zip(d.chunks_exact_mut(w)) {
        for (o, t) in row_out.iter_mut().zip(xtaps.iter()) {
            let a = u32::from(row_in[t.index as usize]);
            let b = u32::from(row_in[t.next as usize]);
            *o = ((a * (256 - t.weight) + b * t.weight + 32768) >> 16) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant_and_sizes_follow_the_factor() {
        let g = GrayImage::from_vec(640, 480, vec![77; 640 * 480]).unwrap();
        let mut p = Pyramid::default();
        p.build(&g, 1.3, 8, 24);
        assert_eq!(p.len(), 8);
        assert_eq!(p.level(1).width(), 492);
        assert_eq!(p.level(1).height(), 369);
        for l in 0..p.len() {
            assert!(p.level(l).as_slice().iter().all(|&v| v == 77));
        }
        let [sx, sy] = p.scale(3);
        assert!((sx - 1.3f32.powi(3)).abs() < 0.01 && (sy - 1.3f32.powi(3)).abs() < 0.01);
    }

    /// The dispatched resize equals the baseline body, and both equal the direct definition
    /// `round(Σ wx·wy·p / 2^16)` (horizontal then vertical, as the GPU kernel does it).
    #[test]
    fn resize_is_the_exact_bilinear_sum_on_every_instruction_set() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let (sw, sh) = (157u32, 93u32);
        let data: Vec<u8> = (0..sw * sh)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 256) as u8
            })
            .collect();
        let src = GrayImage::from_vec(sw, sh, data).unwrap();
        for (w, h) in [(121, 72), (157, 93), (40, 31), (1, 1)] {
            let (mut tmp, mut xt, mut yt) = (Vec::new(), Vec::new(), Vec::new());
            let mut fast = GrayImage::new(0, 0);
            resize_bilinear(&src, &mut fast, w, h, &mut tmp, &mut xt, &mut yt);
            let mut body = GrayImage::new(0, 0);
            resize_bilinear_body(&src, &mut body, w, h, &mut tmp, &mut xt, &mut yt);
            assert_eq!(fast.as_slice(), body.as_slice(), "{w}x{h}");
            let p = |x: u32, y: u32| u32::from(src.as_slice()[(y * sw + x) as usize]);
            for y in 0..h {
                let ty = yt[y as usize];
                for x in 0..w {
                    let tx = xt[x as usize];
                    let row =
                        |yy: u32| p(tx.index, yy) * (256 - tx.weight) + p(tx.next, yy) * tx.weight;
                    let want =
                        (row(ty.index) * (256 - ty.weight) + row(ty.next) * ty.weight + 32768)
                            >> 16;
                    assert_eq!(
                        u32::from(fast.as_slice()[(y * w + x) as usize]),
                        want,
                        "{w}x{h} at {x},{y}"
                    );
                }
            }
        }
    }

    #[test]
    fn stops_at_min_side() {
        let g = GrayImage::new(40, 40);
        let mut p = Pyramid::default();
        p.build(&g, 1.3, 8, 24);
        assert_eq!(p.len(), 3); // 40 -> 31 -> 24, then 18 < 24
    }
}
