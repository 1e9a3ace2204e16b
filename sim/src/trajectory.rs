//! Camera trajectories: walk-through, orbit and random views — seeded and deterministic.
//!
//! Each generator returns a [`Trajectory`]: world-to-camera poses plus timestamps (`i / fps`).
//! Unset parameters default to the scene's view hints ([`crate::scene::Views`]). The command line
//! spells a trajectory as `KIND:key=value,…`:
//!
//! - `orbit:frames=24,radius=4,height=1.6,center=3:2.5:1.4,start_deg=0,sweep_deg=360,fps=10`:
//!   a circle around `center`, looking at it.
//! - `walk:frames=40,path=1:1/5:1/5:4,height=1.6,head_deg=3,bob=0.02,look_ahead=1.5,fps=10`:
//!   a smooth (Catmull–Rom) walk through `x:y` waypoints at constant speed, looking ahead, with
//!   small seeded head motion (yaw/pitch sway and step bob).
//! - `random:frames=30,min_coverage=0.85,min_distance=0.8,max_distance=25,fps=10`: eyes uniform in
//!   the scene's view volume, each looking at a random point of a random surface (area weighted)
//!   that it can see, with a little roll; views whose rays mostly miss every surface, or that
//!   start closer than 0.25 m to a surface, are rejected.

use std::fmt;
use std::str::FromStr;

use nalgebra::{Point3, UnitQuaternion, Vector2, Vector3};
use serde::Serialize;
use sextant_runtime::{Camera, Pose};

use crate::error::{Result, SimError};
use crate::render::{Rendered, Renderer, raycast};
use crate::rng::SimRng;
use crate::scene::Scene;
use crate::spec::KeyValueSpec;

/// Poses with timestamps.
#[derive(Clone, Debug, PartialEq)]
pub struct Trajectory {
    /// World-to-camera poses.
    pub poses: Vec<Pose>,
    /// Seconds from the first frame.
    pub timestamps: Vec<f64>,
}

/// Orbit around a centre, looking at it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OrbitConfig {
    /// Number of frames.
    pub frames: usize,
    /// Radius in metres (default: scene hint).
    pub radius: Option<f64>,
    /// Camera height (z) in metres (default: scene eye height).
    pub height: Option<f64>,
    /// Centre and look-at point (default: scene hint).
    pub center: Option<[f64; 3]>,
    /// Angle of the first frame, degrees from +x.
    pub start_deg: f64,
    /// Angle covered, degrees (360 = full circle, last frame one step short of the first).
    pub sweep_deg: f64,
    /// Frames per second for the timestamps.
    pub fps: f64,
}

/// A walk through waypoints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WalkConfig {
    /// Number of frames.
    pub frames: usize,
    /// Waypoints `(x, y)` (default: scene hint).
    pub path: Option<Vec<[f64; 2]>>,
    /// Eye height (default: scene eye height).
    pub height: Option<f64>,
    /// Amplitude of the head's yaw sway, degrees (pitch sways half as much).
    pub head_deg: f64,
    /// Vertical bob amplitude, metres.
    pub bob: f64,
    /// Distance ahead along the path the camera looks at, metres.
    pub look_ahead: f64,
    /// Frames per second for the timestamps.
    pub fps: f64,
}

/// Random views inside the scene's view volume.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RandomConfig {
    /// Number of frames.
    pub frames: usize,
    /// Minimum fraction of pixels that must see a surface.
    pub min_coverage: f64,
    /// Minimum distance to the looked-at point, metres.
    pub min_distance: f64,
    /// Maximum distance to the looked-at point, metres.
    pub max_distance: f64,
    /// Maximum roll, degrees.
    pub roll_deg: f64,
    /// Frames per second for the timestamps.
    pub fps: f64,
}

/// A validated trajectory request.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrajectorySpec {
    /// See [`OrbitConfig`].
    Orbit(OrbitConfig),
    /// See [`WalkConfig`].
    Walk(WalkConfig),
    /// See [`RandomConfig`].
    Random(RandomConfig),
}

const MAX_FRAMES: u64 = 100_000;

impl FromStr for TrajectorySpec {
    type Err = SimError;

    fn from_str(spec: &str) -> Result<TrajectorySpec> {
        let err = |m: String| SimError::Trajectory {
            spec: spec.to_string(),
            message: m,
        };
        let s = KeyValueSpec::parse(spec).map_err(err)?;
        let frames = match s.u64("frames").map_err(err)? {
            None => 24,
            Some(0) => return Err(err("frames must be at least 1".into())),
            Some(n) if n > MAX_FRAMES => {
                return Err(err(format!("frames must be at most {MAX_FRAMES}")));
            }
            Some(n) => n as usize,
        };
        let fps = s.f64("fps").map_err(err)?.unwrap_or(10.0);
        if fps <= 0.0 {
            return Err(err(format!("fps must be positive, got {fps}")));
        }
        let positive = |key: &str| -> Result<Option<f64>> {
            match s.f64(key).map_err(err)? {
                Some(v) if v <= 0.0 => Err(err(format!("{key} must be positive, got {v}"))),
                v => Ok(v),
            }
        };
        let non_negative = |key: &str, default: f64| -> Result<f64> {
            match s.f64(key).map_err(err)? {
                Some(v) if v < 0.0 => Err(err(format!("{key} must be non-negative, got {v}"))),
                v => Ok(v.unwrap_or(default)),
            }
        };
        match s.kind.as_str() {
            "orbit" => {
                s.only(&[
                    "frames",
                    "radius",
                    "height",
                    "center",
                    "start_deg",
                    "sweep_deg",
                    "fps",
                ])
                .map_err(err)?;
                let center = s.points("center", 3).map_err(err)?;
                let center = match center.as_deref() {
                    None => None,
                    Some([c]) => Some([c[0], c[1], c[2]]),
                    Some(_) => return Err(err("center takes one x:y:z point".into())),
                };
                Ok(TrajectorySpec::Orbit(OrbitConfig {
                    frames,
                    radius: positive("radius")?,
                    height: s.f64("height").map_err(err)?,
                    center,
                    start_deg: s.f64("start_deg").map_err(err)?.unwrap_or(0.0),
                    sweep_deg: s.f64("sweep_deg").map_err(err)?.unwrap_or(360.0),
                    fps,
                }))
            }
            "walk" => {
                s.only(&[
                    "frames",
                    "path",
                    "height",
                    "head_deg",
                    "bob",
                    "look_ahead",
                    "fps",
                ])
                .map_err(err)?;
                let path = s
                    .points("path", 2)
                    .map_err(err)?
                    .map(|ps| ps.iter().map(|p| [p[0], p[1]]).collect::<Vec<_>>());
                if path.as_ref().is_some_and(|p| p.len() < 2) {
                    return Err(err(
                        "path needs at least two waypoints, e.g. path=0:0/4:0".into()
                    ));
                }
                Ok(TrajectorySpec::Walk(WalkConfig {
                    frames,
                    path,
                    height: s.f64("height").map_err(err)?,
                    head_deg: non_negative("head_deg", 3.0)?,
                    bob: non_negative("bob", 0.02)?,
                    look_ahead: positive("look_ahead")?.unwrap_or(1.5),
                    fps,
                }))
            }
            "random" => {
                s.only(&[
                    "frames",
                    "min_coverage",
                    "min_distance",
                    "max_distance",
                    "roll_deg",
                    "fps",
                ])
                .map_err(err)?;
                let min_coverage = non_negative("min_coverage", 0.85)?;
                if min_coverage > 1.0 {
                    return Err(err(format!(
                        "min_coverage must be in [0, 1], got {min_coverage}"
                    )));
                }
                let min_distance = positive("min_distance")?.unwrap_or(0.8);
                let max_distance = positive("max_distance")?.unwrap_or(25.0);
                if max_distance <= min_distance {
                    return Err(err("max_distance must exceed min_distance".into()));
                }
                Ok(TrajectorySpec::Random(RandomConfig {
                    frames,
                    min_coverage,
                    min_distance,
                    max_distance,
                    roll_deg: non_negative("roll_deg", 5.0)?,
                    fps,
                }))
            }
            other => Err(err(format!(
                "unknown trajectory kind {other:?} (expected orbit, walk or random)"
            ))),
        }
    }
}

impl fmt::Display for TrajectorySpec {
    /// The canonical spelling (every parameter that was set, in a fixed order).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrajectorySpec::Orbit(c) => {
                write!(
                    f,
                    "orbit:frames={},start_deg={},sweep_deg={},fps={}",
                    c.frames, c.start_deg, c.sweep_deg, c.fps
                )?;
                if let Some(r) = c.radius {
                    write!(f, ",radius={r}")?;
                }
                if let Some(h) = c.height {
                    write!(f, ",height={h}")?;
                }
                if let Some([x, y, z]) = c.center {
                    write!(f, ",center={x}:{y}:{z}")?;
                }
                Ok(())
            }
            TrajectorySpec::Walk(c) => {
                write!(
                    f,
                    "walk:frames={},head_deg={},bob={},look_ahead={},fps={}",
                    c.frames, c.head_deg, c.bob, c.look_ahead, c.fps
                )?;
                if let Some(h) = c.height {
                    write!(f, ",height={h}")?;
                }
                if let Some(p) = &c.path {
                    let pts: Vec<String> = p.iter().map(|[x, y]| format!("{x}:{y}")).collect();
                    write!(f, ",path={}", pts.join("/"))?;
                }
                Ok(())
            }
            TrajectorySpec::Random(c) => write!(
                f,
                "random:frames={},min_coverage={},min_distance={},max_distance={},roll_deg={},fps={}",
                c.frames, c.min_coverage, c.min_distance, c.max_distance, c.roll_deg, c.fps
            ),
        }
    }
}

impl TrajectorySpec {
    /// Number of frames requested.
    pub fn frames(&self) -> usize {
        match self {
            TrajectorySpec::Orbit(c) => c.frames,
            TrajectorySpec::Walk(c) => c.frames,
            TrajectorySpec::Random(c) => c.frames,
        }
    }

    /// Generates the poses for `scene` (`camera` is used by `random` to check what a view sees).
    pub fn generate(&self, scene: &Scene, camera: &Camera, seed: u64) -> Result<Trajectory> {
        let err = |m: String| SimError::Trajectory {
            spec: self.to_string(),
            message: m,
        };
        match self {
            TrajectorySpec::Orbit(c) => orbit(scene, c).map_err(err),
            TrajectorySpec::Walk(c) => walk(scene, c, seed).map_err(err),
            TrajectorySpec::Random(c) => random(scene, camera, c, seed).map_err(err),
        }
    }
}

type Gen = std::result::Result<Trajectory, String>;

fn timestamps(n: usize, fps: f64) -> Vec<f64> {
    (0..n).map(|i| i as f64 / fps).collect()
}

fn orbit(scene: &Scene, c: &OrbitConfig) -> Gen {
    let v = &scene.views;
    let center = c.center.map(Point3::from).unwrap_or(v.center);
    let radius = c.radius.unwrap_or(v.radius);
    let height = c.height.unwrap_or(v.eye_height);
    let step = if (c.sweep_deg.abs() - 360.0).abs() < 1e-9 || c.frames == 1 {
        c.sweep_deg / c.frames as f64
    } else {
        c.sweep_deg / (c.frames - 1) as f64
    };
    let mut poses = Vec::with_capacity(c.frames);
    for i in 0..c.frames {
        let a = (c.start_deg + step * i as f64).to_radians();
        let eye = Point3::new(
            center.x + radius * a.cos(),
            center.y + radius * a.sin(),
            height,
        );
        poses.push(Pose::look_at(&eye, &center, &Scene::world_up()).map_err(|e| e.to_string())?);
    }
    Ok(Trajectory {
        poses,
        timestamps: timestamps(c.frames, c.fps),
    })
}

/// Uniform Catmull–Rom spline through `pts` (end points repeated), densely sampled.
fn spline(pts: &[Vector2<f64>]) -> Vec<Vector2<f64>> {
    let n = pts.len();
    let at = |i: isize| pts[i.clamp(0, n as isize - 1) as usize];
    let mut out = Vec::new();
    for i in 0..n - 1 {
        let (p0, p1, p2, p3) = (
            at(i as isize - 1),
            at(i as isize),
            at(i as isize + 1),
            at(i as isize + 2),
        );
        for k in 0..64 {
            let t = k as f64 / 64.0;
            let (t2, t3) = (t * t, t * t * t);
            out.push(
                (p1 * 2.0
                    + (p2 - p0) * t
                    + (p0 * 2.0 - p1 * 5.0 + p2 * 4.0 - p3) * t2
                    + (p1 * 3.0 - p0 - p2 * 3.0 + p3) * t3)
                    * 0.5,
            );
        }
    }
    out.push(pts[n - 1]);
    out
}

/// Position and unit tangent at arc length `s` along a polyline with cumulative lengths `cum`
/// (extrapolated along the end tangents beyond either end).
fn along(poly: &[Vector2<f64>], cum: &[f64], s: f64) -> (Vector2<f64>, Vector2<f64>) {
    let n = poly.len();
    let i = match cum.binary_search_by(|c| c.total_cmp(&s)) {
        Ok(i) => i.min(n - 2),
        Err(i) => i.clamp(1, n - 1) - 1,
    };
    let seg = poly[i + 1] - poly[i];
    let len = cum[i + 1] - cum[i];
    let dir = if len > 0.0 { seg / len } else { Vector2::x() };
    (poly[i] + dir * (s - cum[i]), dir)
}

fn walk(scene: &Scene, c: &WalkConfig, seed: u64) -> Gen {
    let pts: Vec<Vector2<f64>> = c
        .path
        .clone()
        .unwrap_or_else(|| scene.views.path.clone())
        .iter()
        .map(|p| Vector2::new(p[0], p[1]))
        .collect();
    let height = c.height.unwrap_or(scene.views.eye_height);
    // Drop repeated waypoints so every segment has a direction.
    let mut clean: Vec<Vector2<f64>> = Vec::new();
    for p in pts {
        if clean.last().is_none_or(|q| (p - q).norm() > 1e-6) {
            clean.push(p);
        }
    }
    if clean.len() < 2 {
        return Err("path needs two distinct waypoints".into());
    }
    let poly = spline(&clean);
    let mut cum = vec![0.0];
    for w in poly.windows(2) {
        cum.push(cum[cum.len() - 1] + (w[1] - w[0]).norm());
    }
    let total = cum[cum.len() - 1];
    let mut rng = SimRng::derive(seed, 0x5741_4c4b);
    let (ph1, ph2, ph3) = (
        rng.range(0.0, 6.3),
        rng.range(0.0, 6.3),
        rng.range(0.0, 6.3),
    );
    let step_len = 0.7; // metres per step, for the bob
    let mut poses = Vec::with_capacity(c.frames);
    for i in 0..c.frames {
        let s = if c.frames == 1 {
            0.0
        } else {
            total * i as f64 / (c.frames - 1) as f64
        };
        let (p, _) = along(&poly, &cum, s);
        let (q, _) = along(&poly, &cum, s + c.look_ahead);
        let ahead = q - p;
        let heading = if ahead.norm() > 1e-9 {
            ahead.y.atan2(ahead.x)
        } else {
            along(&poly, &cum, s).1.y.atan2(along(&poly, &cum, s).1.x)
        };
        let phase = s / total.max(1e-9) * std::f64::consts::TAU;
        let yaw = heading + c.head_deg.to_radians() * (1.3 * phase + ph1).sin();
        let pitch =
            (-3.0f64).to_radians() + 0.5 * c.head_deg.to_radians() * (2.1 * phase + ph2).sin();
        let bob = c.bob * (std::f64::consts::TAU * s / step_len + ph3).sin();
        let eye = Point3::new(p.x, p.y, height + bob);
        let dir = Vector3::new(
            pitch.cos() * yaw.cos(),
            pitch.cos() * yaw.sin(),
            pitch.sin(),
        );
        poses.push(
            Pose::look_at(&eye, &(eye + dir), &Scene::world_up()).map_err(|e| e.to_string())?,
        );
    }
    Ok(Trajectory {
        poses,
        timestamps: timestamps(c.frames, c.fps),
    })
}

fn random(scene: &Scene, camera: &Camera, c: &RandomConfig, seed: u64) -> Gen {
    let v = &scene.views;
    let mut rng = SimRng::derive(seed, 0x5241_4e44);
    let areas: Vec<f64> = scene.surfaces.iter().map(|s| s.area()).collect();
    let total_area: f64 = areas.iter().sum();
    // A small probe camera with the same field of view checks coverage cheaply.
    let probe_scale = (80.0 / f64::from(camera.width().max(1))).min(1.0);
    let probe = camera.scaled(probe_scale).map_err(|e| e.to_string())?;
    let mut renderer = Renderer::new(&probe);
    let mut view = Rendered::new(probe.width(), probe.height());
    let max_tries = 2000 * c.frames.max(1);
    let mut tries = 0;
    let mut poses = Vec::with_capacity(c.frames);
    while poses.len() < c.frames {
        tries += 1;
        if tries > max_tries {
            return Err(format!(
                "found only {} of {} views after {max_tries} tries; lower min_coverage or check the scene's view volume",
                poses.len(),
                c.frames
            ));
        }
        let eye = Point3::new(
            rng.range(v.volume_min.x, v.volume_max.x.max(v.volume_min.x + 1e-9)),
            rng.range(v.volume_min.y, v.volume_max.y.max(v.volume_min.y + 1e-9)),
            rng.range(v.volume_min.z, v.volume_max.z.max(v.volume_min.z + 1e-9)),
        );
        let mut pick = rng.uniform() * total_area;
        let mut si = 0;
        while si + 1 < areas.len() && pick > areas[si] {
            pick -= areas[si];
            si += 1;
        }
        let surf = &scene.surfaces[si];
        let target = surf.point(rng.range(0.1, 0.9), rng.range(0.1, 0.9));
        let dist = (target - eye).norm();
        if !(dist >= c.min_distance && dist <= c.max_distance) {
            continue;
        }
        // The target must be the first thing along the line of sight.
        let dir = (target - eye) / dist;
        match raycast(scene, &eye, &dir) {
            Some((t, hit)) if hit == si || (t - dist).abs() < 1e-6 * dist.max(1.0) => {}
            _ => continue,
        }
        let Ok(base) = Pose::look_at(&eye, &target, &Scene::world_up()) else {
            continue;
        };
        let roll = rng.range(-c.roll_deg, c.roll_deg).to_radians();
        let pose = Pose::from_parts(
            UnitQuaternion::from_axis_angle(&Vector3::z_axis(), roll),
            Vector3::zeros(),
        )
        .compose(&base);
        renderer.render_into(scene, &pose, &mut view);
        let too_close = view.depth.iter().any(|&d| d > 0.0 && d < 0.25);
        // Seeing mostly the backs of surfaces means the eye is inside a closed object (a box).
        let back: Vec<bool> = scene
            .surfaces
            .iter()
            .map(|s| s.u.cross(&s.v).dot(&(eye.coords - s.origin)) < 0.0)
            .collect();
        let backs = view
            .surface
            .iter()
            .filter(|&&i| i != u32::MAX && back[i as usize])
            .count();
        let inside = backs as f64 > 0.3 * view.surface.len() as f64;
        if view.coverage() < c.min_coverage || too_close || inside {
            continue;
        }
        poses.push(pose);
    }
    Ok(Trajectory {
        poses,
        timestamps: timestamps(c.frames, c.fps),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_are_clear() {
        for (spec, needle) in [
            ("spiral:frames=3", "unknown trajectory kind"),
            ("orbit:frames=0", "at least 1"),
            ("orbit:radius=-1", "positive"),
            ("orbit:frames=3,colour=red", "unknown key"),
            ("walk:path=1:1", "two waypoints"),
            ("walk:path=1:1/2", "2 numbers"),
            ("random:min_coverage=2", "[0, 1]"),
            ("orbit:frames=x", "integer"),
        ] {
            let e = spec.parse::<TrajectorySpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }

    #[test]
    fn display_round_trips() {
        for spec in [
            "orbit:frames=5,radius=2,center=1:2:1.5",
            "walk:frames=7,path=0:0/3:1/4:4,height=1.5",
            "random:frames=3",
        ] {
            let a: TrajectorySpec = spec.parse().unwrap();
            let b: TrajectorySpec = a.to_string().parse().unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn spline_passes_through_waypoints() {
        let pts = [
            Vector2::new(0.0, 0.0),
            Vector2::new(2.0, 0.0),
            Vector2::new(2.0, 3.0),
        ];
        let s = spline(&pts);
        assert_eq!(s[0], pts[0]);
        assert!((s[64] - pts[1]).norm() < 1e-12);
        assert_eq!(s[s.len() - 1], pts[2]);
    }
}
