//! AVX2 GEMM: 16 output columns per step, four rows of `a` sharing each load of `b`.
//!
//! Each pair of `b` rows is zero-extended to 16-bit lanes and interleaved, each pair of `a`
//! weights is broadcast as two 16-bit lanes, and `vpmaddwd` forms exact 32-bit sums of two
//! products (|u8 · i8| < 2^15, so nothing saturates). Results equal [`super::scalar::gemm`] bit
//! for bit.

use std::arch::x86_64::*;

/// Broadcast pair `(w0, w1)` as the 32-bit lane `w1:w0` of 16-bit halves.
#[inline(always)]
fn pair(w0: i8, w1: i8) -> i32 {
    ((i32::from(w1 as i16 as u16)) << 16) | i32::from(w0 as i16 as u16)
}

/// AVX2 GEMM with the same contract as [`super::scalar::gemm`].
///
/// # Safety
/// The CPU must support AVX2, and the slices must be exactly `m·k`, `k·n`, `m·n` long.
#[target_feature(enable = "avx2")]
pub unsafe fn gemm(m: usize, n: usize, k: usize, a: &[i8], b: &[u8], c: &mut [i32]) {
    let n16 = n / 16 * 16;
    let bp = b.as_ptr();
    let mut i = 0;
    while i < m {
        let rows = (m - i).min(4);
        let mut j = 0;
        while j < n16 {
            let mut lo = [_mm256_setzero_si256(); 4];
            let mut hi = [_mm256_setzero_si256(); 4];
            let mut kk = 0;
            while kk < k {
                // SAFETY: kk < k and j + 16 <= n, so both 16-byte loads are inside `b`.
                let b0 = _mm256_cvtepu8_epi16(unsafe {
                    _mm_loadu_si128(bp.add(kk * n + j) as *const __m128i)
                });
                let b1 = if kk + 1 < k {
                    // SAFETY: as above for row kk + 1 < k.
                    _mm256_cvtepu8_epi16(unsafe {
                        _mm_loadu_si128(bp.add((kk + 1) * n + j) as *const __m128i)
                    })
                } else {
                    _mm256_setzero_si256()
                };
                let il = _mm256_unpacklo_epi16(b0, b1);
                let ih = _mm256_unpackhi_epi16(b0, b1);
                for r in 0..rows {
                    let row = (i + r) * k;
                    let w1 = if kk + 1 < k { a[row + kk + 1] } else { 0 };
                    let w = _mm256_set1_epi32(pair(a[row + kk], w1));
                    lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(il, w));
                    hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(ih, w));
                }
                kk += 2;
            }
            for r in 0..rows {
                // unpacklo covers columns 0–3 and 8–11, unpackhi 4–7 and 12–15.
                let first = _mm256_permute2x128_si256(lo[r], hi[r], 0x20);
                let second = _mm256_permute2x128_si256(lo[r], hi[r], 0x31);
                let out = &mut c[(i + r) * n + j..(i + r) * n + j + 16];
                // SAFETY: `out` is exactly 16 i32 long.
                unsafe {
                    _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, first);
                    _mm256_storeu_si256(out.as_mut_ptr().add(8) as *mut __m256i, second);
                }
            }
            j += 16;
        }
        if n16 < n {
            for r in i..i + rows {
                for jj in n16..n {
                    let mut acc = 0i32;
                    for kk in 0..k {
                        acc += i32::from(a[r * k + kk]) * i32::from(b[kk * n + jj]);
                    }
                    c[r * n + jj] = acc;
                }
            }
        }
        i += rows;
    }
}
