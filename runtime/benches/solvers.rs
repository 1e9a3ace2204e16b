//! Criterion benches of the pose solvers: minimal solvers (P3P, upright P2P), refinement, and
//! end-to-end robust estimation on synthetic problems.
//!
//! `cargo bench -p sextant-runtime --bench solvers`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use nalgebra::Vector3;
use sextant_runtime::Camera;
use sextant_runtime::geometry::estimator::PoseData;
use sextant_runtime::geometry::p3p::p3p;
use sextant_runtime::geometry::refine::{RefineOptions, refine_pose};
use sextant_runtime::geometry::rng::Pcg32;
use sextant_runtime::geometry::synth::{SynthConfig, generate, random_minimal_instance};
use sextant_runtime::geometry::up2p::{rotation_to_y, up2p};
use sextant_runtime::geometry::{
    AbsolutePoseOptions, AbsolutePoseWorkspace, CameraPose, Gravity, Solutions,
    estimate_absolute_pose,
};

const K: usize = 256;

struct Instance {
    x: [Vector3<f64>; 3],
    xw: [Vector3<f64>; 3],
    g_cam: Vector3<f64>,
}

fn instances() -> Vec<Instance> {
    let mut rng = Pcg32::new(1);
    (0..K)
        .map(|_| {
            let (gt, x, xw) = random_minimal_instance::<3>(&mut rng, 1.0);
            Instance {
                x,
                xw,
                g_cam: gt.r * Vector3::z(),
            }
        })
        .collect()
}

fn minimal(c: &mut Criterion) {
    let inst = instances();
    let mut sols = Solutions::new();
    let mut i = 0usize;
    c.bench_function("p3p_lambda_twist", |b| {
        b.iter(|| {
            i = (i + 1) % K;
            let s = &inst[i];
            p3p(black_box(&s.x), black_box(&s.xw), &mut sols)
        })
    });
    let rotations: Vec<_> = inst.iter().map(|s| rotation_to_y(&s.g_cam)).collect();
    let rw = rotation_to_y(&Vector3::z());
    c.bench_function("up2p", |b| {
        b.iter(|| {
            i = (i + 1) % K;
            let s = &inst[i];
            up2p(
                black_box(&[s.x[0], s.x[1]]),
                black_box(&[s.xw[0], s.xw[1]]),
                &rotations[i],
                &rw,
                &mut sols,
            )
        })
    });
}

fn refinement(c: &mut Criterion) {
    let p = generate(
        &SynthConfig {
            n: 200,
            ..Default::default()
        },
        3,
    );
    let k = p.intrinsics;
    let mut data = PoseData {
        fx: k.fx,
        fy: k.fy,
        ..Default::default()
    };
    for (u, x) in p.points2d.iter().zip(&p.points3d) {
        data.push(
            nalgebra::Vector2::new((u.x - k.cx) / k.fx, (u.y - k.cy) / k.fy),
            *x,
        );
    }
    let idx: Vec<usize> = (0..data.len()).collect();
    let start = CameraPose {
        r: p.gt.r,
        t: p.gt.t + Vector3::new(0.05, -0.02, 0.03),
    };
    c.bench_function("refine_lm_cauchy_n200", |b| {
        b.iter(|| refine_pose(black_box(&start), &data, &idx, &RefineOptions::default()))
    });
}

fn robust(c: &mut Criterion) {
    let mut g = c.benchmark_group("estimate_absolute_pose");
    g.sample_size(20);
    for (n, outl) in [(200usize, 0.5), (1000, 0.5), (1000, 0.9)] {
        let probs: Vec<_> = (0..8)
            .map(|s| {
                generate(
                    &SynthConfig {
                        n,
                        outlier_ratio: outl,
                        ..Default::default()
                    },
                    100 + s,
                )
            })
            .collect();
        let k = probs[0].intrinsics;
        let Ok(cam) = Camera::pinhole(k.width, k.height, k.fx, k.fy, k.cx, k.cy) else {
            return;
        };
        let mut ws = AbsolutePoseWorkspace::with_capacity(n);
        for gravity in [false, true] {
            let name = format!(
                "n{n}_o{:.0}_{}",
                outl * 100.0,
                if gravity { "up2p" } else { "p3p" }
            );
            let mut j = 0usize;
            g.bench_function(name, |b| {
                b.iter(|| {
                    j = (j + 1) % probs.len();
                    let p = &probs[j];
                    let opts = AbsolutePoseOptions {
                        threshold_px: p.threshold_px,
                        ..Default::default()
                    };
                    let gr = Gravity {
                        up_in_camera: p.gravity,
                        up_in_world: p.world_up,
                    };
                    estimate_absolute_pose(
                        &cam,
                        &p.points2d,
                        &p.points3d,
                        gravity.then_some(&gr),
                        &opts,
                        &mut ws,
                    )
                    .is_ok()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, minimal, refinement, robust);
criterion_main!(benches);
