//! `sextant demo`: the end-to-end showcase, runnable from any folder with no input files.
//!
//! At this stage it renders a sample scene (embedded in the binary) along a short trajectory into
//! a session folder and reports what it did. Later stages (map building, localisation) extend
//! [`run_demo`] with more steps that consume the session it writes; each step adds a section to
//! the [`DemoReport`].

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use sextant_sim::{ImageFormat, Photometric, RenderJob, RenderSummary, Scene, TrajectorySpec};

use crate::scene::{CameraArgs, ms_stats, render_with_progress};

/// Arguments of `sextant demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "./sextant-demo")]
    pub out: PathBuf,
    /// Sample scene (room, facade, plaza) or a scene file.
    #[arg(long, default_value = "room")]
    pub scene: String,
    /// Trajectory (default: a 12-frame orbit).
    #[arg(long, default_value = "orbit:frames=12")]
    pub trajectory: String,
    /// Photometric preset (ideal, nominal, dusk, night, blur).
    #[arg(long, default_value = "nominal")]
    pub photometric: String,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub camera: CameraArgs,
}

/// What the demo did, step by step.
#[derive(Debug)]
pub struct DemoReport {
    /// The simulated mapping/query session.
    pub render: RenderSummary,
    /// The job that produced it.
    pub job: RenderJob,
}

/// Runs the demo steps and returns their report.
pub fn run_demo(args: &DemoArgs) -> Result<DemoReport> {
    let scene =
        Scene::open(&args.scene).with_context(|| format!("loading scene {}", args.scene))?;
    let (camera, camera_name) = args.camera.build()?;
    let job = RenderJob {
        scene,
        scene_source: args.scene.clone(),
        camera,
        camera_name,
        trajectory: args.trajectory.parse::<TrajectorySpec>()?,
        photometric: Photometric::parse(&args.photometric)?,
        image_format: ImageFormat::Rgb8,
        seed: args.seed,
        prior_sigma_m: Some(10.0),
    };
    let sessions = args.out.join("session");
    let render = render_with_progress(&job, &sessions)?;
    Ok(DemoReport { render, job })
}

/// Runs `sextant demo` and prints its report.
pub fn run(args: DemoArgs) -> Result<()> {
    let report = run_demo(&args)?;
    let r = &report.render;
    let (mean, min, max) = ms_stats(&r.capture_s);
    println!("Sextant demo");
    println!(
        "  1. simulated a camera session in the {:?} scene ({} textured surfaces, embedded photos)",
        report.job.scene.name,
        report.job.scene.surfaces.len()
    );
    println!(
        "     camera {} {}x{}, trajectory {}",
        report.job.camera_name, r.width, r.height, report.job.trajectory
    );
    println!(
        "     photometric {}, seed {}",
        report.job.photometric.preset, report.job.seed
    );
    println!(
        "     {} frames, {mean:.1} ms/frame to render (min {min:.1}, max {max:.1})",
        r.frames
    );
    println!("     session: {}", r.session_json.display());
    println!(
        "     (frames/*.png, depth/*.png in millimetres, exact poses and gravity in session.json, render.json)"
    );
    Ok(())
}
