//! Sextant's ground-truth scene simulator: textured planar scenes rendered from exact poses.
//!
//! Tests, evaluation and the demo need camera images whose pose and depth are known exactly, and
//! no dataset can be downloaded, so the simulator renders its own. How the pieces fit:
//!
//! - [`scene`]: a scene is a list of textured quads (walls, floors, posters, box faces) in a
//!   **z-up** world, read from TOML (`docs/scene-format.md`) or one of the shipped samples
//!   (`Scene::sample("room" | "facade" | "plaza")`, embedded in the binary). Textures are real
//!   photos, mip-mapped once at load ([`texture`]).
//! - [`trajectory`]: seeded generators of camera poses — walk-through, orbit, random views — and
//!   the compact `orbit:frames=24,radius=4` spelling the CLI uses.
//! - [`render`]: a CPU ray caster. A per-camera ray table (every pixel centre unprojected through
//!   the runtime's Brown–Conrady [`Camera`](sextant_runtime::Camera)) makes distortion free at
//!   render time; quads are binned into 16×16 tiles, intersected per pixel, and the nearest one
//!   shaded with trilinear filtering at the level of detail of the pixel's footprint. Depth is
//!   the hit's z in the camera frame.
//! - [`photometric`] and [`capture`]: exposure, gain, gamma, shot + read noise, motion blur;
//!   presets `ideal`, `nominal`, `dusk`, `night`, `blur`; deterministic from a seed.
//! - [`encode`]: RGB → Gray8 / NV12 / NV21 / RGBA8 / BGRA8, with luma from the runtime's
//!   `rgb_to_luma` so all formats convert to the same gray image.
//! - [`session`]: writes and reads the session format (`shared/formats/session.md`): frames,
//!   16-bit depth in millimetres, poses, intrinsics, gravity, plus `render.json` provenance.
//! - [`job`]: the whole "render a session" job (scene × camera × trajectory × photometric × seed)
//!   that `sextant scene render` and `sextant demo` run; [`cameras`] names a few camera models.
//!
//! ```
//! use sextant_runtime::Camera;
//! use sextant_sim::{Scene, Renderer, trajectory::TrajectorySpec};
//!
//! let scene = Scene::sample("room")?;
//! let camera = Camera::pinhole(64, 48, 50.0, 50.0, 32.0, 24.0)?;
//! let spec: TrajectorySpec = "orbit:frames=2,radius=1.5".parse()?;
//! let traj = spec.generate(&scene, &camera, 7)?;
//! let view = Renderer::new(&camera).render(&scene, &traj.poses[0]);
//! assert!(view.coverage() > 0.9);
//! # Ok::<(), sextant_sim::SimError>(())
//! ```

#![warn(missing_docs)]

pub mod cameras;
pub mod capture;
pub mod digest;
pub mod encode;
pub mod error;
pub mod image;
pub mod job;
pub mod photometric;
pub mod png_io;
pub mod render;
pub mod rng;
pub mod scene;
pub mod session;
pub mod spec;
pub mod texture;
pub mod trajectory;

pub use cameras::camera_preset;
pub use capture::{Capture, Capturer};
pub use error::{Result, SimError};
pub use image::{RgbF32, RgbImage};
pub use job::{ImageFormat, RenderJob, RenderSummary, render_session};
pub use photometric::Photometric;
pub use render::{Rendered, Renderer};
pub use scene::Scene;
pub use trajectory::{Trajectory, TrajectorySpec};
