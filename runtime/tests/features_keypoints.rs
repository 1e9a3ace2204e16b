//! Keypoints and patches: pixel-format invariance, rotation consistency, and bad inputs.

use sextant_runtime::features::homography::{SplitMix64, gaussian_blur, warp};
use sextant_runtime::features::{
    FeatureConfig, FeatureExtractor, Keypoint, PATCH_AREA, extract_patches,
};
use sextant_runtime::{Frame, GrayImage, PixelFormat, rgb_to_luma};

/// A deterministic "scene": random polygons (quadrilaterals) and disks of random grey levels
/// over a ramp, lightly blurred. Returns RGB so colour formats can be tested too.
fn scene_rgb(w: u32, h: u32, seed: u64) -> Vec<[u8; 3]> {
    let mut rng = SplitMix64::new(seed);
    let mut img: Vec<[u8; 3]> = (0..w * h)
        .map(|i| {
            let v = (60 + (i % w) * 60 / w + (i / w) * 40 / h) as u8;
            [v, v, v]
        })
        .collect();
    for _ in 0..160 {
        let cx = rng.uniform() * f64::from(w);
        let cy = rng.uniform() * f64::from(h);
        let r = 6.0 + rng.uniform() * 30.0;
        let col = [
            (rng.uniform() * 255.0) as u8,
            (rng.uniform() * 255.0) as u8,
            (rng.uniform() * 255.0) as u8,
        ];
        let disk = rng.uniform() < 0.3;
        let a0 = rng.uniform() * std::f64::consts::TAU;
        let aspect = 0.4 + rng.uniform();
        for y in (cy - r).max(0.0) as u32..((cy + r) as u32).min(h) {
            for x in (cx - r).max(0.0) as u32..((cx + r) as u32).min(w) {
                let (dx, dy) = (f64::from(x) + 0.5 - cx, f64::from(y) + 0.5 - cy);
                let (s, c) = a0.sin_cos();
                let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
                let hit = if disk {
                    u * u + v * v < r * r
                } else {
                    u.abs() < r && v.abs() < r * aspect && u + v < r
                };
                if hit {
                    img[(y * w + x) as usize] = col;
                }
            }
        }
    }
    img
}

fn to_gray(rgb: &[[u8; 3]], w: u32, h: u32) -> GrayImage {
    GrayImage::from_vec(
        w,
        h,
        rgb.iter().map(|p| rgb_to_luma(p[0], p[1], p[2])).collect(),
    )
    .unwrap()
}

fn scene_gray(w: u32, h: u32, seed: u64) -> GrayImage {
    gaussian_blur(&to_gray(&scene_rgb(w, h, seed), w, h), 0.8)
}

fn extract(g: &GrayImage, max: usize) -> (Vec<Keypoint>, Vec<u8>) {
    let mut ex = FeatureExtractor::new(FeatureConfig {
        max_keypoints: max,
        ..Default::default()
    })
    .unwrap();
    let f = ex.extract_gray(g).unwrap();
    (f.keypoints.to_vec(), f.patches.to_vec())
}

fn ncc(a: &[u8], b: &[u8]) -> f64 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let mb = b.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt().max(1e-9)
}

fn angle_diff(a: f32, b: f32) -> f32 {
    let d = (a - b).rem_euclid(std::f32::consts::TAU);
    d.min(std::f32::consts::TAU - d)
}

#[test]
fn every_pixel_format_gives_the_gray8_keypoints() {
    let (w, h) = (320u32, 240u32);
    let rgb = scene_rgb(w, h, 3);
    let gray = to_gray(&rgb, w, h);
    let mut ex = FeatureExtractor::new(FeatureConfig::default()).unwrap();
    let reference = ex.extract_gray(&gray).unwrap();
    let (ref_kps, ref_patches) = (reference.keypoints.to_vec(), reference.patches.to_vec());
    assert!(ref_kps.len() > 300, "{}", ref_kps.len());

    let stride = w as usize + 16; // padded rows, as camera buffers have
    for format in PixelFormat::ALL {
        let mut data = Vec::new();
        match format {
            PixelFormat::Gray8 | PixelFormat::Nv12 | PixelFormat::Nv21 => {
                for y in 0..h as usize {
                    let row = &gray.as_slice()[y * w as usize..(y + 1) * w as usize];
                    data.extend_from_slice(row);
                    data.resize((y + 1) * stride, 0);
                }
                if format.is_biplanar() {
                    // Chroma: arbitrary, must not matter.
                    data.extend((0..stride * h as usize / 2).map(|i| (i * 13 % 256) as u8));
                }
            }
            PixelFormat::Rgba8 | PixelFormat::Bgra8 => {
                for y in 0..h as usize {
                    for p in &rgb[y * w as usize..(y + 1) * w as usize] {
                        let [r, g, b] = *p;
                        if format == PixelFormat::Rgba8 {
                            data.extend_from_slice(&[r, g, b, 255]);
                        } else {
                            data.extend_from_slice(&[b, g, r, 255]);
                        }
                    }
                    data.resize((y + 1) * stride * 4, 0);
                }
            }
        }
        let frame_stride = stride * format.bytes_per_pixel();
        let frame = Frame::new(format, w, h, frame_stride, &data).unwrap();
        let f = ex.extract(&frame).unwrap();
        assert_eq!(f.keypoints, &ref_kps[..], "{format}");
        assert_eq!(f.patches, &ref_patches[..], "{format}");
    }
}

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

#[test]
fn rotation_by_90_degrees_moves_keypoints_angles_and_patches_with_it() {
    let (w, h) = (320u32, 240u32);
    let g = scene_gray(w, h, 11);
    let r = rotate90(&g);
    let (ka, pa) = extract(&g, 500);
    let (kb, pb) = extract(&r, 500);
    // Continuous coordinates: (x, y) -> (h - y, x); the angle turns by +90°.
    let mut found = 0;
    let mut angle_ok = 0;
    let mut nccs = Vec::new();
    for (i, k) in ka.iter().enumerate() {
        let (ex, ey) = (h as f32 - k.y, k.x);
        let hit = kb.iter().enumerate().find(|(_, q)| {
            q.level == k.level
                && (q.x - ex).abs() < 0.05 * q.size
                && (q.y - ey).abs() < 0.05 * q.size
        });
        if let Some((j, q)) = hit {
            found += 1;
            if angle_diff(q.angle, k.angle + std::f32::consts::FRAC_PI_2) < 0.05 {
                angle_ok += 1;
            }
            nccs.push(ncc(
                &pa[i * PATCH_AREA..(i + 1) * PATCH_AREA],
                &pb[j * PATCH_AREA..(j + 1) * PATCH_AREA],
            ));
        }
    }
    let frac = found as f64 / ka.len() as f64;
    assert!(
        frac > 0.8,
        "only {found} of {} keypoints found rotated",
        ka.len()
    );
    assert!(
        angle_ok as f64 > 0.95 * found as f64,
        "{angle_ok} of {found} angles consistent"
    );
    nccs.sort_by(f64::total_cmp);
    let median = nccs[nccs.len() / 2];
    assert!(median > 0.97, "median patch NCC {median}");
}

#[test]
fn arbitrary_rotation_keeps_keypoints_angles_and_patches() {
    let (w, h) = (360u32, 360u32);
    let g = scene_gray(w, h, 5);
    for deg in [30.0f64, 137.0] {
        let a = deg.to_radians();
        let (c, s) = (a.cos(), a.sin());
        let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
        // B(x) = A(H^-1 x), H rotates about the centre by `a` (clockwise on screen, y down).
        let hm = nalgebra::Matrix3::new(
            c,
            -s,
            cx - c * cx + s * cy,
            s,
            c,
            cy - s * cx - c * cy,
            0.0,
            0.0,
            1.0,
        );
        let r = warp(&g, &hm, w, h, 128);
        let (ka, pa) = extract(&g, 600);
        let (kb, pb) = extract(&r, 600);
        let (mut visible, mut found, mut angle_ok) = (0, 0, 0);
        let mut nccs = Vec::new();
        for (i, k) in ka.iter().enumerate() {
            let (x, y) = (f64::from(k.x) - cx, f64::from(k.y) - cy);
            if (x * x + y * y).sqrt() > 0.45 * f64::from(w) - f64::from(k.size) {
                continue; // the corners of A leave B, and B's fill border makes new corners
            }
            visible += 1;
            let (ex, ey) = ((c * x - s * y + cx) as f32, (s * x + c * y + cy) as f32);
            let hit = kb.iter().enumerate().find(|(_, q)| {
                q.level == k.level
                    && ((q.x - ex).powi(2) + (q.y - ey).powi(2)).sqrt() < 1.5 * q.size / 32.0
            });
            if let Some((j, q)) = hit {
                found += 1;
                if angle_diff(q.angle, k.angle + a as f32) < 0.15 {
                    angle_ok += 1;
                }
                nccs.push(ncc(
                    &pa[i * PATCH_AREA..(i + 1) * PATCH_AREA],
                    &pb[j * PATCH_AREA..(j + 1) * PATCH_AREA],
                ));
            }
        }
        assert!(
            found as f64 > 0.6 * visible as f64,
            "{deg}°: {found} of {visible} repeated"
        );
        assert!(
            angle_ok as f64 > 0.85 * found as f64,
            "{deg}°: {angle_ok} of {found} angles"
        );
        nccs.sort_by(f64::total_cmp);
        let median = nccs[nccs.len() / 2];
        assert!(median > 0.9, "{deg}°: median patch NCC {median}");
    }
}

#[test]
fn keypoints_spread_over_the_image() {
    // Texture only in the left quarter is strong; the rest is weak but textured.
    let (w, h) = (320u32, 240u32);
    let mut g = scene_gray(w, h, 9);
    for (i, v) in g.as_mut_slice().iter_mut().enumerate() {
        if (i % w as usize) > 80 {
            *v = 100 + *v / 8;
        }
    }
    let (k, _) = extract(&g, 300);
    let right = k.iter().filter(|p| p.x > 100.0).count();
    assert!(
        right > 100,
        "only {right} of {} keypoints in the weak-texture 3/4",
        k.len()
    );
}

#[test]
fn bad_and_tiny_inputs_never_panic() {
    let mut ex = FeatureExtractor::new(FeatureConfig::default()).unwrap();
    for (w, h) in [
        (1u32, 1u32),
        (2, 2),
        (10, 7),
        (33, 33),
        (40, 41),
        (1, 500),
        (500, 1),
    ] {
        let g = scene_gray(w, h, 1);
        let f = ex.extract_gray(&g).unwrap();
        assert_eq!(f.patches.len(), f.keypoints.len() * PATCH_AREA);
    }
    let flat = GrayImage::from_vec(200, 100, vec![90; 20_000]).unwrap();
    assert!(ex.extract_gray(&flat).unwrap().keypoints.is_empty());
    let empty = GrayImage::new(0, 0);
    assert!(ex.extract_gray(&empty).unwrap().keypoints.is_empty());

    let mut none = FeatureExtractor::new(FeatureConfig {
        max_keypoints: 0,
        ..Default::default()
    })
    .unwrap();
    assert!(
        none.extract_gray(&scene_gray(100, 100, 2))
            .unwrap()
            .keypoints
            .is_empty()
    );

    // extract_patches: zero keypoints, wrong buffer, weird keypoints.
    let g = scene_gray(64, 48, 4);
    assert!(extract_patches(&g, &[], &mut []).is_ok());
    assert!(extract_patches(&g, &[Keypoint::default()], &mut [0u8; 10]).is_err());
    let odd = [
        Keypoint {
            x: -50.0,
            y: 1e9,
            size: f32::NAN,
            angle: f32::INFINITY,
            score: 0.0,
            level: 9,
        },
        Keypoint {
            x: 10.0,
            y: 10.0,
            size: 1e6,
            angle: 1.0,
            score: 0.0,
            level: 0,
        },
        Keypoint {
            x: 10.0,
            y: 10.0,
            size: 0.001,
            angle: 1.0,
            score: 0.0,
            level: 0,
        },
    ];
    let mut out = vec![0u8; odd.len() * PATCH_AREA];
    extract_patches(&g, &odd, &mut out).unwrap();
    assert!(extract_patches(&GrayImage::new(0, 0), &odd, &mut out).is_ok());
}

#[test]
fn extraction_is_deterministic_and_respects_the_budget() {
    let g = scene_gray(640, 480, 21);
    let (a, pa) = extract(&g, 1000);
    let (b, pb) = extract(&g, 1000);
    assert_eq!(a, b);
    assert_eq!(pa, pb);
    assert!(a.len() <= 1000 && a.len() > 800, "{}", a.len());
    for k in &a {
        assert!(k.x > 0.0 && k.y > 0.0 && k.x < 640.0 && k.y < 480.0);
        assert!(k.size >= 32.0 && k.angle.abs() <= std::f32::consts::PI + 1e-6);
    }
    assert!(a.iter().any(|k| k.level >= 3));
}
