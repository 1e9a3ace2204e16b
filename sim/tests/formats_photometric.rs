//! Pixel formats agree on gray; captures are deterministic; photometric presets do what they say.

use nalgebra::{Point3, Vector3};
use sextant_runtime::{Camera, PixelFormat, Pose};
use sextant_sim::encode::{encode, rgb_to_gray};
use sextant_sim::{Capturer, Photometric, RgbImage, Scene};

fn setup() -> (Scene, Camera, Pose) {
    let scene = Scene::sample("room").unwrap();
    let camera = Camera::pinhole(160, 120, 130.0, 130.0, 80.0, 60.0).unwrap();
    let pose = Pose::look_at(
        &Point3::new(3.0, 2.0, 1.6),
        &Point3::new(1.5, 0.0, 1.6),
        &Vector3::z(),
    )
    .unwrap();
    (scene, camera, pose)
}

fn mean_std(img: &RgbImage) -> (f64, f64) {
    let g = rgb_to_gray(img);
    let xs: Vec<f64> = g.as_slice().iter().map(|&v| f64::from(v)).collect();
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    (
        m,
        (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt(),
    )
}

/// Std of the difference of two captures of the same view with different noise seeds.
fn noise(c: &mut Capturer, scene: &Scene, pose: &Pose, p: &Photometric) -> f64 {
    let a = c.capture(scene, pose, p, 1, 0).rgb;
    let b = c.capture(scene, pose, p, 2, 0).rgb;
    let d: Vec<f64> = a
        .as_slice()
        .iter()
        .zip(b.as_slice())
        .map(|(&x, &y)| f64::from(x) - f64::from(y))
        .collect();
    let m = d.iter().sum::<f64>() / d.len() as f64;
    (d.iter().map(|v| (v - m).powi(2)).sum::<f64>() / d.len() as f64).sqrt() / 2f64.sqrt()
}

fn gradient_energy(img: &RgbImage) -> f64 {
    let g = rgb_to_gray(img);
    let (w, h) = (g.width() as usize, g.height() as usize);
    let s = g.as_slice();
    let mut e = 0.0;
    for y in 0..h - 1 {
        for x in 0..w - 1 {
            let c = f64::from(s[y * w + x]);
            e +=
                (f64::from(s[y * w + x + 1]) - c).abs() + (f64::from(s[(y + 1) * w + x]) - c).abs();
        }
    }
    e
}

#[test]
fn every_pixel_format_gives_the_gray8_image() {
    let (scene, camera, pose) = setup();
    let rgb = Capturer::new(&camera)
        .capture(&scene, &pose, &Photometric::nominal(), 3, 0)
        .rgb;
    let gray8 = encode(&rgb, PixelFormat::Gray8)
        .unwrap()
        .as_frame()
        .unwrap()
        .to_gray();
    assert_eq!(gray8, rgb_to_gray(&rgb));
    let (_, std) = mean_std(&rgb);
    assert!(std > 10.0, "the test image has content");
    for f in PixelFormat::ALL {
        let enc = encode(&rgb, f).unwrap();
        assert_eq!(enc.as_frame().unwrap().to_gray(), gray8, "{f}");
    }
    // Colour formats keep colour: RGBA and BGRA are channel swaps of each other.
    let rgba = encode(&rgb, PixelFormat::Rgba8).unwrap().data;
    let bgra = encode(&rgb, PixelFormat::Bgra8).unwrap().data;
    assert!(
        rgba.chunks(4)
            .zip(bgra.chunks(4))
            .all(|(a, b)| a[0] == b[2] && a[2] == b[0] && a[3] == 255)
    );
}

#[test]
fn same_seed_same_bytes_other_seed_other_noise() {
    let (scene, camera, pose) = setup();
    let mut c = Capturer::new(&camera);
    let p = Photometric::blur();
    let a = c.capture(&scene, &pose, &p, 42, 7);
    let b = Capturer::new(&camera).capture(&scene, &pose, &p, 42, 7);
    assert_eq!(a.rgb, b.rgb);
    assert_eq!(a.depth, b.depth);
    let other = c.capture(&scene, &pose, &p, 43, 7);
    assert_ne!(a.rgb, other.rgb);
    let next_frame = c.capture(&scene, &pose, &p, 42, 8);
    assert_ne!(a.rgb, next_frame.rgb, "each frame has its own noise");
}

#[test]
fn presets_change_the_image_as_expected() {
    let (scene, camera, pose) = setup();
    let mut c = Capturer::new(&camera);
    let ideal = c.capture(&scene, &pose, &Photometric::ideal(), 1, 0).rgb;
    let nominal = c.capture(&scene, &pose, &Photometric::nominal(), 1, 0).rgb;
    let dusk = c.capture(&scene, &pose, &Photometric::dusk(), 1, 0).rgb;
    let night = c.capture(&scene, &pose, &Photometric::night(), 1, 0).rgb;
    let (m_ideal, _) = mean_std(&ideal);
    let (m_nom, _) = mean_std(&nominal);
    let (m_dusk, _) = mean_std(&dusk);
    let (m_night, _) = mean_std(&night);
    assert!(
        (m_nom - m_ideal).abs() < 1.5,
        "nominal keeps the exposure: {m_nom} vs {m_ideal}"
    );
    assert!(
        m_dusk < 0.85 * m_nom && m_night < 0.7 * m_nom && m_night < m_dusk,
        "{m_nom} {m_dusk} {m_night}"
    );
    assert_eq!(noise(&mut c, &scene, &pose, &Photometric::ideal()), 0.0);
    let (n_nom, n_night) = (
        noise(&mut c, &scene, &pose, &Photometric::nominal()),
        noise(&mut c, &scene, &pose, &Photometric::night()),
    );
    assert!(n_nom > 0.3, "nominal has some noise: {n_nom}");
    assert!(
        n_night > 2.0 * n_nom,
        "night is noisier: {n_night} vs {n_nom}"
    );
    // Motion blur removes fine detail; the recorded pose and depth stay those of mid-exposure.
    let blur = c.capture(
        &scene,
        &pose,
        &Photometric::parse("ideal:blur_deg=2").unwrap(),
        1,
        0,
    );
    assert!(
        gradient_energy(&blur.rgb) < 0.7 * gradient_energy(&ideal),
        "blur smooths"
    );
    assert_eq!(blur.pose, pose);
    assert_eq!(
        blur.depth,
        c.capture(&scene, &pose, &Photometric::ideal(), 1, 0).depth
    );
}
