//! AVX2 patch sampling: eight bilinear samples per instruction, the same integer arithmetic as
//! the scalar sampler in `patch.rs` (so the patches are bit-identical), with the two taps of a
//! row fetched by one 32-bit gather.

use std::arch::x86_64::*;

use super::PATCH;
use super::patch::{FRAC_BITS, PatchGeometry};

/// Whether [`sample_inside`] may sample `g` from a `w x h` image: every tap inside the image,
/// and every 4-byte gather too. The grid is affine and the fixed-point floor monotone, so the
/// extremes are at the four corners; corners at most at row `h - 3` keep the bottom gather
/// (`index + w`, four bytes) inside the buffer.
pub(super) fn fits(g: &PatchGeometry, w: u32, h: u32) -> bool {
    if !g.inside || w < 4 || h < 4 {
        return false;
    }
    let last = (PATCH - 1) as i64;
    [(0, 0), (last, 0), (0, last), (last, last)]
        .iter()
        .all(|&(i, j)| {
            let y = i64::from(g.y00) + i * i64::from(g.uy) + j * i64::from(g.vy);
            y >= 0 && (y >> FRAC_BITS) < i64::from(h) - 2
        })
}

/// Samples the patch of `g` from the `w`-wide image `p` into `out` (`PATCH * PATCH` bytes).
///
/// # Safety
/// The CPU supports AVX2, and [`fits`] holds for `g` and the image.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn sample_inside(p: &[u8], w: usize, g: &PatchGeometry, out: &mut [u8]) {
    const ONE: i32 = 1 << FRAC_BITS;
    let out = &mut out[..PATCH * PATCH];
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let step8x = _mm256_set1_epi32(8 * g.ux);
    let step8y = _mm256_set1_epi32(8 * g.uy);
    let mask_frac = _mm256_set1_epi32(ONE - 1);
    let one = _mm256_set1_epi32(ONE);
    let byte = _mm256_set1_epi32(0xff);
    let width = _mm256_set1_epi32(w as i32);
    let round = _mm256_set1_epi32(1 << (2 * FRAC_BITS - 1));
    // Undoes the in-lane interleaving of the two packs.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let base = p.as_ptr() as *const i32;
    for (j, row) in out.chunks_exact_mut(PATCH).enumerate() {
        let x0 = g.x00 + j as i32 * g.vx;
        let y0 = g.y00 + j as i32 * g.vy;
        let mut xs = _mm256_add_epi32(
            _mm256_set1_epi32(x0),
            _mm256_mullo_epi32(lanes, _mm256_set1_epi32(g.ux)),
        );
        let mut ys = _mm256_add_epi32(
            _mm256_set1_epi32(y0),
            _mm256_mullo_epi32(lanes, _mm256_set1_epi32(g.uy)),
        );
        let mut v = [_mm256_setzero_si256(); PATCH / 8];
        for vk in v.iter_mut() {
            let xi = _mm256_srai_epi32(xs, FRAC_BITS);
            let yi = _mm256_srai_epi32(ys, FRAC_BITS);
            let fx = _mm256_and_si256(xs, mask_frac);
            let fy = _mm256_and_si256(ys, mask_frac);
            let idx = _mm256_add_epi32(_mm256_mullo_epi32(yi, width), xi);
            // SAFETY: `fits` keeps idx .. idx + w + 3 inside `p`.
            let top = unsafe { _mm256_i32gather_epi32::<1>(base, idx) };
            let bot = unsafe { _mm256_i32gather_epi32::<1>(base, _mm256_add_epi32(idx, width)) };
            let gx = _mm256_sub_epi32(one, fx);
            let t = _mm256_add_epi32(
                _mm256_mullo_epi32(_mm256_and_si256(top, byte), gx),
                _mm256_mullo_epi32(_mm256_and_si256(_mm256_srli_epi32(top, 8), byte), fx),
            );
            let b = _mm256_add_epi32(
                _mm256_mullo_epi32(_mm256_and_si256(bot, byte), gx),
                _mm256_mullo_epi32(_mm256_and_si256(_mm256_srli_epi32(bot, 8), byte), fx),
            );
            let s = _mm256_add_epi32(
                _mm256_add_epi32(
                    _mm256_mullo_epi32(t, _mm256_sub_epi32(one, fy)),
                    _mm256_mullo_epi32(b, fy),
                ),
                round,
            );
            *vk = _mm256_srli_epi32(s, 2 * FRAC_BITS);
            xs = _mm256_add_epi32(xs, step8x);
            ys = _mm256_add_epi32(ys, step8y);
        }
        // 32 values ≤ 255 in four vectors of u32 → 32 bytes in order.
        let a = _mm256_packus_epi32(v[0], v[1]);
        let b = _mm256_packus_epi32(v[2], v[3]);
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), order);
        // SAFETY: `row` holds exactly PATCH = 32 bytes.
        unsafe { _mm256_storeu_si256(row.as_mut_ptr() as *mut __m256i, bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::homography::SplitMix64;
    use crate::features::patch::{patch_geometry, sample_geometry_scalar};
    use crate::image::GrayImage;

    #[test]
    fn avx2_patches_equal_the_scalar_sampler() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("SKIPPED: this CPU has no AVX2");
            return;
        }
        let mut rng = SplitMix64::new(7);
        let mut unit = || (rng.next_u64() >> 11) as f32 / (1u64 << 53) as f32;
        let (w, h) = (203u32, 157u32);
        let pixels: Vec<u8> = (0..w * h)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let img = GrayImage::from_vec(w, h, pixels).unwrap();
        let (mut fast, mut slow) = (vec![0u8; PATCH * PATCH], vec![0u8; PATCH * PATCH]);
        let mut sampled = 0;
        for _ in 0..4000 {
            let cx = unit() * w as f32;
            let cy = unit() * h as f32;
            let step = 0.5 + 2.0 * unit();
            let angle = (unit() - 0.5) * 2.0 * std::f32::consts::PI;
            let g = patch_geometry(w, h, cx, cy, step, angle);
            if !fits(&g, w, h) {
                continue;
            }
            sampled += 1;
            // SAFETY: AVX2 checked above, `fits` just now.
            unsafe { sample_inside(img.as_slice(), w as usize, &g, &mut fast) };
            sample_geometry_scalar(&img, &g, &mut slow);
            assert_eq!(fast, slow, "centre ({cx}, {cy}) step {step} angle {angle}");
        }
        assert!(sampled > 300, "only {sampled} patches fit");
        // Patches that touch the last rows must not be taken by the vector path.
        let g = patch_geometry(w, h, 100.0, h as f32 - 17.0, 1.0, 0.0);
        assert!(g.inside && !fits(&g, w, h));
    }
}
