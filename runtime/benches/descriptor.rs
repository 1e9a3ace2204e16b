//! Descriptor model throughput: the runtime's int8 kernels (direct kernels on every ISA, and the
//! generic im2col + GEMM path) vs tract-onnx, same model, same 1000 patches, single thread, in
//! one run.
//!
//! `cargo bench -p sextant-runtime --features tract --bench descriptor`
//!
//! The patches are also written to `$TMPDIR/sextant-descriptor-bench-patches.u8`, which
//! `scripts/bench_onnxruntime.py` reads, so onnxruntime runs on the same 1000 patches.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sextant_runtime::descriptor::{
    DESCRIPTOR_DIM, DescriptorModel, DirectKernels, EMBEDDED_MODEL, Isa, PATCH_PIXELS,
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

/// This process's user + system CPU time in seconds (`/proc/self/stat`, clock ticks of 10 ms),
/// or `None` where that file does not exist.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU time per 1000 patches over a fixed number of runs: on a shared, loaded machine this
/// excludes the time other processes hold the core (wall-clock medians do not). Compare with
/// `cpu` of `scripts/bench_onnxruntime.py`.
fn cpu_time(model: &mut DescriptorModel, p: &[u8], out: &mut [i8], what: &str) {
    let runs = 150;
    let (Some(c0), t0) = (cpu_seconds(), std::time::Instant::now()) else {
        return;
    };
    for _ in 0..runs {
        model.describe(p, N, out).expect("describe");
    }
    let (Some(c1), wall) = (cpu_seconds(), t0.elapsed().as_secs_f64()) else {
        return;
    };
    println!(
        "cpu-time {what}: {:.2} ms CPU, {:.2} ms wall per {N} patches (mean of {runs} runs)",
        (c1 - c0) * 1000.0 / runs as f64,
        wall * 1000.0 / runs as f64
    );
}

fn bench(c: &mut Criterion) {
    let p = patches();
    let file = std::env::temp_dir().join("sextant-descriptor-bench-patches.u8");
    if let Err(e) = std::fs::write(&file, &p) {
        eprintln!("could not write {}: {e}", file.display());
    }
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
    for isa in Isa::all_available()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
    {
        model.set_isa(isa);
        cpu_time(&mut model, &p, &mut out, &format!("kernels_{}", isa.name()));
    }
    // The generic im2col + GEMM path on the detected ISA (what ran before the direct kernels).
    model.set_isa(Isa::detect());
    model.set_direct_kernels(DirectKernels::Never);
    g.bench_function(format!("generic_{}", Isa::detect().name()), |b| {
        b.iter(|| model.describe(&p, N, &mut out).expect("describe"))
    });
    model.set_direct_kernels(DirectKernels::Auto);
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
