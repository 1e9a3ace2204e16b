//! The shared kernel harness: every GEMM variant this CPU runs against the scalar oracle, with
//! property tests and named edge cases (integers: bit-exact). A variant the CPU lacks is skipped.

use proptest::prelude::*;
use sextant_runtime::descriptor::kernels::{self, Isa, Requant, l2_normalize_row};

fn reference(m: usize, n: usize, k: usize, a: &[i8], b: &[u8]) -> Vec<i32> {
    let mut c = vec![0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|kk| i32::from(a[i * k + kk]) * i32::from(b[kk * n + j]))
                .sum();
        }
    }
    c
}

fn check_all(m: usize, n: usize, k: usize, a: &[i8], b: &[u8]) {
    let want = reference(m, n, k, a, b);
    for isa in Isa::all_available() {
        let mut c = vec![i32::MIN; m * n];
        kernels::gemm_i8u8(isa, m, n, k, a, b, &mut c).expect("sizes fit");
        assert_eq!(
            c,
            want,
            "{} differs from the reference at {m}x{n}x{k}",
            isa.name()
        );
    }
}

#[test]
fn gemm_edge_cases_extreme_values() {
    // All products at the i16 extremes: 255 · -128 and 255 · 127, odd and even k, tails.
    for &(m, n, k) in &[
        (1, 1, 1),
        (4, 16, 2),
        (5, 17, 3),
        (8, 1024, 9),
        (1, 16, 256),
        (64, 33, 128),
        (3, 47, 255),
    ] {
        let a: Vec<i8> = (0..m * k)
            .map(|i| if i % 3 == 0 { -128 } else { 127 })
            .collect();
        let b = vec![255u8; k * n];
        check_all(m, n, k, &a, &b);
        let a: Vec<i8> = (0..m * k)
            .map(|i| (i as i32 * 37 % 256 - 128) as i8)
            .collect();
        let b: Vec<u8> = (0..k * n).map(|i| (i * 91 % 256) as u8).collect();
        check_all(m, n, k, &a, &b);
    }
}

#[test]
fn gemm_rejects_short_buffers() {
    let mut c = vec![0; 4];
    assert!(kernels::gemm_i8u8(Isa::Scalar, 2, 2, 2, &[0; 3], &[0; 4], &mut c).is_err());
    assert!(kernels::gemm_i8u8(Isa::detect(), 2, 2, 2, &[0; 4], &[0; 4], &mut c[..3]).is_err());
    assert!(kernels::gemm_i8u8(Isa::detect(), usize::MAX, 2, 2, &[0; 4], &[0; 4], &mut c).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn gemm_simd_equals_scalar(m in 1usize..12, n in 1usize..70, k in 1usize..40, seed in any::<u64>()) {
        let mut s = seed | 1;
        let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
        let a: Vec<i8> = (0..m * k).map(|_| next() as i8).collect();
        let b: Vec<u8> = (0..k * n).map(|_| next() as u8).collect();
        check_all(m, n, k, &a, &b);
    }

    #[test]
    fn requant_matches_exact_rounding(acc in -(1i32 << 24)..(1 << 24), real in 1e-6f64..8.0) {
        let r = Requant::from_real(real).expect("representable");
        prop_assert!((r.real() - real).abs() <= real * 1e-9);
        // Exact rational reference: acc · m0 / 2^shift, rounded half to even.
        let num = i128::from(acc) * i128::from(r.m0);
        let den = 1i128 << r.shift;
        let fl = num.div_euclid(den);
        let rem = num.rem_euclid(den);
        let want = if 2 * rem > den || (2 * rem == den && fl % 2 != 0) { fl + 1 } else { fl };
        prop_assert_eq!(i128::from(r.apply(acc)), want);
    }

    #[test]
    fn l2_norm_is_correctly_rounded(x in proptest::collection::vec(-128i32..128, 1..130)) {
        let mut out = vec![0i8; x.len()];
        l2_normalize_row(&x, 0, 127, 0, &mut out);
        let norm = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        for (&o, &v) in out.iter().zip(&x) {
            if norm == 0.0 {
                prop_assert_eq!(o, 0);
                continue;
            }
            let t = 127.0 * f64::from(v) / norm;
            // Correct rounding up to float error right at .5 ties.
            prop_assert!((f64::from(o) - t).abs() <= 0.5 + 1e-9, "{} vs {}", o, t);
        }
    }
}

#[test]
fn requant_rounds_half_to_even() {
    let r = Requant::from_real(0.5).expect("representable");
    assert_eq!(
        (r.apply(1), r.apply(-1), r.apply(3), r.apply(-3), r.apply(2)),
        (0, 0, 2, -2, 1)
    );
    assert!(Requant::from_real(0.0).is_err());
    assert!(Requant::from_real(f64::NAN).is_err());
    assert!(Requant::from_real(1e12).is_err());
}

#[test]
fn l2_norm_exact_ties_and_zero() {
    // [3, 4] has norm 5: 127·3/5 = 76.2, 127·4/5 = 101.6.
    let mut out = [0i8; 2];
    l2_normalize_row(&[3, 4], 0, 127, 0, &mut out);
    assert_eq!(out, [76, 102]);
    // gain 2, [1, 1, 1, 1]: 2·1/2 = 1 exactly; [1,0,0,0]·gain 1 with norm 1 → 1.
    let mut out = [0i8; 4];
    l2_normalize_row(&[1, 1, 1, 1], 0, 2, 0, &mut out);
    assert_eq!(out, [1; 4]);
    // An exact tie: gain 1, d = [1, 1, 1, 1] → 0.5 → rounds away from zero to 1 (and -1).
    l2_normalize_row(&[1, -1, 1, -1], 0, 1, 0, &mut out);
    assert_eq!(out, [1, -1, 1, -1]);
    l2_normalize_row(&[5, 5, 5, 5], 5, 127, 3, &mut out);
    assert_eq!(out, [3; 4]);
}
