//! After warm-up, robust pose estimation (LO-RANSAC + refinement, with and without gravity)
//! allocates nothing: its buffers live in the caller's `AbsolutePoseWorkspace`.

use sextant_runtime::Camera;
use sextant_runtime::geometry::synth::{SynthConfig, generate};
use sextant_runtime::geometry::{
    AbsolutePoseOptions, AbsolutePoseWorkspace, Gravity, estimate_absolute_pose,
};

use common::counting_alloc::allocations;

mod common {
    pub mod counting_alloc;
}

#[test]
fn warm_pose_estimation_allocates_nothing() {
    let config = SynthConfig {
        n: 1000,
        outlier_ratio: 0.8,
        ..Default::default()
    };
    let problems: Vec<_> = (0..6).map(|seed| generate(&config, seed)).collect();
    let k = problems[0].intrinsics;
    let camera = Camera::pinhole(k.width, k.height, k.fx, k.fy, k.cx, k.cy).unwrap();
    let options = AbsolutePoseOptions::default();
    let mut ws = AbsolutePoseWorkspace::new();
    let first = &problems[0];
    estimate_absolute_pose(
        &camera,
        &first.points2d,
        &first.points3d,
        None,
        &options,
        &mut ws,
    )
    .unwrap();

    // This is the only test in this binary, so no other thread allocates meanwhile.
    let before = allocations();
    let mut solved = 0;
    for p in &problems {
        let gravity = Gravity {
            up_in_camera: p.gravity,
            up_in_world: p.world_up,
        };
        for g in [None, Some(&gravity)] {
            let result =
                estimate_absolute_pose(&camera, &p.points2d, &p.points3d, g, &options, &mut ws);
            solved += usize::from(result.is_ok());
        }
    }
    let allocations = allocations() - before;
    assert_eq!(solved, 2 * problems.len(), "every problem must solve");
    assert_eq!(allocations, 0, "{allocations} allocations in warm solves");
}
