//! The int8 CPU kernels: one portable scalar implementation (the oracle) and SIMD variants
//! chosen at run time by CPU feature detection.
//!
//! Two kernel families: the generic im2col + GEMM (any convolution shape; the GEMM core has
//! SIMD variants) and the direct kernels of [`direct`] (small-`Cin` stride-1 convolution,
//! depthwise convolution, row-wise matrix product, with fused requantisation), portable with
//! AVX2 / AVX-VNNI variants in `x86`. All are exact integer arithmetic (i32 accumulation of
//! u8 × i8 products, no saturating intermediate, requantisation equal to [`Requant::apply`]),
//! so every variant returns bit-identical results; `runtime/tests/descriptor_kernels.rs`,
//! `descriptor_direct.rs` and `descriptor_golden.rs` check it. The arithmetic is specified in
//! `docs/int8-arithmetic.md`.

pub mod direct;
pub mod scalar;

#[cfg(target_arch = "x86_64")]
pub mod avx2;

#[cfg(target_arch = "x86_64")]
pub mod x86;

#[cfg(target_arch = "aarch64")]
pub mod neon;

use super::error::{DescriptorError, Result};

/// An instruction-set variant of the GEMM kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Isa {
    /// Portable scalar Rust: the reference.
    Scalar,
    /// x86_64 AVX2 (`vpmaddwd` on zero/sign-extended 16-bit lanes).
    Avx2,
    /// x86_64 AVX2 plus AVX-VNNI (256-bit `vpdpbusd`, u8 × i8 four-way dot products) in the
    /// direct kernels; the generic GEMM runs its AVX2 variant.
    AvxVnni,
    /// aarch64 NEON (`smlal` on widened 16-bit lanes).
    Neon,
}

impl Isa {
    /// The fastest variant this CPU supports.
    pub fn detect() -> Isa {
        [Isa::AvxVnni, Isa::Avx2, Isa::Neon]
            .into_iter()
            .find(|isa| isa.available())
            .unwrap_or(Isa::Scalar)
    }

    /// Every variant this CPU can run (always includes [`Isa::Scalar`]).
    pub fn all_available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Neon]
            .into_iter()
            .filter(|isa| isa.available())
            .collect()
    }

    /// Whether this CPU can run the variant.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("avxvnni")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Short lowercase name (`scalar`, `avx2`, `avxvnni`, `neon`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Neon => "neon",
        }
    }
}

/// `c[i][j] = Σ_k a[i][k] · b[k][j]` for `a: i8 [m][k]`, `b: u8 [k][n]`, `c: i32 [m][n]`, all
/// row-major, exact (no intermediate saturation). Runs the requested variant, or the scalar one
/// when the CPU lacks it.
///
/// Errors when a slice is shorter than its dimensions require.
pub fn gemm_i8u8(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[i8],
    b: &[u8],
    c: &mut [i32],
) -> Result<()> {
    let need = |what: &str, have: usize, want: Option<usize>| -> Result<()> {
        match want {
            Some(w) if have >= w => Ok(()),
            _ => Err(DescriptorError::InvalidInput(format!(
                "gemm: `{what}` holds {have} elements, {m}x{n}x{k} needs more"
            ))),
        }
    };
    need("a", a.len(), m.checked_mul(k))?;
    need("b", b.len(), k.checked_mul(n))?;
    need("c", c.len(), m.checked_mul(n))?;
    let (a, b, c) = (&a[..m * k], &b[..k * n], &mut c[..m * n]);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni if isa.available() => {
            // SAFETY: AVX2 presence was checked at run time just above; slice lengths match the
            // dimensions exactly.
            unsafe { avx2::gemm(m, n, k, a, b, c) }
        }
        #[cfg(target_arch = "aarch64")]
        Isa::Neon if isa.available() => {
            // SAFETY: NEON presence was checked at run time; slice lengths match exactly.
            unsafe { neon::gemm(m, n, k, a, b, c) }
        }
        _ => scalar::gemm(m, n, k, a, b, c),
    }
    Ok(())
}

/// A fixed-point requantisation multiplier: `real ≈ m0 · 2^-shift` with `m0 ∈ [2^30, 2^31)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Requant {
    /// Q31 mantissa, in `[2^30, 2^31)`.
    pub m0: i32,
    /// Total right shift applied to the 64-bit product, in `[1, 62]`.
    pub shift: u32,
}

impl Requant {
    /// Decomposes a positive, finite real multiplier (computed in f64 from the f32 scales:
    /// `x_scale · w_scale / y_scale`). Errors when it is not representable (non-positive,
    /// non-finite, ≥ 2^30 or < 2^-31).
    pub fn from_real(real: f64) -> Result<Requant> {
        if !(real.is_finite() && real > 0.0) {
            return Err(DescriptorError::InvalidGraph(format!(
                "requantisation multiplier {real} is not positive and finite"
            )));
        }
        // real = f · 2^e with f in [0.5, 1).
        let mut e = real.log2().floor() as i32 + 1;
        let mut f = real / 2f64.powi(e);
        // Guard against log2 rounding at exact powers of two.
        while f >= 1.0 {
            f /= 2.0;
            e += 1;
        }
        while f < 0.5 {
            f *= 2.0;
            e -= 1;
        }
        let mut m0 = (f * 2f64.powi(31)).round_ties_even() as i64;
        if m0 == 1 << 31 {
            m0 /= 2;
            e += 1;
        }
        let shift = 31 - e;
        if !(1..=62).contains(&shift) {
            return Err(DescriptorError::InvalidGraph(format!(
                "requantisation multiplier {real} is outside [2^-31, 2^30)"
            )));
        }
        Ok(Requant {
            m0: m0 as i32,
            shift: shift as u32,
        })
    }

    /// `round_half_to_even(acc · m0 / 2^shift)`, exact in 64-bit integers (ties to even, as
    /// tract and onnxruntime round). The result is clamped to i32 (never reached by valid
    /// layers) so the caller's saturation stays correct.
    #[inline]
    pub fn apply(self, acc: i32) -> i32 {
        let prod = i64::from(acc) * i64::from(self.m0);
        let half = 1i64 << (self.shift - 1);
        let floor = prod >> self.shift;
        let rem = prod - (floor << self.shift);
        let q = if rem > half || (rem == half && floor & 1 == 1) {
            floor + 1
        } else {
            floor
        };
        q.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
    }

    /// The real multiplier this fixed-point pair represents.
    pub fn real(self) -> f64 {
        f64::from(self.m0) / 2f64.powi(self.shift as i32)
    }
}

/// Saturates to the u8 range.
#[inline]
pub fn sat_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Saturates to the i8 range.
#[inline]
pub fn sat_i8(v: i32) -> i8 {
    v.clamp(-128, 127) as i8
}

/// Integer L2 normalisation of one row: `out[i] = sat(round_half_away(gain · d[i] / ‖d‖) + out_zp)`
/// with `d[i] = x[i] − x_zp`, computed exactly with integer comparisons (no float rounding):
/// `q = |round(gain·|d|/‖d‖)|` is the largest `q ≥ 0` with `(2q − 1)² · Σd² ≤ 4 · gain² · d²`.
/// A zero row yields `out_zp` everywhere. `gain` must be in `1..=65535`.
pub fn l2_normalize_row(x: &[i32], x_zp: i32, gain: u32, out_zp: i32, out: &mut [i8]) {
    let ss: i64 = x.iter().map(|&v| i64::from(v - x_zp).pow(2)).sum();
    // The estimate only seeds the search; the exact comparisons decide. The largest q with
    // `fits(q)` is unique because `(2q − 1)²` grows with q ≥ 1.
    let inv = gain as f64 / (ss as f64).sqrt();
    let estimate =
        // Non-negative, so truncation is floor (no libm call); NaN and inf saturate.
        |ad: u64| -> i64 { ((ad as f64 * inv + 0.5) as i64).clamp(0, i64::from(gain)) };
    let finish = |o: &mut i8, d: i64, q: i64| {
        let signed = if d < 0 { -q } else { q };
        *o = sat_i8((signed + i64::from(out_zp)).clamp(-1 << 20, 1 << 20) as i32);
    };
    if ss < 1 << 31 && gain <= 32767 {
        // Every d² ≤ ss < 2^31, so 4·gain²·d² < 2^63 and (2q − 1)²·ss < 2^63: u64 is exact.
        let (g, ssu) = (u64::from(gain), ss as u64);
        for (o, &v) in out.iter_mut().zip(x) {
            let d = i64::from(v - x_zp);
            if ss == 0 || d == 0 {
                *o = sat_i8(out_zp);
                continue;
            }
            let ad = d.unsigned_abs();
            let rhs = 4 * g * g * ad * ad;
            let fits = |q: i64| -> bool { q == 0 || (2 * q as u64 - 1).pow(2) * ssu <= rhs };
            let mut q = estimate(ad);
            while q < i64::from(gain) && fits(q + 1) {
                q += 1;
            }
            while q > 0 && !fits(q) {
                q -= 1;
            }
            finish(o, d, q);
        }
        return;
    }
    let g = i128::from(gain);
    for (o, &v) in out.iter_mut().zip(x) {
        let d = i64::from(v - x_zp);
        if ss == 0 || d == 0 {
            *o = sat_i8(out_zp);
            continue;
        }
        let rhs = 4 * g * g * i128::from(d) * i128::from(d);
        let fits =
            |q: i64| -> bool { q == 0 || i128::from(2 * q - 1).pow(2) * i128::from(ss) <= rhs };
        let mut q = estimate(d.unsigned_abs());
        while q < i64::from(gain) && fits(q + 1) {
            q += 1;
        }
        while q > 0 && !fits(q) {
            q -= 1;
        }
        finish(o, d, q);
    }
}
