//! Rendering a whole session: scene × camera × trajectory × photometric × seed → a session folder.
//!
//! This is what `sextant scene render` and `sextant demo` run; it reports progress through a
//! callback so callers choose how to show it. Output bytes depend only on the job (no clocks, no
//! unseeded randomness), so rendering the same job twice gives identical files.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use nalgebra::Vector3;
use serde::Serialize;
use sextant_runtime::{Camera, PixelFormat};

use crate::capture::Capturer;
use crate::encode::{encode, rgb_to_gray};
use crate::error::{Result, SimError};
use crate::photometric::Photometric;
use crate::rng::SimRng;
use crate::scene::Scene;
use crate::session::{FrameImage, FrameRecord, Prior, SessionWriter, write_render_json};
use crate::trajectory::TrajectorySpec;

/// What the session's PNG frames hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    /// 8-bit RGB PNG.
    Rgb8,
    /// A runtime pixel format: `gray8`, `nv12`, `nv21` give a gray PNG (the luma plane, identical
    /// for the three); `rgba8`, `bgra8` give an RGBA PNG. The frame is encoded in that format and
    /// decoded back through the runtime's `Frame`, so it is exactly what the runtime would see.
    Pixel(PixelFormat),
}

impl FromStr for ImageFormat {
    type Err = SimError;

    fn from_str(s: &str) -> Result<ImageFormat> {
        match s.to_ascii_lowercase().as_str() {
            "rgb" | "rgb8" => Ok(ImageFormat::Rgb8),
            other => PixelFormat::from_str(other).map(ImageFormat::Pixel).map_err(|_| {
                SimError::InvalidArgument(format!("unknown image format {s:?} (expected rgb8, gray8, nv12, nv21, rgba8 or bgra8)"))
            }),
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageFormat::Rgb8 => f.write_str("rgb8"),
            ImageFormat::Pixel(p) => f.write_str(p.name()),
        }
    }
}

/// A session to render.
#[derive(Clone, Debug)]
pub struct RenderJob {
    /// The scene.
    pub scene: Scene,
    /// Where the scene came from (a path or `sample:NAME`), for `render.json`.
    pub scene_source: String,
    /// The camera.
    pub camera: Camera,
    /// Camera preset name or `custom`, for `render.json`.
    pub camera_name: String,
    /// The trajectory.
    pub trajectory: TrajectorySpec,
    /// The sensor model.
    pub photometric: Photometric,
    /// What the PNG frames hold.
    pub image_format: ImageFormat,
    /// Seed of every random choice (trajectory, noise, blur, priors).
    pub seed: u64,
    /// When set, each frame gets a position prior: the true centre plus N(0, σ²) per axis.
    pub prior_sigma_m: Option<f64>,
}

/// What a finished job did.
#[derive(Clone, Debug)]
pub struct RenderSummary {
    /// The session folder.
    pub dir: PathBuf,
    /// Path of `session.json`.
    pub session_json: PathBuf,
    /// Frames written.
    pub frames: usize,
    /// Image width.
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// Per-frame capture time (render + photometric), seconds.
    pub capture_s: Vec<f64>,
    /// Per-frame encode + write time, seconds.
    pub write_s: Vec<f64>,
}

#[derive(Serialize)]
struct RenderInfo<'a> {
    format: &'static str,
    generator: String,
    scene: SceneInfo<'a>,
    world_up: [f64; 3],
    camera: &'a str,
    trajectory: String,
    trajectory_config: &'a TrajectorySpec,
    photometric: &'a Photometric,
    image_format: String,
    seed: u64,
    prior_sigma_m: Option<f64>,
    frames: usize,
}

#[derive(Serialize)]
struct SceneInfo<'a> {
    name: &'a str,
    source: &'a str,
    digest: &'a str,
    surfaces: usize,
    textures: &'a [String],
}

/// Renders `job` into `out` (created if needed), calling `progress(done, total)` after each frame.
pub fn render_session(
    job: &RenderJob,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RenderSummary> {
    job.photometric.validate()?;
    if let Some(s) = job.prior_sigma_m
        && !(s.is_finite() && s > 0.0)
    {
        return Err(SimError::InvalidArgument(format!(
            "prior sigma must be positive, got {s}"
        )));
    }
    if let ImageFormat::Pixel(PixelFormat::Nv12 | PixelFormat::Nv21) = job.image_format
        && (!job.camera.width().is_multiple_of(2) || !job.camera.height().is_multiple_of(2))
    {
        return Err(SimError::InvalidArgument(format!(
            "{} needs an even image size",
            job.image_format
        )));
    }
    let traj = job.trajectory.generate(&job.scene, &job.camera, job.seed)?;
    let mut writer = SessionWriter::create(out, &job.camera, job.scene.geo_anchor)?;
    let mut capturer = Capturer::new(&job.camera);
    let mut prior_rng = SimRng::derive(job.seed, 0x5052_494f);
    let n = traj.poses.len();
    let (mut capture_s, mut write_s) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (i, (pose, &ts)) in traj.poses.iter().zip(&traj.timestamps).enumerate() {
        let t0 = Instant::now();
        let cap = capturer.capture(&job.scene, pose, &job.photometric, job.seed, i as u64);
        let t1 = Instant::now();
        let gravity = pose.transform_vector(&Scene::world_up());
        let prior = job.prior_sigma_m.map(|s| Prior {
            position: pose.center().coords
                + Vector3::new(prior_rng.normal(), prior_rng.normal(), prior_rng.normal()) * s,
            sigma_m: s,
        });
        let gray;
        let image = match job.image_format {
            ImageFormat::Rgb8 => FrameImage::Rgb(&cap.rgb),
            ImageFormat::Pixel(PixelFormat::Rgba8 | PixelFormat::Bgra8) => {
                FrameImage::Rgba(&cap.rgb)
            }
            ImageFormat::Pixel(PixelFormat::Gray8) => {
                gray = rgb_to_gray(&cap.rgb);
                FrameImage::Gray(&gray)
            }
            ImageFormat::Pixel(f) => {
                gray = encode(&cap.rgb, f)?.as_frame()?.to_gray();
                FrameImage::Gray(&gray)
            }
        };
        writer.add_frame(&FrameRecord {
            image,
            timestamp: ts,
            pose: Some(cap.pose),
            gravity: Some(gravity),
            depth: Some(&cap.depth),
            prior,
        })?;
        capture_s.push((t1 - t0).as_secs_f64());
        write_s.push(t1.elapsed().as_secs_f64());
        progress(i + 1, n);
    }
    let info = RenderInfo {
        format: "sextant-render/1",
        generator: format!("sextant-sim {}", env!("CARGO_PKG_VERSION")),
        scene: SceneInfo {
            name: &job.scene.name,
            source: &job.scene_source,
            digest: &job.scene.digest,
            surfaces: job.scene.surfaces.len(),
            textures: &job.scene.texture_names,
        },
        world_up: [0.0, 0.0, 1.0],
        camera: &job.camera_name,
        trajectory: job.trajectory.to_string(),
        trajectory_config: &job.trajectory,
        photometric: &job.photometric,
        image_format: job.image_format.to_string(),
        seed: job.seed,
        prior_sigma_m: job.prior_sigma_m,
        frames: n,
    };
    write_render_json(out, &info)?;
    let session_json = writer.finish()?;
    Ok(RenderSummary {
        dir: out.to_path_buf(),
        session_json,
        frames: n,
        width: job.camera.width(),
        height: job.camera.height(),
        capture_s,
        write_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_formats_parse_and_print() {
        for s in ["rgb8", "gray8", "nv12", "nv21", "rgba8", "bgra8"] {
            assert_eq!(s.parse::<ImageFormat>().unwrap().to_string(), s);
        }
        assert_eq!("RGB".parse::<ImageFormat>().unwrap(), ImageFormat::Rgb8);
        assert!(
            "yuv420"
                .parse::<ImageFormat>()
                .unwrap_err()
                .to_string()
                .contains("nv12")
        );
    }
}
