//! NEON GEMM: 8 output columns per step, `smlal` on 16-bit widened lanes (exact; equal to
//! [`super::scalar::gemm`] bit for bit).

use std::arch::aarch64::*;

/// NEON GEMM with the same contract as [`super::scalar::gemm`].
///
/// # Safety
/// The CPU must support NEON, and the slices must be exactly `m·k`, `k·n`, `m·n` long.
#[target_feature(enable = "neon")]
pub unsafe fn gemm(m: usize, n: usize, k: usize, a: &[i8], b: &[u8], c: &mut [i32]) {
    let n8 = n / 8 * 8;
    let bp = b.as_ptr();
    for i in 0..m {
        let mut j = 0;
        while j < n8 {
            let mut lo = vdupq_n_s32(0);
            let mut hi = vdupq_n_s32(0);
            for kk in 0..k {
                // SAFETY: kk < k and j + 8 <= n, so the 8-byte load is inside `b`.
                let x = vreinterpretq_s16_u16(vmovl_u8(unsafe { vld1_u8(bp.add(kk * n + j)) }));
                let w = i16::from(a[i * k + kk]);
                lo = vmlal_n_s16(lo, vget_low_s16(x), w);
                hi = vmlal_high_n_s16(hi, x, w);
            }
            let out = &mut c[i * n + j..i * n + j + 8];
            // SAFETY: `out` is exactly 8 i32 long.
            unsafe {
                vst1q_s32(out.as_mut_ptr(), lo);
                vst1q_s32(out.as_mut_ptr().add(4), hi);
            }
            j += 8;
        }
        for jj in n8..n {
            let mut acc = 0i32;
            for kk in 0..k {
                acc += i32::from(a[i * k + kk]) * i32::from(b[kk * n + jj]);
            }
            c[i * n + jj] = acc;
        }
    }
}
