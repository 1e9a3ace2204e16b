//! Sessions: what `render_session` writes reads back exactly; damaged sessions are errors.

use std::path::Path;

use sextant_runtime::{Camera, Distortion};
use sextant_sim::session::{depth_to_mm, read_session};
use sextant_sim::{
    Capturer, ImageFormat, Photometric, RenderJob, Scene, TrajectorySpec, render_session,
};

fn job(scene: &str, camera: Camera, format: ImageFormat) -> RenderJob {
    RenderJob {
        scene: Scene::sample(scene).unwrap(),
        scene_source: format!("sample:{scene}"),
        camera,
        camera_name: "test".into(),
        trajectory: "walk:frames=3".parse::<TrajectorySpec>().unwrap(),
        photometric: Photometric::ideal(),
        image_format: format,
        seed: 9,
        prior_sigma_m: Some(5.0),
    }
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["", "frames", "depth"] {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        out.extend(names.into_iter().map(|p| {
            (
                p.strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read(&p).unwrap(),
            )
        }));
    }
    out
}

#[test]
fn write_read_round_trip_with_depth_and_brown_camera() {
    let d = Distortion {
        k1: -0.1,
        k2: 0.02,
        k3: 0.0,
        p1: 0.0003,
        p2: 0.0,
    };
    let camera = Camera::new(96, 72, 80.0, 80.0, 48.0, 36.0, d).unwrap();
    let job = job("facade", camera, ImageFormat::Rgb8);
    let dir = tempfile::tempdir().unwrap();
    let summary = render_session(&job, dir.path(), &mut |_, _| {}).unwrap();
    assert_eq!(summary.frames, 3);
    let s = read_session(dir.path()).unwrap();
    assert_eq!(s.camera, camera);
    assert_eq!(s.geo_anchor, job.scene.geo_anchor);
    assert_eq!(s.frames.len(), 3);
    let traj = job
        .trajectory
        .generate(&job.scene, &camera, job.seed)
        .unwrap();
    let mut capturer = Capturer::new(&camera);
    for (i, f) in s.frames.iter().enumerate() {
        let pose = f.pose.unwrap();
        assert!(
            pose.rotation_error(&traj.poses[i]) < 1e-12
                && pose.translation_error(&traj.poses[i]) < 1e-12
        );
        assert!((f.timestamp - traj.timestamps[i]).abs() < 1e-12);
        let g = f.gravity.unwrap();
        assert!(
            (g - pose.transform_vector(&Scene::world_up())).norm() < 1e-12,
            "gravity is world up in the camera frame"
        );
        let prior = f.prior.unwrap();
        assert_eq!(prior.sigma_m, 5.0);
        assert!((prior.position - pose.center().coords).norm() < 5.0 * 6.0);
        let cap = capturer.capture(
            &job.scene,
            &traj.poses[i],
            &job.photometric,
            job.seed,
            i as u64,
        );
        assert_eq!(f.load_image().unwrap().to_rgb(), cap.rgb);
        let depth = f.load_depth().unwrap().unwrap();
        assert_eq!((depth.width, depth.height), (96, 72));
        let mut nonzero = 0;
        for (got, want) in depth.metres.iter().zip(&cap.depth) {
            assert_eq!(f32::from(depth_to_mm(*want)) / 1000.0, *got);
            if *want > 0.0 && *want < 65.0 {
                assert!((got - want).abs() <= 0.0005 + 1e-6, "{got} vs {want}");
                nonzero += 1;
            }
        }
        assert!(
            nonzero > 96 * 72 / 3,
            "frame {i}: {nonzero} pixels with depth"
        );
    }
    let render: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("render.json")).unwrap()).unwrap();
    assert_eq!(render["scene"]["digest"], job.scene.digest.as_str());
    assert_eq!(render["seed"], 9);
    assert_eq!(render["photometric"]["preset"], "ideal");
}

#[test]
fn same_job_same_files_and_gray_formats_agree() {
    let camera = Camera::pinhole(64, 48, 50.0, 50.0, 32.0, 24.0).unwrap();
    let mut j = job(
        "room",
        camera,
        ImageFormat::Pixel(sextant_runtime::PixelFormat::Nv12),
    );
    j.photometric = Photometric::nominal();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    render_session(&j, a.path(), &mut |_, _| {}).unwrap();
    render_session(&j, b.path(), &mut |_, _| {}).unwrap();
    assert_eq!(files(a.path()), files(b.path()));
    j.image_format = ImageFormat::Pixel(sextant_runtime::PixelFormat::Gray8);
    let c = tempfile::tempdir().unwrap();
    render_session(&j, c.path(), &mut |_, _| {}).unwrap();
    let fa = read_session(a.path()).unwrap();
    let fc = read_session(c.path()).unwrap();
    assert_eq!(
        fa.frames[1].load_gray().unwrap(),
        fc.frames[1].load_gray().unwrap()
    );
}

#[test]
fn damaged_sessions_are_errors() {
    let camera = Camera::pinhole(32, 24, 25.0, 25.0, 16.0, 12.0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    render_session(
        &job("room", camera, ImageFormat::Rgb8),
        dir.path(),
        &mut |_, _| {},
    )
    .unwrap();
    let json_path = dir.path().join("session.json");
    let json = std::fs::read_to_string(&json_path).unwrap();

    // Truncated PNGs: the session reads, the frame does not decode.
    let img = dir.path().join("frames/000001.png");
    let bytes = std::fs::read(&img).unwrap();
    std::fs::write(&img, &bytes[..bytes.len() / 2]).unwrap();
    let dep = dir.path().join("depth/000002.png");
    let bytes = std::fs::read(&dep).unwrap();
    std::fs::write(&dep, &bytes[..40]).unwrap();
    let s = read_session(dir.path()).unwrap();
    assert!(s.frames[0].load_image().is_ok());
    assert!(s.frames[1].load_image().is_err());
    assert!(s.frames[2].load_depth().is_err());

    let edits: Vec<(String, &str)> = vec![
        (json[..json.len() / 2].to_string(), "EOF"),
        (
            json.replace("sextant-session/1", "sextant-session/9"),
            "format",
        ),
        (
            json.replace("\"model\": \"pinhole\"", "\"model\": \"fisheye\""),
            "fisheye",
        ),
        (json.replace("\"fx\": 25.0", "\"fx\": 0.0"), "camera"),
        (json.replacen("frames/000000.png", "../000000.png", 1), ".."),
        (
            json.replacen("frames/000000.png", "frames/missing.png", 1),
            "does not exist",
        ),
        (
            json.replacen("\"sigma_m\": 5.0", "\"sigma_m\": -1.0", 1),
            "prior",
        ),
        ("{\"format\": \"sextant-session/1\"}".into(), "camera"),
    ];
    for (text, needle) in edits {
        std::fs::write(&json_path, &text).unwrap();
        let e = read_session(dir.path()).unwrap_err().to_string();
        assert!(e.contains(needle), "expected {needle:?} in {e:?}");
    }
    // A rotation that is not a rotation.
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["frames"][0]["pose"]["R"] = serde_json::json!([[2, 0, 0], [0, 1, 0], [0, 0, 1]]);
    std::fs::write(&json_path, v.to_string()).unwrap();
    assert!(
        read_session(dir.path())
            .unwrap_err()
            .to_string()
            .contains("frame 0")
    );
    assert!(read_session(&dir.path().join("nowhere")).is_err());
}
