//! AVX2 and AVX-VNNI versions of the direct kernels in [`super::direct`], bit-identical to their
//! portable implementations.
//!
//! Each kernel body is written once, generic over `VNNI`: the u8 × i8 four-way dot product is
//! `vpdpbusd` (AVX-VNNI, exact i32 accumulation) or, on plain AVX2, two `vpmaddwd` on
//! zero-extended even/odd bytes and sign-extended weight pairs (|u8 · i8| < 2^15 and the pair
//! sum < 2^16, so nothing saturates). Both compute the same exact integers. Requantisation runs
//! in lanes along the [`RequantPath`] proven exact for the layer.

use std::arch::x86_64::*;

use super::direct::{
    DirectConv, DirectDepthwise, RequantPath, Requantizer, RowMatMul, Scratch, grow,
};

/// [`super::direct::copy_image`] with 32-byte vectors (the image rows are short, and the
/// auto-vectorised loop moves 8 bytes at a time).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn copy_image(
    src: &[u8],
    h: usize,
    w: usize,
    top: usize,
    left: usize,
    rs: usize,
    xor: u8,
    dst: &mut [u8],
) {
    let w32 = w / 32 * 32;
    for (y, row) in src.chunks_exact(w).take(h).enumerate() {
        let d = &mut dst[(top + y) * rs + left..(top + y) * rs + left + w];
        // SAFETY: AVX2 is enabled in every caller; each 32-byte access lies within `row` and
        // `d` (both `w` long) because x + 32 <= w32 <= w.
        unsafe {
            let k = _mm256_set1_epi8(xor as i8);
            let mut x = 0;
            while x < w32 {
                let v = _mm256_loadu_si256(row.as_ptr().add(x) as *const __m256i);
                _mm256_storeu_si256(
                    d.as_mut_ptr().add(x) as *mut __m256i,
                    _mm256_xor_si256(v, k),
                );
                x += 32;
            }
        }
        for (o, &v) in d[w32..].iter_mut().zip(&row[w32..]) {
            *o = v ^ xor;
        }
    }
}

/// The `K` parameter of [`rq8`] for a path.
fn kind(rq: &Requantizer) -> u8 {
    match rq.path {
        RequantPath::I32 { mul: 1, .. } if rq.y_zp == 0 => 4,
        RequantPath::I32 { mul: 1, .. } => 0,
        RequantPath::I32 { .. } => 1,
        RequantPath::F64 => 2,
        RequantPath::Exact => 3,
    }
}

/// Lane constants of one layer's requantisation.
#[derive(Clone, Copy)]
struct Rq8 {
    mul: __m256i,
    /// `2^(s−1) − 1`
    hm1: __m256i,
    /// Shift count for `vpsrad`/`vpsrld`.
    cnt: __m128i,
    one: __m256i,
    scale: __m256d,
    yzp: __m256i,
    rq: Requantizer,
}

#[inline(always)]
unsafe fn rq8_new(rq: &Requantizer) -> Rq8 {
    // SAFETY: the callers run with AVX2 enabled (checked at run time by the dispatcher).
    unsafe {
        let (mul, shift) = match rq.path {
            RequantPath::I32 { mul, shift } => (mul, shift),
            _ => (1, 1),
        };
        Rq8 {
            mul: _mm256_set1_epi32(mul),
            hm1: _mm256_set1_epi32(((1i64 << (shift - 1)) - 1) as i32),
            cnt: _mm_cvtsi32_si128(shift as i32),
            one: _mm256_set1_epi32(1),
            scale: _mm256_set1_pd(rq.scale),
            yzp: _mm256_set1_epi32(rq.y_zp),
            rq: *rq,
        }
    }
}

/// `requant(a) + y_zp` in eight i32 lanes (not yet saturated to 8 bits; the Exact path returns
/// the saturated values, which the 8-bit packing leaves unchanged).
/// `K`: 0 = i32 form without multiplication (`mul = 1`), 4 = the same with `y_zp = 0`,
/// 1 = i32 form, 2 = f64, 3 = exact (see [`kind`]); a compile-time parameter so the hot loops
/// carry no branch.
#[inline(always)]
unsafe fn rq8<const K: u8>(r: &Rq8, a: __m256i) -> __m256i {
    // SAFETY: AVX2 is enabled in every caller; the store/load go through a local array.
    unsafe {
        match K {
            0 | 1 | 4 => {
                let p = if K == 1 {
                    _mm256_mullo_epi32(a, r.mul)
                } else {
                    a
                };
                let bit = _mm256_and_si256(_mm256_srl_epi32(p, r.cnt), r.one);
                let t = _mm256_add_epi32(_mm256_add_epi32(p, r.hm1), bit);
                if K == 4 {
                    _mm256_sra_epi32(t, r.cnt)
                } else {
                    _mm256_add_epi32(_mm256_sra_epi32(t, r.cnt), r.yzp)
                }
            }
            2 => {
                let lo = _mm256_cvtepi32_pd(_mm256_castsi256_si128(a));
                let hi = _mm256_cvtepi32_pd(_mm256_extracti128_si256::<1>(a));
                const RN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
                let lo = _mm256_round_pd::<RN>(_mm256_mul_pd(lo, r.scale));
                let hi = _mm256_round_pd::<RN>(_mm256_mul_pd(hi, r.scale));
                let v = _mm256_set_m128i(_mm256_cvtpd_epi32(hi), _mm256_cvtpd_epi32(lo));
                _mm256_add_epi32(v, r.yzp)
            }
            _ => {
                let mut v = [0i32; 8];
                _mm256_storeu_si256(v.as_mut_ptr() as *mut __m256i, a);
                for x in &mut v {
                    let y = r.rq.requant.apply(*x).saturating_add(r.rq.y_zp);
                    *x = y.clamp(-128, 255);
                }
                _mm256_loadu_si256(v.as_ptr() as *const __m256i)
            }
        }
    }
}

/// Four vectors of eight i32 → 32 saturated bytes in lane order.
#[inline(always)]
unsafe fn pack32(out_i8: bool, r: [__m256i; 4]) -> __m256i {
    // SAFETY: AVX2 is enabled in every caller.
    unsafe {
        let p01 = _mm256_packs_epi32(r[0], r[1]);
        let p23 = _mm256_packs_epi32(r[2], r[3]);
        let b = if out_i8 {
            _mm256_packs_epi16(p01, p23)
        } else {
            _mm256_packus_epi16(p01, p23)
        };
        _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }
}

/// Stores `n ≤ 32` bytes of `v` at `dst`.
#[inline(always)]
unsafe fn store_bytes(v: __m256i, dst: *mut u8, n: usize) {
    // SAFETY: the caller guarantees `n` writable bytes at `dst`; AVX2 is enabled.
    unsafe {
        if n >= 32 {
            _mm256_storeu_si256(dst as *mut __m256i, v);
        } else {
            let mut t = [0u8; 32];
            _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, v);
            std::ptr::copy_nonoverlapping(t.as_ptr(), dst, n);
        }
    }
}

/// Requantises `acc` into `dst` (same length).
#[inline(always)]
unsafe fn requant_row<const K: u8>(r: &Rq8, acc: &[i32], dst: &mut [u8]) {
    let n = acc.len().min(dst.len());
    let n8 = n / 8 * 8;
    let mut i = 0;
    // SAFETY: AVX2 is enabled; i + 8 <= n8 <= both lengths for every load and 8-byte store.
    unsafe {
        while i < n8 {
            let v = rq8::<K>(r, _mm256_loadu_si256(acc.as_ptr().add(i) as *const __m256i));
            let p = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            let b = if r.rq.out_i8 {
                _mm_packs_epi16(p, p)
            } else {
                _mm_packus_epi16(p, p)
            };
            _mm_storel_epi64(dst.as_mut_ptr().add(i) as *mut __m128i, b);
            i += 8;
        }
    }
    for (d, &a) in dst[n8..n].iter_mut().zip(&acc[n8..n]) {
        *d = r.rq.byte(a);
    }
}

#[inline(always)]
unsafe fn hsum128(v: __m128i) -> i32 {
    // SAFETY: SSE2 is part of x86_64; AVX2 is enabled in every caller.
    unsafe {
        let t = _mm_add_epi32(v, _mm_shuffle_epi32::<0x4E>(v));
        let t = _mm_add_epi32(t, _mm_shuffle_epi32::<0xB1>(t));
        _mm_cvtsi128_si32(t)
    }
}

#[inline(always)]
unsafe fn conv_body<const VNNI: bool, const K: u8>(
    p: &DirectConv,
    src: &[u8],
    dst: &mut [u8],
    s: &mut Scratch,
) {
    let plane = p.ph * p.rs;
    let geo = [p.pad_tl[0], p.pad_tl[1], p.h, p.w];
    let padded = s.padded(p.cin, p.ph, p.rs, geo, p.pad);
    for ci in 0..p.cin {
        // SAFETY: AVX2 is enabled by the entry points.
        unsafe {
            copy_image(
                &src[ci * p.h * p.w..(ci + 1) * p.h * p.w],
                p.h,
                p.w,
                p.pad_tl[0],
                p.pad_tl[1],
                p.rs,
                p.xor,
                &mut padded[ci * plane..(ci + 1) * plane],
            )
        };
    }
    let taps = p.cin * p.kh;
    let ngrp = p.ow.div_ceil(32);
    let nblk4 = ngrp * 4;
    let per = if VNNI { 1 } else { 2 };
    let rows = p.cin * p.ph;
    grow(&mut s.q, rows * nblk4 * per * 32);
    let q = s.q.as_mut_ptr() as *mut __m256i;
    let pad = s.pad.as_ptr();
    // SAFETY: AVX2 (and AVX-VNNI when VNNI) are enabled by the entry points. Every 16-byte
    // load reads padded row `pr < cin·ph` from column 8·b ≤ 8·(nblk4 − 1), and
    // `rs ≥ 8·nblk4 + 8` (checked when the kernel was selected), so it stays inside the padded
    // buffer; `q` holds `cin·ph·nblk4·per` vectors and the taps read row `ci·ph + oy + ky` with
    // `oy + ky < ph`; output stores cover `ow` bytes of row `(o, oy)` of `dst`, which holds
    // `cout·oh·ow` bytes.
    unsafe {
        let iq = _mm256_setr_epi8(
            0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6, 4, 5, 6, 7, 5, 6, 7, 8, 6, 7, 8, 9, 7,
            8, 9, 10,
        );
        let z = -128i8;
        let ilo = _mm256_setr_epi8(
            0, z, 2, z, 1, z, 3, z, 2, z, 4, z, 3, z, 5, z, 4, z, 6, z, 5, z, 7, z, 6, z, 8, z, 7,
            z, 9, z,
        );
        let ihi = _mm256_setr_epi8(
            1, z, 3, z, 2, z, 4, z, 3, z, 5, z, 4, z, 6, z, 5, z, 7, z, 6, z, 8, z, 7, z, 9, z, 8,
            z, 10, z,
        );
        let r = rq8_new(&p.rq);
        // Operands of every padded row (each is used by up to `kh` output rows), built once.
        for pr in 0..rows {
            let row = pad.add(pr * p.rs);
            for b in 0..nblk4 {
                let v =
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(row.add(8 * b) as *const __m128i));
                let at = q.add((pr * nblk4 + b) * per);
                if VNNI {
                    _mm256_storeu_si256(at, _mm256_shuffle_epi8(v, iq));
                } else {
                    _mm256_storeu_si256(at, _mm256_shuffle_epi8(v, ilo));
                    _mm256_storeu_si256(at.add(1), _mm256_shuffle_epi8(v, ihi));
                }
            }
        }
        for oy in 0..p.oh {
            // Operand rows of this output row's taps (`taps ≤ 64`, checked at selection).
            let mut rows_at = [q; 64];
            for ci in 0..p.cin {
                for ky in 0..p.kh {
                    rows_at[ci * p.kh + ky] = q.add((ci * p.ph + oy + ky) * nblk4 * per);
                }
            }
            let rows_at = &rows_at[..taps];
            for o in 0..p.cout {
                let corr = _mm256_set1_epi32(p.corr[o]);
                let wq = &p.wq[o * taps..(o + 1) * taps];
                let wp = &p.wp[o * taps..(o + 1) * taps];
                for g in 0..ngrp {
                    let mut acc = [corr; 4];
                    for t in 0..taps {
                        let at = rows_at[t].add(4 * g * per);
                        if VNNI {
                            let w = _mm256_set1_epi32(wq[t]);
                            for (i, a) in acc.iter_mut().enumerate() {
                                *a = _mm256_dpbusd_avx_epi32(*a, _mm256_loadu_si256(at.add(i)), w);
                            }
                        } else {
                            let [w02, w13] = wp[t];
                            let (w02, w13) = (_mm256_set1_epi32(w02), _mm256_set1_epi32(w13));
                            for (i, a) in acc.iter_mut().enumerate() {
                                let lo = _mm256_madd_epi16(_mm256_loadu_si256(at.add(2 * i)), w02);
                                let hi =
                                    _mm256_madd_epi16(_mm256_loadu_si256(at.add(2 * i + 1)), w13);
                                *a = _mm256_add_epi32(*a, _mm256_add_epi32(lo, hi));
                            }
                        }
                    }
                    let v = pack32(
                        p.rq.out_i8,
                        [
                            rq8::<K>(&r, acc[0]),
                            rq8::<K>(&r, acc[1]),
                            rq8::<K>(&r, acc[2]),
                            rq8::<K>(&r, acc[3]),
                        ],
                    );
                    let x0 = 32 * g;
                    let out = dst.as_mut_ptr().add((o * p.oh + oy) * p.ow + x0);
                    store_bytes(v, out, p.ow - x0);
                }
            }
        }
    }
}

#[inline(always)]
unsafe fn depthwise_body<const VNNI: bool, const K: u8>(
    p: &DirectDepthwise,
    src: &[u8],
    dst: &mut [u8],
    s: &mut Scratch,
) {
    let (hw, ohw) = (p.h * p.w, p.oh * p.ow);
    grow(&mut s.acc, ohw);
    let geo = [p.pad_tl[0], p.pad_tl[1], p.h, p.w];
    s.padded(1, p.ph, p.rs, geo, p.pad);
    let [sy, sx] = p.stride;
    // SAFETY: AVX2 (and AVX-VNNI when VNNI) are enabled by the entry points. Window loads read
    // 16 bytes from column `ox·sx ≤ ow·sx` of padded row `oy·sy + ky < ph`, or 32 bytes from
    // column `ox·sx` with `ox + 16/sx < ow`, i.e. up to column `ow·sx + 16`; `rs ≥ ow·sx + 32`
    // (set at selection), so they stay inside the plane buffer; weight loads read row
    // `(c, ky)` of `w16`/`w16i` (16 values each); `acc` holds `oh·ow` values.
    unsafe {
        let r = rq8_new(&p.rq);
        for c in 0..p.c {
            copy_image(
                &src[c * hw..(c + 1) * hw],
                p.h,
                p.w,
                p.pad_tl[0],
                p.pad_tl[1],
                p.rs,
                p.xor,
                &mut s.pad[..p.plane_len()],
            );
            let pad = s.pad.as_ptr();
            let corr = p.corr[c];
            if VNNI {
                // Eight independent accumulators (pairs of windows from one 32-byte load) share
                // each weight row, which hides the `vpdpbusd` latency.
                let wrow = |ky: usize| {
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(
                        p.w16.as_ptr().add((c * p.kh + ky) * 16) as *const __m128i,
                    ))
                };
                for jobs in p.pairs.chunks(8) {
                    let mut at = [pad; 8];
                    for (a, j) in at.iter_mut().zip(jobs) {
                        *a = pad.add(j[0]);
                    }
                    let mut acc = [_mm256_setzero_si256(); 8];
                    for ky in 0..p.kh {
                        let w = wrow(ky);
                        for (a, &r) in acc.iter_mut().zip(&at) {
                            let v = _mm256_loadu_si256(r.add(ky * p.rs) as *const __m256i);
                            *a = _mm256_dpbusd_avx_epi32(*a, v, w);
                        }
                    }
                    for (a, j) in acc.iter().zip(jobs) {
                        let sa = hsum128(_mm256_castsi256_si128(*a));
                        let sb = hsum128(_mm256_extracti128_si256::<1>(*a));
                        s.acc[j[1]] = corr.wrapping_add(sa);
                        s.acc[j[2]] = corr.wrapping_add(sb);
                    }
                }
                for &[o, i] in &p.singles {
                    let mut a = _mm_setzero_si128();
                    for ky in 0..p.kh {
                        let w = _mm_loadu_si128(
                            p.w16.as_ptr().add((c * p.kh + ky) * 16) as *const __m128i
                        );
                        let x = _mm_loadu_si128(pad.add(o + ky * p.rs) as *const __m128i);
                        a = _mm_dpbusd_avx_epi32(a, x, w);
                    }
                    s.acc[i] = corr.wrapping_add(hsum128(a));
                }
                requant_row::<K>(&r, &s.acc[..ohw], &mut dst[c * ohw..(c + 1) * ohw]);
                continue;
            }
            for oy in 0..p.oh {
                let mut ox = 0;
                while ox < p.ow {
                    let (sa, sb);
                    if VNNI {
                        let mut acc = _mm256_setzero_si256();
                        for ky in 0..p.kh {
                            let row = pad.add((oy * sy + ky) * p.rs + ox * sx);
                            let v = _mm256_inserti128_si256::<1>(
                                _mm256_castsi128_si256(_mm_loadu_si128(row as *const __m128i)),
                                _mm_loadu_si128(row.add(sx) as *const __m128i),
                            );
                            let w = _mm256_broadcastsi128_si256(_mm_loadu_si128(
                                p.w16.as_ptr().add((c * p.kh + ky) * 16) as *const __m128i,
                            ));
                            acc = _mm256_dpbusd_avx_epi32(acc, v, w);
                        }
                        sa = hsum128(_mm256_castsi256_si128(acc));
                        sb = hsum128(_mm256_extracti128_si256::<1>(acc));
                    } else {
                        let mut aa = _mm256_setzero_si256();
                        let mut ab = _mm256_setzero_si256();
                        for ky in 0..p.kh {
                            let row = pad.add((oy * sy + ky) * p.rs + ox * sx);
                            let w = _mm256_loadu_si256(
                                p.w16i.as_ptr().add((c * p.kh + ky) * 16) as *const __m256i
                            );
                            let xa = _mm256_cvtepu8_epi16(_mm_loadu_si128(row as *const __m128i));
                            let xb = _mm256_cvtepu8_epi16(_mm_loadu_si128(
                                row.add(sx) as *const __m128i
                            ));
                            aa = _mm256_add_epi32(aa, _mm256_madd_epi16(xa, w));
                            ab = _mm256_add_epi32(ab, _mm256_madd_epi16(xb, w));
                        }
                        let h = _mm256_hadd_epi32(aa, ab);
                        let h = _mm_add_epi32(
                            _mm256_castsi256_si128(h),
                            _mm256_extracti128_si256::<1>(h),
                        );
                        let h = _mm_hadd_epi32(h, h);
                        sa = _mm_cvtsi128_si32(h);
                        sb = _mm_extract_epi32::<1>(h);
                    }
                    s.acc[oy * p.ow + ox] = corr.wrapping_add(sa);
                    if ox + 1 < p.ow {
                        s.acc[oy * p.ow + ox + 1] = corr.wrapping_add(sb);
                    }
                    ox += 2;
                }
            }
            requant_row::<K>(&r, &s.acc[..ohw], &mut dst[c * ohw..(c + 1) * ohw]);
        }
    }
}

#[inline(always)]
unsafe fn matmul_body<const VNNI: bool, const K: u8>(
    p: &RowMatMul,
    a: &[u8],
    dst: &mut [u8],
    s: &mut Scratch,
) {
    let ncb = p.ncolp / 8;
    // SAFETY: AVX2 (and AVX-VNNI when VNNI) are enabled by the entry points. `wq` holds
    // `k4/4 · ncb` and `wp` `k4/2 · ncb` vectors of 8 i32, `corr_pad` `ncolp` values; the
    // prepared row holds `k4` bytes / i16 values; output writes stay below `ncol`.
    unsafe {
        let r = rq8_new(&p.rq);
        if VNNI {
            grow(&mut s.row, p.k4);
            s.row[p.k..p.k4].fill(0);
            for (d, &x) in s.row.iter_mut().zip(&a[..p.k]) {
                *d = x ^ p.xor;
            }
        } else {
            grow(&mut s.row16, p.k4);
            s.row16[p.k..p.k4].fill(0);
            for (d, &x) in s.row16.iter_mut().zip(&a[..p.k]) {
                *d = i16::from(x ^ p.xor);
            }
        }
        for g in 0..ncb / 8 {
            let mut acc = [_mm256_setzero_si256(); 8];
            for (i, v) in acc.iter_mut().enumerate() {
                *v = _mm256_loadu_si256(p.corr_pad.as_ptr().add((8 * g + i) * 8) as *const __m256i);
            }
            if VNNI {
                let w = p.wq.as_ptr() as *const __m256i;
                for kg in 0..p.k4 / 4 {
                    let x = _mm256_set1_epi32(
                        (s.row.as_ptr().add(4 * kg) as *const i32).read_unaligned(),
                    );
                    let wr = w.add(kg * ncb + 8 * g);
                    for (i, v) in acc.iter_mut().enumerate() {
                        *v = _mm256_dpbusd_avx_epi32(*v, x, _mm256_loadu_si256(wr.add(i)));
                    }
                }
            } else {
                let w = p.wp.as_ptr() as *const __m256i;
                for kp in 0..p.k4 / 2 {
                    let x = _mm256_set1_epi32(
                        (s.row16.as_ptr().add(2 * kp) as *const i32).read_unaligned(),
                    );
                    let wr = w.add(kp * ncb + 8 * g);
                    for (i, v) in acc.iter_mut().enumerate() {
                        *v = _mm256_add_epi32(
                            *v,
                            _mm256_madd_epi16(x, _mm256_loadu_si256(wr.add(i))),
                        );
                    }
                }
            }
            for h in 0..2 {
                let x0 = 64 * g + 32 * h;
                if x0 >= p.ncol {
                    break;
                }
                let v = pack32(
                    p.rq.out_i8,
                    [
                        rq8::<K>(&r, acc[4 * h]),
                        rq8::<K>(&r, acc[4 * h + 1]),
                        rq8::<K>(&r, acc[4 * h + 2]),
                        rq8::<K>(&r, acc[4 * h + 3]),
                    ],
                );
                store_bytes(v, dst.as_mut_ptr().add(x0), p.ncol - x0);
            }
        }
    }
}

/// AVX2 [`DirectConv`] for one sample (same contract as [`DirectConv::run`]).
///
/// # Safety
/// The CPU must support AVX2; `src` holds `cin·h·w` and `dst` `cout·oh·ow` bytes, and the
/// kernel's `rs` satisfies the selection rules (`rs ≥ 8·⌈ow/32⌉·4 + 8`).
#[target_feature(enable = "avx2")]
pub unsafe fn conv_avx2(p: &DirectConv, src: &[u8], dst: &mut [u8], s: &mut Scratch) {
    // SAFETY: forwarded contract.
    unsafe {
        match kind(&p.rq) {
            4 => conv_body::<false, 4>(p, src, dst, s),
            0 => conv_body::<false, 0>(p, src, dst, s),
            1 => conv_body::<false, 1>(p, src, dst, s),
            2 => conv_body::<false, 2>(p, src, dst, s),
            _ => conv_body::<false, 3>(p, src, dst, s),
        }
    }
}

/// AVX-VNNI [`DirectConv`] for one sample.
///
/// # Safety
/// As [`conv_avx2`], and the CPU must support AVX-VNNI.
#[target_feature(enable = "avx2,avxvnni")]
pub unsafe fn conv_vnni(p: &DirectConv, src: &[u8], dst: &mut [u8], s: &mut Scratch) {
    // SAFETY: forwarded contract.
    unsafe {
        match kind(&p.rq) {
            4 => conv_body::<true, 4>(p, src, dst, s),
            0 => conv_body::<true, 0>(p, src, dst, s),
            1 => conv_body::<true, 1>(p, src, dst, s),
            2 => conv_body::<true, 2>(p, src, dst, s),
            _ => conv_body::<true, 3>(p, src, dst, s),
        }
    }
}

/// AVX2 [`DirectDepthwise`] for one sample.
///
/// # Safety
/// The CPU must support AVX2; `src` holds `c·h·w` and `dst` `c·oh·ow` bytes, and the kernel's
/// `rs` satisfies the selection rules (`rs ≥ ow·sx + 16`).
#[target_feature(enable = "avx2")]
pub unsafe fn depthwise_avx2(p: &DirectDepthwise, src: &[u8], dst: &mut [u8], s: &mut Scratch) {
    // SAFETY: forwarded contract.
    unsafe {
        match kind(&p.rq) {
            4 => depthwise_body::<false, 4>(p, src, dst, s),
            0 => depthwise_body::<false, 0>(p, src, dst, s),
            1 => depthwise_body::<false, 1>(p, src, dst, s),
            2 => depthwise_body::<false, 2>(p, src, dst, s),
            _ => depthwise_body::<false, 3>(p, src, dst, s),
        }
    }
}

/// AVX-VNNI [`DirectDepthwise`] for one sample.
///
/// # Safety
/// As [`depthwise_avx2`], and the CPU must support AVX-VNNI.
#[target_feature(enable = "avx2,avxvnni")]
pub unsafe fn depthwise_vnni(p: &DirectDepthwise, src: &[u8], dst: &mut [u8], s: &mut Scratch) {
    // SAFETY: forwarded contract.
    unsafe {
        match kind(&p.rq) {
            4 => depthwise_body::<true, 4>(p, src, dst, s),
            0 => depthwise_body::<true, 0>(p, src, dst, s),
            1 => depthwise_body::<true, 1>(p, src, dst, s),
            2 => depthwise_body::<true, 2>(p, src, dst, s),
            _ => depthwise_body::<true, 3>(p, src, dst, s),
        }
    }
}

/// AVX2 [`RowMatMul`] for one row.
///
/// # Safety
/// The CPU must support AVX2; `a` holds `k` and `dst` `ncol` bytes; the kernel was built by
/// [`RowMatMul::new`].
#[target_feature(enable = "avx2")]
pub unsafe fn matmul_avx2(p: &RowMatMul, a: &[u8], dst: &mut [u8], s: &mut Scratch) {
    // SAFETY: forwarded contract.
    unsafe {
        match kind(&p.rq) {
            4 => matmul_body::<false, 4>(p, a, dst, s),
            0 => matmul_body::<false, 0>(p, a, dst, s),
            1 => matmul_body::<false, 1>(p, a, dst, s),
            2 => matmul_body::<false, 2>(p, a, dst, s),
            _ => matmul_body::<false, 3>(p, a, dst, s),
        }
    }
}

/// AVX-VNNI [`RowMatMul`] for one row.
///
/// # Safety
/// As [`matmul_avx2`], and the CPU must support AVX-VNNI.
#[target_feature(enable = "avx2,avxvnni")]
pub unsafe fn matmul_vnni(p: &RowMatMul, a: &[u8], dst: &mut [u8], s: &mut Scratch) {
    // SAFETY: forwarded contract.
    unsafe {
        match kind(&p.rq) {
            4 => matmul_body::<true, 4>(p, a, dst, s),
            0 => matmul_body::<true, 0>(p, a, dst, s),
            1 => matmul_body::<true, 1>(p, a, dst, s),
            2 => matmul_body::<true, 2>(p, a, dst, s),
            _ => matmul_body::<true, 3>(p, a, dst, s),
        }
    }
}

/// Requantises a row of corrected accumulators with the layer's lane form (AVX2): the same
/// bytes as [`Requantizer::byte`] on each element (tests compare them).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn requant_row_avx2(rq: &Requantizer, acc: &[i32], dst: &mut [u8]) {
    // SAFETY: AVX2 is enabled; `requant_row` bounds every access by both slice lengths.
    unsafe {
        let r = rq8_new(rq);
        match kind(rq) {
            4 => requant_row::<4>(&r, acc, dst),
            0 => requant_row::<0>(&r, acc, dst),
            1 => requant_row::<1>(&r, acc, dst),
            2 => requant_row::<2>(&r, acc, dst),
            _ => requant_row::<3>(&r, acc, dst),
        }
    }
}
