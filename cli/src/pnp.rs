//! `sextant pnp`: solve absolute-pose problem files (`pnp-problem/1`, see
//! `shared/formats/pnp.md`) and write result files, so Sextant's solver can be compared with
//! PoseLib, COLMAP and OpenCV on exactly the same data (`scripts/compare_pnp.py`).
//!
//! Timing: `time_s` is the median wall time of `estimate_absolute_pose` alone (robust estimation +
//! refinement) over `--reps` runs with a warm workspace, single thread; parsing, undistortion set-up
//! of the camera and writing are outside it. `cpu_s` is the same in thread CPU time, read with
//! `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` through a two-line FFI declaration (std has no thread
//! clock; no libc crate needed); on platforms without it `cpu_s` repeats the wall time.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use nalgebra::{Vector2, Vector3};
use serde::{Deserialize, Serialize};
use sextant_runtime::geometry::{
    AbsolutePose, AbsolutePoseOptions, AbsolutePoseWorkspace, CameraPose, Gravity, RansacOptions,
    estimate_absolute_pose,
};
use sextant_runtime::{Camera, Distortion};

/// Arguments of `sextant pnp`.
#[derive(Debug, clap::Args)]
pub struct PnpArgs {
    /// Problem files (`pnp-problem/1` JSON), or folders whose `*.json` files are problems.
    #[arg(required = true)]
    pub problems: Vec<PathBuf>,
    /// Write one result file per problem into this folder (same file name); otherwise print
    /// one result per line on stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Use the problem's `gravity` (upright 2-point solver); problems without it use P3P.
    #[arg(long)]
    pub gravity: bool,
    /// Timed repetitions per problem (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub reps: u32,
    /// RANSAC seed.
    #[arg(long, default_value_t = RansacOptions::default().seed)]
    pub seed: u64,
    /// RANSAC confidence.
    #[arg(long, default_value_t = RansacOptions::default().confidence)]
    pub confidence: f64,
    /// RANSAC iteration cap.
    #[arg(long, default_value_t = RansacOptions::default().max_iterations)]
    pub max_iterations: u32,
    /// Fewest inliers for a pose to be reported (the runtime's localiser uses more).
    #[arg(long, default_value_t = CLI_MIN_INLIERS)]
    pub min_inliers: usize,
}

/// Default `--min-inliers`: like the other solvers, report any pose with support beyond the
/// minimal sample.
pub const CLI_MIN_INLIERS: usize = 4;

/// Camera of a problem file: `pinhole`, or `opencv` with Brown–Conrady coefficients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CameraJson {
    /// `pinhole` or `opencv`.
    pub model: String,
    /// Width (pixels).
    pub width: u32,
    /// Height (pixels).
    pub height: u32,
    /// Focal x.
    pub fx: f64,
    /// Focal y.
    pub fy: f64,
    /// Principal point x.
    pub cx: f64,
    /// Principal point y.
    pub cy: f64,
    /// Radial k1 (opencv model).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub k1: f64,
    /// Radial k2.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub k2: f64,
    /// Tangential p1.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub p1: f64,
    /// Tangential p2.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub p2: f64,
    /// Radial k3.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub k3: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl CameraJson {
    /// The runtime camera.
    pub fn to_camera(&self) -> anyhow::Result<Camera> {
        let d = Distortion {
            k1: self.k1,
            k2: self.k2,
            k3: self.k3,
            p1: self.p1,
            p2: self.p2,
        };
        match self.model.as_str() {
            "pinhole" if d == Distortion::default() => Ok(Camera::pinhole(
                self.width,
                self.height,
                self.fx,
                self.fy,
                self.cx,
                self.cy,
            )?),
            "pinhole" | "opencv" => Ok(Camera::new(
                self.width,
                self.height,
                self.fx,
                self.fy,
                self.cx,
                self.cy,
                d,
            )?),
            other => bail!("unsupported camera model {other:?} (pinhole, opencv)"),
        }
    }
}

/// Ground truth of a problem (evaluation only; the solver never reads it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GtJson {
    /// Rotation, rows.
    #[serde(rename = "R")]
    pub r: [[f64; 3]; 3],
    /// Translation.
    pub t: [f64; 3],
    /// True inlier indices.
    #[serde(default)]
    pub inliers: Vec<usize>,
}

/// A `pnp-problem/1` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProblemFile {
    /// Always `pnp-problem/1`.
    pub format: String,
    /// Problem id.
    #[serde(default)]
    pub id: String,
    /// Camera.
    pub camera: CameraJson,
    /// Inlier threshold (pixels).
    pub inlier_threshold_px: f64,
    /// Pixels.
    pub points2d: Vec<[f64; 2]>,
    /// World points.
    pub points3d: Vec<[f64; 3]>,
    /// World up in world coordinates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_up: Option<[f64; 3]>,
    /// World up seen in the camera (IMU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gravity: Option<[f64; 3]>,
    /// Ground truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gt: Option<GtJson>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

/// A result file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultFile {
    /// Rotation rows, or null.
    #[serde(rename = "R")]
    pub r: Option<[[f64; 3]; 3]>,
    /// Translation, or null.
    pub t: Option<[f64; 3]>,
    /// Inlier indices.
    pub inliers: Vec<usize>,
    /// Median wall seconds of the estimation.
    pub time_s: f64,
    /// Median thread-CPU seconds of the estimation.
    pub cpu_s: f64,
    /// Timed runs.
    pub reps: u32,
    /// Whether a pose was found.
    pub ok: bool,
    /// Which solver produced it.
    #[serde(default)]
    pub solver: String,
    /// Extra diagnostics (ignored by the comparison).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

/// Reads and validates a problem file.
pub fn read_problem(path: &Path) -> anyhow::Result<ProblemFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let p: ProblemFile =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if p.format != "pnp-problem/1" {
        bail!(
            "{}: format {:?}, expected \"pnp-problem/1\"",
            path.display(),
            p.format
        );
    }
    if p.points2d.len() != p.points3d.len() {
        bail!(
            "{}: {} points2d but {} points3d",
            path.display(),
            p.points2d.len(),
            p.points3d.len()
        );
    }
    Ok(p)
}

/// Thread CPU time in seconds, where the platform offers a per-thread clock.
pub fn thread_cpu_seconds() -> Option<f64> {
    sextant_runtime::clock::thread_cpu_seconds()
}

/// Median of a non-empty slice (sorted in place); 0 for an empty one.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

/// Everything needed to solve one problem repeatedly.
pub struct Prepared {
    /// Camera.
    pub camera: Camera,
    /// Pixels.
    pub points2d: Vec<Vector2<f64>>,
    /// World points.
    pub points3d: Vec<Vector3<f64>>,
    /// Gravity, when present and requested.
    pub gravity: Option<Gravity>,
    /// Options.
    pub options: AbsolutePoseOptions,
}

impl Prepared {
    /// From a problem file.
    pub fn new(
        p: &ProblemFile,
        use_gravity: bool,
        ransac: RansacOptions,
        min_inliers: usize,
    ) -> anyhow::Result<Prepared> {
        let camera = p.camera.to_camera()?;
        let gravity = match (use_gravity, p.gravity) {
            (true, Some(g)) => Some(Gravity {
                up_in_camera: Vector3::from(g),
                up_in_world: Vector3::from(p.world_up.unwrap_or([0.0, 0.0, 1.0])),
            }),
            _ => None,
        };
        Ok(Prepared {
            camera,
            points2d: p
                .points2d
                .iter()
                .map(|q| Vector2::new(q[0], q[1]))
                .collect(),
            points3d: p
                .points3d
                .iter()
                .map(|q| Vector3::new(q[0], q[1], q[2]))
                .collect(),
            gravity,
            options: AbsolutePoseOptions {
                threshold_px: p.inlier_threshold_px,
                ransac,
                min_inliers,
                ..Default::default()
            },
        })
    }

    /// Solves `reps` times (≥ 1); returns the last outcome, median wall and CPU seconds.
    pub fn solve_timed(
        &self,
        reps: u32,
        ws: &mut AbsolutePoseWorkspace,
    ) -> (
        Result<AbsolutePose, sextant_runtime::geometry::GeometryError>,
        f64,
        f64,
    ) {
        let mut wall = Vec::with_capacity(reps as usize);
        let mut cpu = Vec::with_capacity(reps as usize);
        let mut last = None;
        for _ in 0..reps.max(1) {
            let c0 = thread_cpu_seconds();
            let t0 = Instant::now();
            let r = estimate_absolute_pose(
                &self.camera,
                &self.points2d,
                &self.points3d,
                self.gravity.as_ref(),
                &self.options,
                ws,
            );
            let dt = t0.elapsed().as_secs_f64();
            let c1 = thread_cpu_seconds();
            wall.push(dt);
            cpu.push(match (c0, c1) {
                (Some(a), Some(b)) => b - a,
                _ => dt,
            });
            last = Some(r);
        }
        let last = last.unwrap_or(Err(sextant_runtime::geometry::GeometryError::Degenerate));
        (last, median(&mut wall), median(&mut cpu))
    }
}

/// Builds the result file of one solve.
pub fn result_file(
    outcome: &Result<AbsolutePose, sextant_runtime::geometry::GeometryError>,
    inliers: &[usize],
    time_s: f64,
    cpu_s: f64,
    reps: u32,
    gravity: bool,
) -> ResultFile {
    let solver = if gravity {
        "sextant-up2p"
    } else {
        "sextant-p3p"
    }
    .to_string();
    match outcome {
        Ok(est) => {
            let cp = CameraPose::from_pose(&est.pose);
            let r = [0, 1, 2].map(|i| [cp.r[(i, 0)], cp.r[(i, 1)], cp.r[(i, 2)]]);
            let info = serde_json::json!({
                "num_inliers": est.num_inliers,
                "rms_px": est.rms_reprojection_px,
                "iterations": est.ransac.iterations,
                "models": est.ransac.models,
                "position_sigma_m": est.covariance.map(|c| c.position_sigma_total_m()),
                "rotation_sigma_rad": est.covariance.map(|c| c.rotation_sigma_total_rad()),
            });
            ResultFile {
                r: Some(r),
                t: Some([cp.t.x, cp.t.y, cp.t.z]),
                inliers: inliers.to_vec(),
                time_s,
                cpu_s,
                reps,
                ok: true,
                solver,
                info: Some(info),
            }
        }
        Err(e) => ResultFile {
            r: None,
            t: None,
            inliers: Vec::new(),
            time_s,
            cpu_s,
            reps,
            ok: false,
            solver,
            info: Some(serde_json::json!({ "error": e.to_string() })),
        },
    }
}

/// Pose errors against ground truth: (rotation degrees, relative translation).
pub fn pose_errors(est_r: &[[f64; 3]; 3], est_t: &[f64; 3], gt: &GtJson) -> (f64, f64) {
    let m = |a: &[[f64; 3]; 3]| nalgebra::Matrix3::from_fn(|i, j| a[i][j]);
    let (re, rg) = (m(est_r), m(&gt.r));
    let c = (((re * rg.transpose()).trace() - 1.0) / 2.0).clamp(-1.0, 1.0);
    let te = Vector3::from(*est_t) - Vector3::from(gt.t);
    let tn = Vector3::from(gt.t).norm();
    (c.acos().to_degrees(), te.norm() / tn.max(1e-12))
}

/// Expands folders into their `*.json` files (sorted).
pub fn expand_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("listing {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|q| q.extension().is_some_and(|e| e == "json"))
                .collect();
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Runs `sextant pnp`.
pub fn run(args: PnpArgs) -> anyhow::Result<()> {
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    if !(args.confidence > 0.0 && args.confidence < 1.0) {
        bail!("--confidence must be in (0, 1)");
    }
    let files = expand_inputs(&args.problems)?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let ransac = RansacOptions {
        seed: args.seed,
        confidence: args.confidence,
        max_iterations: args.max_iterations,
        ..Default::default()
    };
    let mut ws = AbsolutePoseWorkspace::new();
    let (mut n_ok, mut n_success, mut n_gt) = (0usize, 0usize, 0usize);
    let mut times = Vec::with_capacity(files.len());
    for path in &files {
        let problem = read_problem(path)?;
        let prep = Prepared::new(&problem, args.gravity, ransac, args.min_inliers)?;
        let (outcome, time_s, cpu_s) = prep.solve_timed(args.reps, &mut ws);
        let res = result_file(
            &outcome,
            ws.inliers(),
            time_s,
            cpu_s,
            args.reps,
            prep.gravity.is_some(),
        );
        times.push(time_s);
        n_ok += usize::from(res.ok);
        if let Some(gt) = &problem.gt {
            n_gt += 1;
            if let (Some(r), Some(t)) = (&res.r, &res.t) {
                let (dr, dt) = pose_errors(r, t, gt);
                n_success += usize::from(dr < 1.0 && dt < 0.01);
            }
        }
        let json = serde_json::to_string(&res)?;
        match &args.out {
            Some(dir) => {
                let name = path.file_name().context("problem path has no file name")?;
                let out = dir.join(name);
                std::fs::write(&out, json + "\n")
                    .with_context(|| format!("writing {}", out.display()))?;
            }
            None => println!("{json}"),
        }
    }
    let med = median(&mut times);
    eprintln!(
        "{} problems: {} posed, median time {:.3} ms{}",
        files.len(),
        n_ok,
        med * 1e3,
        if n_gt > 0 {
            format!(", success {n_success}/{n_gt} (rotation < 1°, translation < 1%)")
        } else {
            String::new()
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn thread_clock_advances_with_work() {
        if let Some(a) = thread_cpu_seconds() {
            let mut x = 0u64;
            for i in 0..5_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            let b = thread_cpu_seconds().expect("clock");
            assert!(b > a);
        }
    }
}
