//! Trajectory generators: orbits look at their centre, walks move steadily along the path, random
//! views see the scene; all deterministic.

use nalgebra::{Point3, Vector2};
use sextant_runtime::Camera;
use sextant_sim::{Renderer, Scene, TrajectorySpec};

fn camera() -> Camera {
    Camera::pinhole(80, 60, 60.0, 60.0, 40.0, 30.0).unwrap()
}

#[test]
fn orbit_looks_at_its_centre() {
    let scene = Scene::sample("room").unwrap();
    let spec: TrajectorySpec = "orbit:frames=8,radius=1.2,height=1.5,center=3:2.5:1.2"
        .parse()
        .unwrap();
    let t = spec.generate(&scene, &camera(), 0).unwrap();
    assert_eq!(t.poses.len(), 8);
    assert_eq!(t.timestamps[3], 0.3);
    for p in &t.poses {
        let c = p.center();
        assert!((c.z - 1.5).abs() < 1e-12 && ((c.x - 3.0).hypot(c.y - 2.5) - 1.2).abs() < 1e-12);
        let px = camera()
            .project(&p.transform_point(&Point3::new(3.0, 2.5, 1.2)).coords)
            .unwrap();
        assert!((px - Vector2::new(40.0, 30.0)).norm() < 1e-9);
    }
}

#[test]
fn walk_is_smooth_and_follows_the_path() {
    let scene = Scene::sample("facade").unwrap();
    let spec: TrajectorySpec = "walk:frames=30,path=1:3/10:3/19:4,height=1.6"
        .parse()
        .unwrap();
    let t = spec.generate(&scene, &camera(), 5).unwrap();
    let centres: Vec<_> = t.poses.iter().map(|p| p.center()).collect();
    assert!((centres[0].xy() - Point3::new(1.0, 3.0, 0.0).xy()).norm() < 1e-9);
    assert!((centres[29].xy() - Point3::new(19.0, 4.0, 0.0).xy()).norm() < 1e-9);
    let steps: Vec<f64> = centres
        .windows(2)
        .map(|w| (w[1].xy() - w[0].xy()).norm())
        .collect();
    let mean = steps.iter().sum::<f64>() / steps.len() as f64;
    assert!(
        steps.iter().all(|s| (s - mean).abs() < 0.05 * mean),
        "constant speed: {steps:?}"
    );
    for (i, p) in t.poses.iter().enumerate() {
        assert!((centres[i].z - 1.6).abs() <= 0.02 + 1e-9, "bob stays small");
        // Looking roughly along +x (the path direction), small head motion.
        let forward = p.inverse().transform_vector(&nalgebra::Vector3::z());
        assert!(
            forward.x > 0.9,
            "frame {i} looks along the path: {forward:?}"
        );
    }
    assert_eq!(
        t,
        spec.generate(&scene, &camera(), 5).unwrap(),
        "deterministic"
    );
    assert_ne!(
        t,
        spec.generate(&scene, &camera(), 6).unwrap(),
        "head motion depends on the seed"
    );
}

#[test]
fn random_views_see_the_scene_and_are_seeded() {
    let scene = Scene::sample("plaza").unwrap();
    let spec: TrajectorySpec = "random:frames=5,min_coverage=0.9".parse().unwrap();
    let a = spec.generate(&scene, &camera(), 11).unwrap();
    assert_eq!(a, spec.generate(&scene, &camera(), 11).unwrap());
    assert_ne!(a, spec.generate(&scene, &camera(), 12).unwrap());
    let mut r = Renderer::new(&camera());
    for p in &a.poses {
        let v = scene.views.clone();
        let c = p.center();
        assert!(
            c.x >= v.volume_min.x
                && c.x <= v.volume_max.x
                && c.z >= v.volume_min.z
                && c.z <= v.volume_max.z
        );
        assert!(r.render(&scene, p).coverage() >= 0.85);
    }
    // Impossible requests fail with an error, not a hang or a panic.
    let e = "random:frames=2,min_distance=100,max_distance=200"
        .parse::<TrajectorySpec>()
        .unwrap()
        .generate(&scene, &camera(), 1);
    assert!(e.is_err());
}
