//! Renders one view of a sample scene to a PNG: `cargo run -p sextant-sim --example preview -- room orbit:frames=4 0 out.png`.
use sextant_runtime::Camera;
use sextant_sim::{Renderer, Scene, TrajectorySpec, png_io};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let scene = Scene::open(args.get(1).map_or("room", String::as_str))?;
    let spec: TrajectorySpec = args
        .get(2)
        .map_or("orbit:frames=4", String::as_str)
        .parse()?;
    let idx: usize = args.get(3).map_or(Ok(0), |s| s.parse())?;
    let out = args.get(4).map_or("preview.png", String::as_str);
    let camera = Camera::pinhole(640, 480, 500.0, 500.0, 320.0, 240.0)?;
    let traj = spec.generate(&scene, &camera, 1)?;
    let mut r = Renderer::new(&camera);
    let t = std::time::Instant::now();
    let view = r.render(&scene, &traj.poses[idx]);
    eprintln!(
        "rendered in {:?}, coverage {:.3}",
        t.elapsed(),
        view.coverage()
    );
    std::fs::write(out, png_io::encode_rgb(&view.rgb.to_rgb8())?)?;
    Ok(())
}
