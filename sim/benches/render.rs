//! Render speed: one 640×480 frame of each sample scene, pinhole and with distortion
//! (`cargo bench -p sextant-sim --bench render`). Target: under 50 ms single-threaded.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sextant_runtime::{Camera, Distortion};
use sextant_sim::{Capturer, Photometric, Rendered, Renderer, Scene, TrajectorySpec};

fn bench(c: &mut Criterion) {
    let pinhole = Camera::pinhole(640, 480, 500.0, 500.0, 320.0, 240.0).unwrap();
    let d = Distortion {
        k1: -0.12,
        k2: 0.03,
        k3: 0.0,
        p1: 0.0,
        p2: 0.0,
    };
    let brown = Camera::new(640, 480, 420.0, 420.0, 320.0, 240.0, d).unwrap();
    let spec: TrajectorySpec = "walk:frames=8".parse().unwrap();
    for name in ["room", "facade", "plaza"] {
        let scene = Scene::sample(name).unwrap();
        let poses = spec.generate(&scene, &pinhole, 1).unwrap().poses;
        for (label, cam) in [("pinhole", &pinhole), ("brown", &brown)] {
            let mut r = Renderer::new(cam);
            let mut out = Rendered::new(640, 480);
            let mut i = 0;
            c.bench_function(&format!("render_640x480/{name}/{label}"), |b| {
                b.iter(|| {
                    r.render_into(&scene, &poses[i % poses.len()], &mut out);
                    i += 1;
                    black_box(out.depth[0])
                })
            });
        }
    }
    let scene = Scene::sample("room").unwrap();
    let poses = spec.generate(&scene, &pinhole, 1).unwrap().poses;
    let mut r = Renderer::new(&pinhole);
    let mut out = Rendered::new(640, 480);
    for aniso in [1, 4] {
        r.set_max_anisotropy(aniso);
        let mut i = 0;
        c.bench_function(
            &format!("render_640x480/room/pinhole/max_aniso_{aniso}"),
            |b| {
                b.iter(|| {
                    r.render_into(&scene, &poses[i % poses.len()], &mut out);
                    i += 1;
                    black_box(out.depth[0])
                })
            },
        );
    }
    let pose = spec.generate(&scene, &pinhole, 1).unwrap().poses[2];
    let mut cap = Capturer::new(&pinhole);
    for p in ["nominal", "night"] {
        let ph = Photometric::preset(p).unwrap();
        c.bench_function(&format!("capture_640x480/room/{p}"), |b| {
            b.iter(|| black_box(cap.capture(&scene, &pose, &ph, 1, 0).rgb.as_slice()[0]))
        });
    }
    c.bench_function("ray_table_640x480/brown", |b| {
        b.iter(|| black_box(Renderer::new(&brown)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
