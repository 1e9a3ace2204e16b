//! `sextant scene …`: render simulator sessions, check scene files, list what ships.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sextant_runtime::{Camera, Distortion};
use sextant_sim::cameras::CAMERA_PRESETS;
use sextant_sim::photometric::PRESETS;
use sextant_sim::scene::SAMPLE_NAMES;
use sextant_sim::{
    ImageFormat, Photometric, RenderJob, RenderSummary, Scene, TrajectorySpec, camera_preset,
    render_session,
};

/// Arguments of `sextant scene`.
#[derive(Debug, Args)]
pub struct SceneArgs {
    #[command(subcommand)]
    command: SceneCommand,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run; boxing buys nothing
enum SceneCommand {
    /// Render a session (frames, depth, poses) of a scene along a trajectory.
    Render(RenderArgs),
    /// Load and validate a scene file (or sample), and summarise it.
    Check {
        /// Scene file, or a sample name (`room`, `facade`, `plaza`, or `sample:NAME`).
        scene: String,
    },
    /// List the sample scenes, camera presets, photometric presets and trajectory kinds.
    List,
}

/// Camera flags shared by `scene render` and `demo`.
#[derive(Debug, Clone, Args)]
pub struct CameraArgs {
    /// Camera preset: vga, phone-wide, phone-main, hd. Other camera flags override it.
    #[arg(long, default_value = "vga")]
    pub camera: String,
    /// Image width in pixels (focal length and principal point follow unless given).
    #[arg(long)]
    pub width: Option<u32>,
    /// Image height in pixels.
    #[arg(long)]
    pub height: Option<u32>,
    /// Focal length x, pixels.
    #[arg(long)]
    pub fx: Option<f64>,
    /// Focal length y, pixels (default: fx).
    #[arg(long)]
    pub fy: Option<f64>,
    /// Principal point x, pixels (default: width / 2).
    #[arg(long)]
    pub cx: Option<f64>,
    /// Principal point y, pixels (default: height / 2).
    #[arg(long)]
    pub cy: Option<f64>,
    /// Brown–Conrady radial k1.
    #[arg(long, allow_negative_numbers = true)]
    pub k1: Option<f64>,
    /// Brown–Conrady radial k2.
    #[arg(long, allow_negative_numbers = true)]
    pub k2: Option<f64>,
    /// Brown–Conrady radial k3.
    #[arg(long, allow_negative_numbers = true)]
    pub k3: Option<f64>,
    /// Brown–Conrady tangential p1.
    #[arg(long, allow_negative_numbers = true)]
    pub p1: Option<f64>,
    /// Brown–Conrady tangential p2.
    #[arg(long, allow_negative_numbers = true)]
    pub p2: Option<f64>,
}

impl CameraArgs {
    /// The camera these flags describe, and its name for reports (`preset` or `custom`).
    pub fn build(&self) -> Result<(Camera, String)> {
        let base = camera_preset(&self.camera)?;
        let overridden = [
            self.fx, self.fy, self.cx, self.cy, self.k1, self.k2, self.k3, self.p1, self.p2,
        ]
        .iter()
        .any(Option::is_some)
            || self.width.is_some()
            || self.height.is_some();
        if !overridden {
            return Ok((base, self.camera.clone()));
        }
        let w = self.width.unwrap_or(base.width());
        let h = self.height.unwrap_or(base.height());
        let s = f64::from(w) / f64::from(base.width());
        let fx = self.fx.unwrap_or(base.fx() * s);
        let fy = self.fy.or(self.fx).unwrap_or(base.fy() * s);
        let cx = self.cx.unwrap_or(if w == base.width() {
            base.cx()
        } else {
            f64::from(w) / 2.0
        });
        let cy = self.cy.unwrap_or(if h == base.height() {
            base.cy()
        } else {
            f64::from(h) / 2.0
        });
        let d0 = base.distortion();
        let d = Distortion {
            k1: self.k1.unwrap_or(d0.k1),
            k2: self.k2.unwrap_or(d0.k2),
            k3: self.k3.unwrap_or(d0.k3),
            p1: self.p1.unwrap_or(d0.p1),
            p2: self.p2.unwrap_or(d0.p2),
        };
        let cam = Camera::new(w, h, fx, fy, cx, cy, d).context("camera flags")?;
        Ok((cam, format!("{}+custom", self.camera)))
    }
}

/// Arguments of `sextant scene render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Scene file, or a sample name (`room`, `facade`, `plaza`, or `sample:NAME`).
    #[arg(long)]
    scene: String,
    /// Trajectory: `orbit:frames=24,radius=4,height=1.6`, `walk:frames=40,path=1:1/5:1/5:4`,
    /// `random:frames=30,min_coverage=0.85` (see `sextant scene list`).
    #[arg(long)]
    trajectory: String,
    /// Output session folder (created; existing frames are overwritten).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    camera: CameraArgs,
    /// Photometric preset, optionally with overrides: `nominal`, `night`, `dusk:gain=3`, …
    #[arg(long, default_value = "ideal")]
    photometric: String,
    /// What the PNG frames hold: rgb8, gray8, nv12, nv21, rgba8, bgra8.
    #[arg(long, default_value = "rgb8")]
    format: String,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Give each frame a GPS-like position prior with this 1-σ error, metres.
    #[arg(long)]
    prior_sigma: Option<f64>,
}

/// Runs `sextant scene …`.
pub fn run(args: SceneArgs) -> Result<()> {
    match args.command {
        SceneCommand::Render(r) => {
            let (camera, camera_name) = r.camera.build()?;
            let job = RenderJob {
                scene: Scene::open(&r.scene)
                    .with_context(|| format!("loading scene {}", r.scene))?,
                scene_source: r.scene.clone(),
                camera,
                camera_name,
                trajectory: r.trajectory.parse::<TrajectorySpec>()?,
                photometric: Photometric::parse(&r.photometric)?,
                image_format: r.format.parse::<ImageFormat>()?,
                seed: r.seed,
                prior_sigma_m: r.prior_sigma,
            };
            let summary = render_with_progress(&job, &r.out)?;
            print_summary(&job, &summary);
            Ok(())
        }
        SceneCommand::Check { scene } => {
            let s = Scene::open(&scene).with_context(|| format!("loading scene {scene}"))?;
            let (lo, hi) = s.bounds();
            println!(
                "scene {:?}: {} surfaces, {} textures, digest {}",
                s.name,
                s.surfaces.len(),
                s.textures.len(),
                s.digest
            );
            println!(
                "bounds: x {:.2}..{:.2}  y {:.2}..{:.2}  z {:.2}..{:.2} m (z up)",
                lo.x, hi.x, lo.y, hi.y, lo.z, hi.z
            );
            for (name, t) in s.texture_names.iter().zip(&s.textures) {
                println!(
                    "texture {name}: {}x{}, {} mip levels",
                    t.width(),
                    t.height(),
                    t.levels()
                );
            }
            if let Some(g) = s.geo_anchor {
                println!("geo anchor: lat {} lon {} alt {}", g.lat, g.lon, g.alt);
            }
            Ok(())
        }
        SceneCommand::List => {
            println!("sample scenes:       {}", SAMPLE_NAMES.join(", "));
            println!("camera presets:      {}", CAMERA_PRESETS.join(", "));
            println!(
                "photometric presets: {} (override: PRESET:exposure=,gain=,gamma=,full_well=,read_noise=,blur_deg=,blur_shift=,blur_samples=)",
                PRESETS.join(", ")
            );
            println!("trajectories:");
            println!(
                "  orbit:frames=24,radius=R,height=H,center=X:Y:Z,start_deg=0,sweep_deg=360,fps=10"
            );
            println!(
                "  walk:frames=40,path=X:Y/X:Y/...,height=H,head_deg=3,bob=0.02,look_ahead=1.5,fps=10"
            );
            println!(
                "  random:frames=30,min_coverage=0.85,min_distance=0.8,max_distance=25,roll_deg=5,fps=10"
            );
            Ok(())
        }
    }
}

/// A progress bar on stderr (hidden when `quiet`).
pub fn progress_bar(total: u64, label: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {label} [{{bar:30}}] {{pos}}/{{len}} ({{per_sec}}, eta {{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// Renders `job` into `out` with a progress bar on stderr.
pub fn render_with_progress(job: &RenderJob, out: &std::path::Path) -> Result<RenderSummary> {
    if job.trajectory.frames() == 0 {
        bail!("no frames to render");
    }
    let bar = ProgressBar::new(job.trajectory.frames() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} rendering [{bar:30}] {pos}/{len} frames ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    tracing::info!(scene = %job.scene.name, trajectory = %job.trajectory, out = %out.display(), "rendering session");
    let started = Instant::now();
    let result = render_session(job, out, &mut |done, _| bar.set_position(done as u64));
    bar.finish_and_clear();
    let summary = result.with_context(|| format!("rendering into {}", out.display()))?;
    tracing::info!(
        frames = summary.frames,
        seconds = started.elapsed().as_secs_f64(),
        "session written"
    );
    Ok(summary)
}

/// Mean, min and max of a list of seconds, in milliseconds.
pub fn ms_stats(v: &[f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    (mean * 1e3, min * 1e3, max * 1e3)
}

/// Prints what a render did.
pub fn print_summary(job: &RenderJob, s: &RenderSummary) {
    let (mean, min, max) = ms_stats(&s.capture_s);
    let (wmean, _, _) = ms_stats(&s.write_s);
    println!(
        "scene:       {} ({} surfaces, {})",
        job.scene.name,
        job.scene.surfaces.len(),
        job.scene.digest
    );
    println!(
        "camera:      {} {}x{} fx={:.1} fy={:.1}{}",
        job.camera_name,
        s.width,
        s.height,
        job.camera.fx(),
        job.camera.fy(),
        if job.camera.is_pinhole() {
            ""
        } else {
            " (Brown–Conrady distortion)"
        }
    );
    println!("trajectory:  {}", job.trajectory);
    println!(
        "photometric: {}   format: {}   seed: {}",
        job.photometric.preset, job.image_format, job.seed
    );
    println!(
        "frames:      {} rendered, {mean:.1} ms/frame (min {min:.1}, max {max:.1}), writing {wmean:.1} ms/frame",
        s.frames
    );
    println!("session:     {}", s.session_json.display());
    println!(
        "             frames/*.png, depth/*.png (16-bit mm), render.json in {}",
        s.dir.display()
    );
}
