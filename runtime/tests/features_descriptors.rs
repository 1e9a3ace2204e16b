//! Descriptors of the shipped model on a real photo: a rotated copy of the image yields matching
//! descriptors at the rotated keypoints, and the same image described twice gives the same bytes.

use sextant_runtime::GrayImage;
use sextant_runtime::descriptor::{DESCRIPTOR_DIM, DescriptorModel};
use sextant_runtime::features::{
    DescriptorSet, FeatureConfig, FeaturePipeline, Keypoint, Match, MatchConfig, Matcher,
};

mod common {
    pub mod photos;
}
use common::photos::photo;

/// Rotates by 90° clockwise: pixel (x, y) of a `w x h` image goes to (h - 1 - y, x).
fn rotate90(g: &GrayImage) -> GrayImage {
    let (w, h) = (g.width(), g.height());
    let mut out = GrayImage::new(h, w);
    for y in 0..h {
        for x in 0..w {
            out.as_mut_slice()[(x * h + (h - 1 - y)) as usize] = g.get(x, y);
        }
    }
    out
}

fn describe(pipeline: &mut FeaturePipeline, g: &GrayImage) -> (Vec<Keypoint>, Vec<i8>) {
    let f = pipeline.extract_gray(g).unwrap();
    (f.keypoints.to_vec(), f.descriptors.to_vec())
}

#[test]
fn a_rotated_photo_matches_at_the_rotated_keypoints() {
    let model = DescriptorModel::embedded_default().unwrap();
    let config = FeatureConfig {
        max_keypoints: 500,
        ..Default::default()
    };
    let mut pipeline = FeaturePipeline::new(config, model).unwrap();
    let image = photo("coffee");
    let rotated = rotate90(&image);
    let (ka, da) = describe(&mut pipeline, &image);
    let (kb, db) = describe(&mut pipeline, &rotated);
    assert!(
        ka.len() > 300 && kb.len() > 300,
        "{} and {} keypoints",
        ka.len(),
        kb.len()
    );

    let set_a = DescriptorSet::new(&da, DESCRIPTOR_DIM).unwrap();
    let set_b = DescriptorSet::new(&db, DESCRIPTOR_DIM).unwrap();
    let mut matcher = Matcher::new(MatchConfig::default()).unwrap();
    let mut matches: Vec<Match> = Vec::new();
    matcher.match_sets(&set_a, &set_b, &mut matches).unwrap();

    // Continuous coordinates: (x, y) -> (h - y, x).
    let h = image.height() as f32;
    let correct = matches
        .iter()
        .filter(|m| {
            let (a, b) = (ka[m.query as usize], kb[m.train as usize]);
            (b.x - (h - a.y)).hypot(b.y - a.x) < 3.0
        })
        .count();
    let precision = correct as f64 / matches.len() as f64;
    eprintln!(
        "rotated photo: {correct} of {} matches correct",
        matches.len()
    );
    assert!(
        correct > 150,
        "only {correct} correct matches of {}",
        matches.len()
    );
    assert!(
        precision > 0.85,
        "match precision {precision:.3} ({correct} of {})",
        matches.len()
    );

    // Deterministic: the same image described again gives identical bytes.
    let (_, again) = describe(&mut pipeline, &image);
    assert_eq!(again, da);
}
