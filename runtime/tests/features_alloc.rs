//! After warm-up, extracting features from a frame and matching them allocates nothing.

use sextant_runtime::features::homography::{SplitMix64, gaussian_blur};
use sextant_runtime::features::{
    DescriptorSet, FeatureConfig, FeatureExtractor, MatchConfig, Matcher,
};
use sextant_runtime::{Frame, GrayImage, PixelFormat};

use common::counting_alloc::allocations;

mod common {
    pub mod counting_alloc;
}

fn textured(w: u32, h: u32, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut g = GrayImage::new(w, h);
    for v in g.as_mut_slice() {
        *v = (rng.next_u64() % 256) as u8;
    }
    gaussian_blur(&g, 2.0).into_vec()
}

#[test]
fn a_warm_frame_allocates_nothing() {
    let (w, h) = (640u32, 480u32);
    let frames: Vec<Vec<u8>> = (0..3).map(|s| textured(w, h, s)).collect();
    let mut ex = FeatureExtractor::new(FeatureConfig::default()).unwrap();
    let mut matcher = Matcher::new(MatchConfig::default()).unwrap();
    let dim = 64;
    let mut rng = SplitMix64::new(9);
    let train: Vec<i8> = (0..5000 * dim).map(|_| rng.next_u64() as i8).collect();
    let query: Vec<i8> = (0..1000 * dim).map(|_| rng.next_u64() as i8).collect();
    let mut matches = Vec::with_capacity(1000);

    let mut run = |pixels: &[u8]| {
        let frame = Frame::new(PixelFormat::Gray8, w, h, w as usize, pixels).unwrap();
        let n = ex.extract(&frame).unwrap().keypoints.len();
        let (q, t) = (
            DescriptorSet::new(&query, dim).unwrap(),
            DescriptorSet::new(&train, dim).unwrap(),
        );
        matcher.match_sets(&q, &t, &mut matches).unwrap();
        n
    };
    // Warm-up on the two first frames (buffers grow to their largest size).
    run(&frames[0]);
    run(&frames[1]);
    let before = allocations();
    let n = run(&frames[2]);
    let after = allocations();
    assert!(n > 500, "{n} keypoints");
    assert_eq!(after - before, 0, "allocations in a warm frame");
}
