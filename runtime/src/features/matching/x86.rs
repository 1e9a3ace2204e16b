//! x86-64 kernels: AVX2 (`vpmaddwd`), AVX-VNNI and AVX-512 VNNI (`vpdpwssd`).
//!
//! Each computes `dist = |q|² + |t|² − 2 q·t` for a 2-query × 4-train tile with 16-bit lanes and
//! exact 32-bit accumulation, then compares the 8 distances against the queries' current
//! second-best distances in one vector compare; only improving lanes reach [`Best2::offer`].

use std::arch::x86_64::*;

use super::{Best2, CHUNK, DescriptorSet, Kernel};

/// Squared norm of a descriptor, exact.
fn norm(d: &[i8]) -> i32 {
    d.iter().map(|&v| i32::from(v) * i32::from(v)).sum()
}

/// Widens `src` (`n` descriptors of `dim`) into `dst` as i16, padded with zero descriptors to a
/// multiple of `pad`; `norms` gets each norm (padding: a huge norm so it never matches).
fn widen(src: &[i8], dim: usize, pad: usize, dst: &mut Vec<i16>, norms: &mut Vec<i32>) {
    let n = src.len() / dim;
    let padded = n.div_ceil(pad) * pad;
    dst.clear();
    dst.extend(src.iter().map(|&v| i16::from(v)));
    dst.resize(padded * dim, 0);
    norms.clear();
    norms.extend(src.chunks_exact(dim).map(norm));
    norms.resize(padded, 1 << 29);
}

/// Brute-force nearest two for every query with the given (supported, non-scalar) kernel.
#[allow(clippy::too_many_arguments)]
pub(super) fn knn2(
    kernel: Kernel,
    query: &DescriptorSet<'_>,
    train: &DescriptorSet<'_>,
    best: &mut [Best2],
    q16: &mut Vec<i16>,
    qnorm: &mut Vec<i32>,
    t16: &mut Vec<i16>,
    tnorm: &mut Vec<i32>,
) {
    let dim = query.dim();
    widen(query.as_slice(), dim, 2, q16, qnorm);
    let nt = train.len();
    let mut start = 0;
    while start < nt {
        let end = (start + CHUNK).min(nt);
        widen(
            &train.as_slice()[start * dim..end * dim],
            dim,
            4,
            t16,
            tnorm,
        );
        let real_t = end - start;
        // SAFETY: `kernel` was resolved only after runtime detection of its CPU features; the
        // buffers are padded to whole tiles (queries to 2, train to 4 descriptors of `dim`,
        // `dim` a multiple of 32), which is all the tile loops read.
        unsafe {
            match kernel {
                Kernel::Avx512Vnni => tile_loop_avx512(
                    q16,
                    qnorm,
                    query.len(),
                    t16,
                    tnorm,
                    real_t,
                    start as u32,
                    dim,
                    best,
                ),
                Kernel::AvxVnni => tile_loop_vnni(
                    q16,
                    qnorm,
                    query.len(),
                    t16,
                    tnorm,
                    real_t,
                    start as u32,
                    dim,
                    best,
                ),
                _ => tile_loop_avx2(
                    q16,
                    qnorm,
                    query.len(),
                    t16,
                    tnorm,
                    real_t,
                    start as u32,
                    dim,
                    best,
                ),
            }
        }
        start = end;
    }
}

/// Reduces 8 accumulators to one vector `[s0, s1, …, s7]`.
#[inline(always)]
unsafe fn reduce8(a: [__m256i; 8]) -> __m256i {
    // SAFETY: callers are `avx2` target-feature functions.
    unsafe {
        let s01 = _mm256_hadd_epi32(a[0], a[1]);
        let s23 = _mm256_hadd_epi32(a[2], a[3]);
        let s45 = _mm256_hadd_epi32(a[4], a[5]);
        let s67 = _mm256_hadd_epi32(a[6], a[7]);
        let t0 = _mm256_hadd_epi32(s01, s23);
        let t1 = _mm256_hadd_epi32(s45, s67);
        _mm256_add_epi32(
            _mm256_permute2x128_si256(t0, t1, 0x20),
            _mm256_permute2x128_si256(t0, t1, 0x31),
        )
    }
}

/// Compares the tile's 8 dot products against the two queries' second-best distances and
/// offers the improving ones, in train order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_tile(
    dots: __m256i,
    qn: __m256i,
    tnorm: &[i32],
    tj: usize,
    qi: usize,
    nq: usize,
    real_t: usize,
    base: u32,
    best: &mut [Best2],
    thr: &mut __m256i,
) {
    // SAFETY: callers are `avx2` target-feature functions; `tnorm` holds `tj + 4` values.
    unsafe {
        let tn = _mm256_broadcastsi128_si256(_mm_loadu_si128(tnorm.as_ptr().add(tj).cast()));
        let dist = _mm256_sub_epi32(_mm256_add_epi32(qn, tn), _mm256_slli_epi32(dots, 1));
        let mask = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(*thr, dist)));
        if mask == 0 {
            return;
        }
        let mut d = [0i32; 8];
        _mm256_storeu_si256(d.as_mut_ptr().cast(), dist);
        for (lane, &dl) in d.iter().enumerate() {
            if mask & (1 << lane) == 0 {
                continue;
            }
            let (q, j) = (qi + lane / 4, tj + lane % 4);
            if q < nq && j < real_t {
                best[q].offer(dl as u32, base + j as u32);
            }
        }
        *thr = thresholds(best, qi, nq);
    }
}

/// `[t0 ×4, t1 ×4]` with `t` each query's second-best distance (as i32, saturated).
#[inline(always)]
unsafe fn thresholds(best: &[Best2], qi: usize, nq: usize) -> __m256i {
    let t = |q: usize| {
        if q < nq {
            best[q].second_distance.min(i32::MAX as u32) as i32
        } else {
            i32::MIN
        }
    };
    // SAFETY: callers are `avx2` target-feature functions.
    unsafe {
        _mm256_setr_epi32(
            t(qi),
            t(qi),
            t(qi),
            t(qi),
            t(qi + 1),
            t(qi + 1),
            t(qi + 1),
            t(qi + 1),
        )
    }
}

macro_rules! tile_loop {
    ($name:ident, $features:literal, $step:expr, $body:ident) => {
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            q16: &[i16],
            qnorm: &[i32],
            nq: usize,
            t16: &[i16],
            tnorm: &[i32],
            real_t: usize,
            base: u32,
            dim: usize,
            best: &mut [Best2],
        ) {
            let nq_pad = nq.div_ceil(2) * 2;
            let nt_pad = real_t.div_ceil(4) * 4;
            debug_assert!(q16.len() >= nq_pad * dim && t16.len() >= nt_pad * dim);
            let mut qi = 0;
            while qi < nq_pad {
                let qa = q16.as_ptr().wrapping_add(qi * dim);
                let qb = qa.wrapping_add(dim);
                let n0 = qnorm[qi];
                let n1 = qnorm[qi + 1];
                let qn = _mm256_setr_epi32(n0, n0, n0, n0, n1, n1, n1, n1);
                // SAFETY: this function has the features `thresholds` needs.
                let mut thr = unsafe { thresholds(best, qi, nq) };
                let mut tj = 0;
                while tj < nt_pad {
                    let t0 = t16.as_ptr().wrapping_add(tj * dim);
                    // SAFETY: the tile reads 2 query and 4 train rows of `dim` i16 inside the
                    // padded buffers (checked above); features are enabled on this function.
                    unsafe {
                        let dots = $body(qa, qb, t0, dim);
                        finish_tile(dots, qn, tnorm, tj, qi, nq, real_t, base, best, &mut thr);
                    }
                    tj += 4;
                }
                qi += 2;
            }
        }
    };
}

/// 2×4 tile with `vpmaddwd` + `vpaddd`.
#[inline(always)]
unsafe fn tile_avx2(qa: *const i16, qb: *const i16, t: *const i16, dim: usize) -> __m256i {
    // SAFETY: see `tile_loop`.
    unsafe {
        let mut acc = [_mm256_setzero_si256(); 8];
        let mut k = 0;
        while k < dim {
            let a = _mm256_loadu_si256(qa.add(k).cast());
            let b = _mm256_loadu_si256(qb.add(k).cast());
            for r in 0..4 {
                let tv = _mm256_loadu_si256(t.add(r * dim + k).cast());
                acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(a, tv));
                acc[4 + r] = _mm256_add_epi32(acc[4 + r], _mm256_madd_epi16(b, tv));
            }
            k += 16;
        }
        reduce8(acc)
    }
}

/// 2×4 tile with AVX-VNNI `vpdpwssd` (fused multiply-add of i16 pairs into i32).
#[inline(always)]
unsafe fn tile_vnni(qa: *const i16, qb: *const i16, t: *const i16, dim: usize) -> __m256i {
    // SAFETY: see `tile_loop`.
    unsafe {
        let mut acc = [_mm256_setzero_si256(); 8];
        let mut k = 0;
        while k < dim {
            let a = _mm256_loadu_si256(qa.add(k).cast());
            let b = _mm256_loadu_si256(qb.add(k).cast());
            for r in 0..4 {
                let tv = _mm256_loadu_si256(t.add(r * dim + k).cast());
                acc[r] = _mm256_dpwssd_avx_epi32(acc[r], a, tv);
                acc[4 + r] = _mm256_dpwssd_avx_epi32(acc[4 + r], b, tv);
            }
            k += 16;
        }
        reduce8(acc)
    }
}

/// 2×4 tile with 512-bit AVX-512 VNNI `vpdpwssd`.
#[inline(always)]
unsafe fn tile_avx512(qa: *const i16, qb: *const i16, t: *const i16, dim: usize) -> __m256i {
    // SAFETY: see `tile_loop`; `dim` is a multiple of 32.
    unsafe {
        let mut acc = [_mm512_setzero_si512(); 8];
        let mut k = 0;
        while k < dim {
            let a = _mm512_loadu_si512(qa.add(k).cast());
            let b = _mm512_loadu_si512(qb.add(k).cast());
            for r in 0..4 {
                let tv = _mm512_loadu_si512(t.add(r * dim + k).cast());
                acc[r] = _mm512_dpwssd_epi32(acc[r], a, tv);
                acc[4 + r] = _mm512_dpwssd_epi32(acc[4 + r], b, tv);
            }
            k += 32;
        }
        let half = |v: __m512i| {
            _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
        };
        reduce8([
            half(acc[0]),
            half(acc[1]),
            half(acc[2]),
            half(acc[3]),
            half(acc[4]),
            half(acc[5]),
            half(acc[6]),
            half(acc[7]),
        ])
    }
}

tile_loop!(tile_loop_avx2, "avx2", 16, tile_avx2);
tile_loop!(tile_loop_vnni, "avx2,avxvnni", 16, tile_vnni);
tile_loop!(
    tile_loop_avx512,
    "avx2,avx512f,avx512bw,avx512vnni",
    32,
    tile_avx512
);

/// One squared L2 distance with AVX2. `a` and `b` must have the same length, a multiple of 32.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn squared_l2_avx2(a: &[i8], b: &[i8]) -> u32 {
    let n = a.len().min(b.len()) / 32 * 32;
    let mut acc = _mm256_setzero_si256();
    let mut k = 0;
    while k < n {
        // SAFETY: `k + 32 <= n <= len` for both slices.
        unsafe {
            let va = _mm256_loadu_si256(a.as_ptr().add(k).cast());
            let vb = _mm256_loadu_si256(b.as_ptr().add(k).cast());
            let lo = _mm256_sub_epi16(
                _mm256_cvtepi8_epi16(_mm256_castsi256_si128(va)),
                _mm256_cvtepi8_epi16(_mm256_castsi256_si128(vb)),
            );
            let hi = _mm256_sub_epi16(
                _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(va)),
                _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(vb)),
            );
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(lo, lo));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(hi, hi));
        }
        k += 32;
    }
    let s = _mm_add_epi32(
        _mm256_castsi256_si128(acc),
        _mm256_extracti128_si256::<1>(acc),
    );
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    let mut total = _mm_cvtsi128_si32(s) as u32;
    total += super::squared_l2(&a[n..], &b[n..]);
    total
}
