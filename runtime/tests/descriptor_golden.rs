//! Golden outputs of the embedded descriptor model: the sha256 of the int8 descriptors of fixed
//! patch sets, recorded with the original im2col + GEMM kernels before any fast path existed.
//! Every execution path (each ISA, fast direct kernels on or off, any batch split) must still
//! produce exactly these bytes: the arithmetic of `docs/int8-arithmetic.md` is frozen, only its
//! speed may change.
//!
//! `SEXTANT_PRINT_GOLDEN=1 cargo test -p sextant-runtime --test descriptor_golden -- --nocapture`
//! prints the digests instead of only comparing them.

use sextant_runtime::descriptor::{
    DESCRIPTOR_DIM, DescriptorModel, DirectKernels, Isa, PATCH_PIXELS, PATCH_SIZE, sha256_hex,
};

mod common {
    pub mod photos;
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The bench's textured patches (sums of random gratings plus noise).
fn gratings(n: usize) -> Vec<u8> {
    let mut r = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::with_capacity(n * PATCH_PIXELS);
    for _ in 0..n {
        let waves: Vec<(f64, f64, f64)> = (0..4)
            .map(|_| (r.unit() * 0.8 - 0.4, r.unit() * 0.8 - 0.4, r.unit() * 6.3))
            .collect();
        for y in 0..PATCH_SIZE {
            for x in 0..PATCH_SIZE {
                let v: f64 = waves
                    .iter()
                    .map(|(a, b, p)| (a * x as f64 + b * y as f64 + p).sin())
                    .sum();
                out.push((128.0 + 28.0 * v + 10.0 * (r.unit() - 0.5)).clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// Uniform noise, plus saturating extremes: constant 0 / 255, 0/255 checkerboards and stripes,
/// single bright pixels at the borders and corners (padding paths), sparse salt noise.
fn extremes() -> Vec<u8> {
    let mut r = XorShift(0x1234_5678_9ABC_DEF1);
    let mut out = Vec::new();
    for _ in 0..64 {
        out.extend((0..PATCH_PIXELS).map(|_| r.next() as u8));
    }
    let pattern = |f: &dyn Fn(usize, usize) -> u8, out: &mut Vec<u8>| {
        for y in 0..PATCH_SIZE {
            for x in 0..PATCH_SIZE {
                out.push(f(x, y));
            }
        }
    };
    pattern(&|_, _| 0, &mut out);
    pattern(&|_, _| 255, &mut out);
    pattern(&|x, y| if (x + y) % 2 == 0 { 255 } else { 0 }, &mut out);
    pattern(&|x, _| if x % 2 == 0 { 255 } else { 0 }, &mut out);
    pattern(&|_, y| if y % 3 == 0 { 255 } else { 0 }, &mut out);
    pattern(&|x, y| if x < 16 && y >= 16 { 255 } else { 0 }, &mut out);
    for &(px, py) in &[(0, 0), (31, 0), (0, 31), (31, 31), (0, 17), (17, 31)] {
        pattern(&|x, y| if (x, y) == (px, py) { 255 } else { 0 }, &mut out);
        pattern(&|x, y| if (x, y) == (px, py) { 0 } else { 255 }, &mut out);
    }
    for _ in 0..16 {
        let mut p = vec![0u8; PATCH_PIXELS];
        for _ in 0..20 {
            p[(r.next() % PATCH_PIXELS as u64) as usize] = 255;
        }
        out.extend(p);
    }
    out
}

fn describe(model: &mut DescriptorModel, patches: &[u8]) -> Vec<i8> {
    let n = patches.len() / PATCH_PIXELS;
    let mut out = vec![0i8; n * DESCRIPTOR_DIM];
    model.describe(patches, n, &mut out).expect("describe");
    out
}

fn digest(d: &[i8]) -> String {
    sha256_hex(&d.iter().map(|&v| v as u8).collect::<Vec<u8>>())
}

/// (name, patches, sha256 of the descriptors recorded with the original kernels).
fn sets() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    vec![
        (
            "gratings",
            gratings(1000),
            "5aff384cef122cadaa446719baa87d6721a88596048c9d32b8ca8007a20a5799",
        ),
        (
            "extremes",
            extremes(),
            "fec099f116cd447ee12284d12da7c155fbe6dff4085c456068318c8226c1dc29",
        ),
        (
            "photos",
            common::photos::grid_patches(&["brick", "coffee"], [5, 3], [31, 29], 600),
            "ecea4a5c658fbe3491cc8931787adb04d74aad81def2cfdc7c99a13864d97f01",
        ),
    ]
}

#[test]
fn descriptors_match_the_recorded_golden_digests_on_every_path() {
    let print = std::env::var_os("SEXTANT_PRINT_GOLDEN").is_some();
    let mut model = DescriptorModel::embedded_default().expect("embedded model loads");
    for (name, patches, want) in sets() {
        assert!(
            patches.len() >= 90 * PATCH_PIXELS,
            "{name}: too few patches"
        );
        for isa in Isa::all_available() {
            for direct in [
                DirectKernels::Auto,
                DirectKernels::Always,
                DirectKernels::Never,
            ] {
                model.set_isa(isa);
                model.set_direct_kernels(direct);
                let got = digest(&describe(&mut model, &patches));
                if print {
                    println!("{name} {} {direct:?}: {got}", isa.name());
                    continue;
                }
                assert_eq!(
                    got,
                    want,
                    "{name} on {} (direct kernels {direct:?})",
                    isa.name()
                );
            }
        }
        model.set_direct_kernels(DirectKernels::Auto);
    }
}
