//! After warm-up, robust pose estimation (LO-RANSAC + refinement, with and without gravity)
//! allocates nothing: its buffers live in the caller's `AbsolutePoseWorkspace`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sextant_runtime::Camera;
use sextant_runtime::geometry::synth::{SynthConfig, generate};
use sextant_runtime::geometry::{
    AbsolutePoseOptions, AbsolutePoseWorkspace, Gravity, estimate_absolute_pose,
};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    let before = ALLOCATIONS.load(Ordering::SeqCst);
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
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;
    assert_eq!(solved, 2 * problems.len(), "every problem must solve");
    assert_eq!(allocations, 0, "{allocations} allocations in warm solves");
}
