//! Descriptor model throughput: the runtime's int8 kernels (detected SIMD and scalar) vs
//! tract-onnx, same model, same 1000 patches, single thread, in one run.
//!
//! `cargo bench -p sextant-runtime --features tract --bench descriptor`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sextant_runtime::descriptor::{
    DESCRIPTOR_DIM, DescriptorModel, EMBEDDED_MODEL, Isa, PATCH_PIXELS,
};

const N: usize = 1000;

/// Deterministic textured patches (sums of random gratings plus noise).
fn patches() -> Vec<u8> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(N * PATCH_PIXELS);
    for _ in 0..N {
        let waves: Vec<(f64, f64, f64)> = (0..4)
            .map(|_| (next() * 0.8 - 0.4, next() * 0.8 - 0.4, next() * 6.3))
            .collect();
        for y in 0..32 {
            for x in 0..32 {
                let v: f64 = waves
                    .iter()
                    .map(|(a, b, p)| (a * x as f64 + b * y as f64 + p).sin())
                    .sum();
                out.push((128.0 + 28.0 * v + 10.0 * (next() - 0.5)).clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let p = patches();
    let mut out = vec![0i8; N * DESCRIPTOR_DIM];
    let mut g = c.benchmark_group("descriptor_1000_patches");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);
    let mut model = DescriptorModel::embedded_default().expect("embedded model");
    for isa in Isa::all_available() {
        model.set_isa(isa);
        g.bench_function(format!("kernels_{}", isa.name()), |b| {
            b.iter(|| model.describe(&p, N, &mut out).expect("describe"))
        });
    }
    #[cfg(feature = "tract")]
    {
        let t = sextant_runtime::descriptor::reference::TractModel::from_onnx_bytes(EMBEDDED_MODEL)
            .expect("tract");
        g.bench_function("tract", |b| {
            b.iter(|| t.describe(&p, N, &mut out).expect("tract"))
        });
        {
            let batch = 32usize;
            g.bench_function(format!("tract_batch{batch}"), |b| {
                b.iter(|| {
                    for (pc, oc) in p
                        .chunks(batch * PATCH_PIXELS)
                        .zip(out.chunks_mut(batch * DESCRIPTOR_DIM))
                    {
                        t.describe(pc, pc.len() / PATCH_PIXELS, oc).expect("tract");
                    }
                })
            });
        }
    }
    let _ = EMBEDDED_MODEL;
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
