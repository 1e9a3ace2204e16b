//! Run-time choice of instruction set for auto-vectorised kernels.
//!
//! [`multiversion!`] compiles one `#[inline(always)]` body three times — for AVX-512, for AVX2
//! and for the baseline target — and defines a function that picks the widest the CPU has, once
//! per call (`is_x86_feature_detected!` caches its answer). The body's arithmetic must be exact
//! (integers, or floating point without fused or reassociated operations, which Rust never
//! introduces on its own), so every variant returns the same bits; each kernel's tests compare
//! the dispatched function with the baseline body. Other architectures get the body as is.

/// Defines `$vis fn $name($args) $(-> $ret)?` calling `$body($args)` compiled for the best
/// instruction set available at run time (see the module documentation).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma,bmi2,avx512f,avx512bw,avx512dq,avx512vl")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,bmi2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::simd::has_avx512() {
                    // SAFETY: the CPU supports every feature `avx512` enables, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if $crate::simd::has_avx2() {
                    // SAFETY: the CPU supports every feature `avx2` enables, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Whether the CPU has the AVX-512 subset [`multiversion!`] compiles for.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && has_avx2()
}

/// Whether the CPU has the AVX2 subset [`multiversion!`] compiles for.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("bmi2")
}
