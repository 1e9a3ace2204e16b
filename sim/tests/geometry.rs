//! The renderer's geometry proof: a 3D point on a textured surface lands on matching image
//! content in two views from different poses (one with lens distortion), and the rendered depth at
//! a pixel equals the depth of the surface point its ray hits.

use nalgebra::{Point3, Vector2, Vector3};
use sextant_runtime::{Camera, Distortion, Pose};
use sextant_sim::render::raycast;
use sextant_sim::{Rendered, Renderer, Scene};

/// Luma, smoothed by a 3x3 binomial kernel: content near the Nyquist limit cannot survive the
/// bilinear resampling of the second view, so both views are compared slightly low-passed.
fn luma(v: &Rendered) -> Vec<f64> {
    let (w, h) = (v.rgb.width as usize, v.rgb.height as usize);
    let l: Vec<f64> = v
        .rgb
        .data
        .iter()
        .map(|p| f64::from(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]))
        .collect();
    let at = |x: usize, y: usize, dx: isize, dy: isize| {
        let xx = (x as isize + dx).clamp(0, w as isize - 1) as usize;
        let yy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
        l[yy * w + xx]
    };
    let mut out = vec![0.0; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut acc = 0.0;
            for (dy, wy) in [(-1, 1.0), (0, 2.0), (1, 1.0)] {
                for (dx, wx) in [(-1, 1.0), (0, 2.0), (1, 1.0)] {
                    acc += wx * wy * at(x, y, dx, dy);
                }
            }
            out[y * w + x] = acc / 16.0;
        }
    }
    out
}

/// Bilinear sample at continuous pixel coordinates (pixel centres at +0.5).
fn sample(img: &[f64], w: usize, h: usize, u: f64, v: f64) -> f64 {
    let (x, y) = (u - 0.5, v - 0.5);
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |xi: f64, yi: f64| {
        img[(yi.clamp(0.0, h as f64 - 1.0) as usize) * w + xi.clamp(0.0, w as f64 - 1.0) as usize]
    };
    (1.0 - fy) * ((1.0 - fx) * at(x0, y0) + fx * at(x0 + 1.0, y0))
        + fy * ((1.0 - fx) * at(x0, y0 + 1.0) + fx * at(x0 + 1.0, y0 + 1.0))
}

fn ncc(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    sab / (saa * sbb).sqrt()
}

/// The world point seen at the centre of pixel (`px`, `py`), by an independent f64 ray cast.
fn surface_point(
    cam: &Camera,
    pose: &Pose,
    px: u32,
    py: u32,
    scene: &Scene,
) -> Option<Point3<f64>> {
    let xn = cam.pixel_to_normalized(&Vector2::new(f64::from(px) + 0.5, f64::from(py) + 0.5));
    let dir = pose
        .inverse()
        .transform_vector(&Vector3::new(xn.x, xn.y, 1.0));
    let origin = pose.center();
    raycast(scene, &origin, &dir).map(|(t, _)| origin + dir * t)
}

fn assert_depth(view: &Rendered, cam: &Camera, pose: &Pose, px: u32, py: u32, scene: &Scene) {
    let p = surface_point(cam, pose, px, py, scene).expect("pixel sees a surface");
    let z = pose.transform_point(&p).z;
    let d = f64::from(view.depth_at(px, py));
    assert!(
        ((d - z) / z).abs() < 1e-6,
        "pixel ({px},{py}): rendered depth {d} vs true {z}"
    );
}

#[test]
fn point_lands_on_matching_content_in_two_views_and_depth_is_exact() {
    let scene = Scene::sample("room").unwrap();
    let cam_a = Camera::pinhole(320, 240, 260.0, 260.0, 160.0, 120.0).unwrap();
    let dist = Distortion {
        k1: -0.15,
        k2: 0.03,
        k3: 0.0,
        p1: 0.001,
        p2: -0.0005,
    };
    let cam_b = Camera::new(320, 240, 250.0, 250.0, 158.0, 122.0, dist).unwrap();
    let up = Vector3::z();
    let pose_a = Pose::look_at(
        &Point3::new(2.3, 2.8, 1.5),
        &Point3::new(2.0, 4.99, 1.6),
        &up,
    )
    .unwrap();
    let pose_b = Pose::look_at(
        &Point3::new(1.85, 2.9, 1.62),
        &Point3::new(2.2, 4.99, 1.5),
        &up,
    )
    .unwrap();
    let view_a = Renderer::new(&cam_a).render(&scene, &pose_a);
    let view_b = Renderer::new(&cam_b).render(&scene, &pose_b);
    let (ga, gb) = (luma(&view_a), luma(&view_b));

    let mut checked = 0;
    let mut worst = 1.0f64;
    for py in (30..=210).step_by(30) {
        for px in (30..=290).step_by(26) {
            // Depth in view A at this pixel centre, and the point itself.
            assert_depth(&view_a, &cam_a, &pose_a, px, py, &scene);
            let p = surface_point(&cam_a, &pose_a, px, py, &scene).unwrap();
            // The 11x11 patch in A must lie on one surface and have texture.
            let sid = view_a.surface[(py * 320 + px) as usize];
            let mut patch_a = Vec::new();
            let mut one_surface = true;
            for dy in -5i32..=5 {
                for dx in -5i32..=5 {
                    let (x, y) = ((px as i32 + dx) as usize, (py as i32 + dy) as usize);
                    one_surface &= view_a.surface[y * 320 + x] == sid;
                    patch_a.push(ga[y * 320 + x]);
                }
            }
            let pb = pose_b.transform_point(&p).coords;
            let Some(px_b) = cam_b.project(&pb) else {
                continue;
            };
            let inside = px_b.x > 8.0 && px_b.y > 8.0 && px_b.x < 312.0 && px_b.y < 232.0;
            let mean = patch_a.iter().sum::<f64>() / 121.0;
            let std = (patch_a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 121.0).sqrt();
            if !one_surface || !inside || std < 0.01 {
                continue;
            }
            // The same point in B must be on the same surface (not occluded)...
            let (bx, by) = (px_b.x.floor() as u32, px_b.y.floor() as u32);
            if view_b.surface[(by * 320 + bx) as usize] != sid {
                continue;
            }
            // ...with the same content around it: each pixel of A's patch is carried to B through
            // its own surface point (so the local perspective and lens warp between the views
            // is exact) and B is sampled bilinearly there.
            let mut patch_b = Vec::new();
            for dy in -5i32..=5 {
                for dx in -5i32..=5 {
                    let q = surface_point(
                        &cam_a,
                        &pose_a,
                        (px as i32 + dx) as u32,
                        (py as i32 + dy) as u32,
                        &scene,
                    )
                    .unwrap();
                    let Some(qb) = cam_b.project(&pose_b.transform_point(&q).coords) else {
                        continue;
                    };
                    // All four bilinear taps must see the same surface (no edge or occluder).
                    let (tx, ty) = ((qb.x - 0.5).floor() as usize, (qb.y - 0.5).floor() as usize);
                    if tx + 1 >= 320
                        || ty + 1 >= 240
                        || [(0, 0), (1, 0), (0, 1), (1, 1)]
                            .iter()
                            .any(|(ox, oy)| view_b.surface[(ty + oy) * 320 + tx + ox] != sid)
                    {
                        continue;
                    }
                    patch_b.push(sample(&gb, 320, 240, qb.x, qb.y));
                }
            }
            if patch_b.len() != 121 {
                continue;
            }
            let c = ncc(&patch_a, &patch_b);
            worst = worst.min(c);
            assert!(
                c > 0.9,
                "point {p:?}: A ({px},{py}) vs B ({:.2},{:.2}): NCC {c:.3}",
                px_b.x,
                px_b.y
            );
            // And the distorted view's depth at its nearest pixel centre is exact too.
            assert_depth(&view_b, &cam_b, &pose_b, bx, by, &scene);
            checked += 1;
        }
    }
    eprintln!("{checked} points compared, worst NCC {worst:.3}");
    assert!(checked >= 15, "only {checked} points could be compared");
}

#[test]
fn every_pixel_depth_matches_independent_raycast_in_a_distorted_view() {
    let scene = Scene::sample("plaza").unwrap();
    let dist = Distortion {
        k1: -0.2,
        k2: 0.05,
        k3: 0.0,
        p1: 0.0,
        p2: 0.0,
    };
    let cam = Camera::new(64, 48, 40.0, 40.0, 32.0, 24.0, dist).unwrap();
    let pose = Pose::look_at(
        &Point3::new(-6.0, -8.0, 1.7),
        &Point3::new(0.0, 0.0, 1.5),
        &Vector3::z(),
    )
    .unwrap();
    let view = Renderer::new(&cam).render(&scene, &pose);
    let mut hits = 0;
    for y in 0..48 {
        for x in 0..64 {
            match surface_point(&cam, &pose, x, y, &scene) {
                Some(p) => {
                    let z = pose.transform_point(&p).z;
                    let d = f64::from(view.depth_at(x, y));
                    assert!(((d - z) / z).abs() < 1e-6, "({x},{y}): {d} vs {z}");
                    hits += 1;
                }
                None => assert_eq!(view.depth_at(x, y), 0.0),
            }
        }
    }
    assert!(hits > 1000);
}
