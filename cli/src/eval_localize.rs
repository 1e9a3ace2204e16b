//! `sextant eval localize`: the localisation benchmark. Renders a mapping pass through a sample
//! scene (an orbit and a walk, nominal light), builds its map, then renders query sessions on
//! other trajectories in slices — nominal, dusk, night, motion blur, strong viewpoint change,
//! another camera with lens distortion — plus frames of a place that is not in the map, and
//! localises each by cold start (every frame alone, with its coarse GPS-like prior) and by
//! tracking (in order, from the previous result). Reports recall at (5 cm, 1°), (25 cm, 2°)
//! and (1 m, 5°) per slice as the Aachen Day-Night / Cambridge benchmarks do, false fixes
//! (> 1 m or > 5°), and p50/p95 latency of both paths.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use sextant_runtime::map::{Map, MapBuildStats, encode_map};
use sextant_sim::session::{Session, read_session};
use sextant_sim::{ImageFormat, Photometric, RenderJob, Scene, TrajectorySpec, camera_preset};

use crate::features::BackendChoice;
use crate::localize::{FrameOutcome, RunMode, SessionRun, localize_session};

/// Arguments of `sextant eval localize`.
#[derive(Debug, Args, Clone)]
pub struct LocalizeEvalArgs {
    /// Sample scene (room, facade, plaza) or a scene file.
    #[arg(long, default_value = "room")]
    pub scene: String,
    /// Frames of each of the two mapping passes (orbit and walk).
    #[arg(long, default_value_t = 60)]
    pub map_frames: usize,
    /// Query frames per slice.
    #[arg(long, default_value_t = 40)]
    pub query_frames: usize,
    /// Slices to run (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    pub slices: Vec<String>,
    /// Working folder (sessions, map, eval.json, report.html).
    #[arg(long, default_value = "./sextant-eval-localize")]
    pub out: PathBuf,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where features and descriptors run (the answers are identical on every backend).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
}

/// One benchmark slice: how its query session is made.
#[derive(Debug, Clone)]
pub struct SliceSpec {
    /// Slice name.
    pub name: &'static str,
    /// What it tests.
    pub about: &'static str,
    /// Photometric preset.
    pub photometric: &'static str,
    /// Camera preset.
    pub camera: &'static str,
    /// Trajectory, `{n}` replaced by the frame count.
    pub trajectory: &'static str,
    /// Scene override (for the out-of-map slice).
    pub scene: Option<&'static str>,
}

/// The standard slices.
pub const SLICES: [SliceSpec; 7] = [
    SliceSpec {
        name: "nominal",
        about: "daylight, a walk at another height than the mapping passes",
        photometric: "nominal",
        camera: "vga",
        trajectory: "walk:frames={n},height=1.45,head_deg=6",
        scene: None,
    },
    SliceSpec {
        name: "dusk",
        about: "dim, warm light, more noise",
        photometric: "dusk",
        camera: "vga",
        trajectory: "walk:frames={n},height=1.45,head_deg=6",
        scene: None,
    },
    SliceSpec {
        name: "night",
        about: "dark and noisy",
        photometric: "night",
        camera: "vga",
        trajectory: "walk:frames={n},height=1.45,head_deg=6",
        scene: None,
    },
    SliceSpec {
        name: "blur",
        about: "motion blur",
        photometric: "blur",
        camera: "vga",
        trajectory: "walk:frames={n},height=1.45,head_deg=6",
        scene: None,
    },
    SliceSpec {
        name: "viewpoint",
        about: "random eyes and gaze directions anywhere in the scene",
        photometric: "nominal",
        camera: "vga",
        trajectory: "random:frames={n},roll_deg=10",
        scene: None,
    },
    SliceSpec {
        name: "distorted",
        about: "another camera: wide lens with Brown–Conrady distortion",
        photometric: "nominal",
        camera: "phone-wide",
        trajectory: "walk:frames={n},height=1.45,head_deg=6",
        scene: None,
    },
    SliceSpec {
        name: "outside",
        about: "a place that is not in the map (the plaza scene, which reuses some of the same photos): every answer must be a failure",
        photometric: "nominal",
        camera: "vga",
        trajectory: "random:frames={n}",
        scene: Some("plaza"),
    },
];

/// Simulated VIO drift in the tracking runs: 2 % of the distance travelled since the last fix.
pub const VIO_DRIFT: f64 = 0.02;

/// Recall thresholds (position metres, rotation degrees), Aachen/Cambridge style.
pub const THRESHOLDS: [(f64, f64); 3] = [(0.05, 1.0), (0.25, 2.0), (1.0, 5.0)];

/// Accuracy and latency of one run (cold or tracking) over a slice.
#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    /// Frames.
    pub frames: usize,
    /// Frames answered with a pose.
    pub localized: usize,
    /// Share of all frames within each threshold.
    pub recall: [f64; 3],
    /// Localised frames off by more than 1 m or 5°.
    pub false_fixes: usize,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 95th-percentile latency, ms.
    pub p95_ms: f64,
    /// Failure reasons and their counts.
    pub failures: Vec<(String, usize)>,
    /// Median per-stage ms: features, describe, retrieval, matching, solve.
    pub stages_ms: [f64; 5],
}

/// One slice's results.
#[derive(Debug, Clone, Serialize)]
pub struct SliceResult {
    /// Slice name.
    pub name: String,
    /// What it tests.
    pub about: String,
    /// Every frame localised alone (cold start with the frame's coarse prior).
    pub cold: RunStats,
    /// Frames in order, tracking from the previous result.
    pub tracking: RunStats,
    /// Ground-truth and estimated camera centres of the tracking run (x, y) for plots.
    #[serde(skip)]
    pub track_xy: Vec<([f64; 2], Option<[f64; 2]>)>,
}

/// The whole benchmark's results.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Scene name.
    pub scene: String,
    /// Mapping frames.
    pub map_frames: usize,
    /// Landmarks in the map.
    pub landmarks: usize,
    /// Map file size.
    pub map_bytes: usize,
    /// Map build time, seconds.
    pub map_build_s: f64,
    /// Map build statistics.
    #[serde(skip)]
    pub build: MapBuildStats,
    /// Per slice.
    pub slices: Vec<SliceResult>,
    /// Mapping camera centres (x, y) for plots.
    #[serde(skip)]
    pub map_xy: Vec<[f64; 2]>,
    /// Landmark positions (x, y), subsampled, for plots.
    #[serde(skip)]
    pub landmarks_xy: Vec<[f32; 2]>,
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

/// Accuracy and latency of a run.
pub fn run_stats(outcomes: &[FrameOutcome]) -> RunStats {
    let mut recall = [0usize; 3];
    let mut false_fixes = 0;
    let mut localized = 0;
    let mut failures: Vec<(String, usize)> = Vec::new();
    for o in outcomes {
        match (&o.loc.outcome, o.truth) {
            (Ok(fix), Some(t)) => {
                localized += 1;
                let dp = fix.pose.center_error(&t);
                let dr = fix.pose.rotation_error(&t).to_degrees();
                for (k, &(p, r)) in THRESHOLDS.iter().enumerate() {
                    if dp <= p && dr <= r {
                        recall[k] += 1;
                    }
                }
                if dp > 1.0 || dr > 5.0 {
                    false_fixes += 1;
                }
            }
            (Ok(_), None) => localized += 1,
            (Err(r), _) => match failures.iter_mut().find(|f| f.0 == r.as_str()) {
                Some(f) => f.1 += 1,
                None => failures.push((r.as_str().to_string(), 1)),
            },
        }
    }
    let n = outcomes.len().max(1) as f64;
    let mut lat: Vec<f64> = outcomes
        .iter()
        .map(|o| o.loc.timings.total_s * 1e3)
        .collect();
    let stage = |f: &dyn Fn(&FrameOutcome) -> f64| {
        let mut v: Vec<f64> = outcomes.iter().map(|o| f(o) * 1e3).collect();
        percentile(&mut v, 0.5)
    };
    let stages_ms = [
        stage(&|o| o.loc.timings.features_s),
        stage(&|o| o.loc.timings.describe_s),
        stage(&|o| o.loc.timings.retrieval_s),
        stage(&|o| o.loc.timings.matching_s),
        stage(&|o| o.loc.timings.solve_s),
    ];
    RunStats {
        frames: outcomes.len(),
        localized,
        recall: recall.map(|c| c as f64 / n),
        false_fixes,
        p50_ms: percentile(&mut lat, 0.5),
        p95_ms: percentile(&mut lat, 0.95),
        failures,
        stages_ms,
    }
}

fn render(
    scene_name: &str,
    camera: &str,
    trajectory: &str,
    photometric: &str,
    seed: u64,
    out: &Path,
) -> Result<Session> {
    let scene = Scene::open(scene_name).with_context(|| format!("loading scene {scene_name}"))?;
    let job = RenderJob {
        scene,
        scene_source: scene_name.to_string(),
        camera: camera_preset(camera)?,
        camera_name: camera.to_string(),
        trajectory: trajectory.parse::<TrajectorySpec>()?,
        photometric: Photometric::parse(photometric)?,
        image_format: ImageFormat::Rgb8,
        seed,
        prior_sigma_m: Some(10.0),
    };
    crate::scene::render_with_progress(&job, out)?;
    Ok(read_session(out)?)
}

/// Runs the benchmark: render, build, localise every slice. `quiet` hides progress bars.
pub fn run_benchmark(args: &LocalizeEvalArgs, quiet: bool) -> Result<EvalReport> {
    let slices: Vec<&SliceSpec> = if args.slices.is_empty() {
        SLICES.iter().collect()
    } else {
        args.slices
            .iter()
            .map(|s| {
                SLICES
                    .iter()
                    .find(|x| x.name == s.as_str())
                    .with_context(|| {
                        let names: Vec<&str> = SLICES.iter().map(|x| x.name).collect();
                        format!("unknown slice {s:?} (expected {})", names.join(", "))
                    })
            })
            .collect::<Result<_>>()?
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let m = args.map_frames;
    let passes = [
        ("map-orbit", format!("orbit:frames={m}")),
        ("map-walk", format!("walk:frames={m}")),
    ];
    let mut sessions = Vec::new();
    for (k, (name, traj)) in passes.iter().enumerate() {
        sessions.push(render(
            &args.scene,
            "vga",
            traj,
            "nominal",
            args.seed.wrapping_add(k as u64),
            &args.out.join(name),
        )?);
    }
    let t = Instant::now();
    let config = crate::map::build_config(1000, 16.0, 6, args.seed, args.backend);
    let (contents, build) = crate::map::build_from_sessions(&sessions, config, true, quiet)?;
    let bytes = encode_map(&contents)?;
    let map_build_s = t.elapsed().as_secs_f64();
    crate::map::write_atomic(&args.out.join("map.sxmap"), &bytes)?;
    let map = Arc::new(Map::from_bytes(&bytes)?);
    let mut localizer = crate::localize::localizer_for(Arc::clone(&map), args.seed, args.backend)?;

    let mut results = Vec::new();
    for (k, s) in slices.iter().enumerate() {
        let dir = args.out.join(format!("query-{}", s.name));
        let traj = s.trajectory.replace("{n}", &args.query_frames.to_string());
        let session = render(
            s.scene.unwrap_or(&args.scene),
            s.camera,
            &traj,
            s.photometric,
            args.seed.wrapping_add(100 + k as u64),
            &dir,
        )?;
        let outside = s.scene.is_some();
        let strip = |mut o: Vec<FrameOutcome>| {
            if outside {
                // Another scene's poses are not ground truth in this map's frame.
                o.iter_mut().for_each(|f| f.truth = None);
            }
            o
        };
        let cold = strip(localize_session(
            &mut localizer,
            &session,
            SessionRun {
                mode: RunMode::Cold,
                use_prior: !outside,
                use_gravity: true,
                vio_drift: None,
                seed: args.seed,
            },
            quiet,
        )?);
        let tracking = strip(localize_session(
            &mut localizer,
            &session,
            SessionRun {
                mode: RunMode::Track,
                use_prior: !outside,
                use_gravity: true,
                vio_drift: Some(VIO_DRIFT),
                seed: args.seed,
            },
            quiet,
        )?);
        let track_xy = tracking
            .iter()
            .filter_map(|o| {
                let t = o.truth?.center();
                let e = o.loc.outcome.as_ref().ok().map(|f| {
                    let c = f.pose.center();
                    [c.x, c.y]
                });
                Some(([t.x, t.y], e))
            })
            .collect();
        std::fs::write(
            dir.join("results-cold.json"),
            crate::localize::results_json(&cold)?,
        )?;
        std::fs::write(
            dir.join("results-tracking.json"),
            crate::localize::results_json(&tracking)?,
        )?;
        results.push(SliceResult {
            name: s.name.to_string(),
            about: s.about.to_string(),
            cold: run_stats(&cold),
            tracking: run_stats(&tracking),
            track_xy,
        });
    }
    let step = (map.len() / 4000).max(1);
    let report = EvalReport {
        scene: args.scene.clone(),
        map_frames: build.frames,
        landmarks: map.len(),
        map_bytes: bytes.len(),
        map_build_s,
        build,
        slices: results,
        map_xy: sessions
            .iter()
            .flat_map(|s| s.frames.iter().filter_map(|f| f.pose))
            .map(|p| {
                let c = p.center();
                [c.x, c.y]
            })
            .collect(),
        landmarks_xy: map
            .positions()
            .iter()
            .step_by(step)
            .map(|p| [p[0], p[1]])
            .collect(),
    };
    std::fs::write(
        args.out.join("eval.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    Ok(report)
}

/// The per-slice table, as printed.
pub fn table(report: &EvalReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "map: {} frames → {} landmarks, {} bytes ({:.1} B/landmark), built in {:.1} s\n",
        report.map_frames,
        report.landmarks,
        report.map_bytes,
        report.map_bytes as f64 / report.landmarks.max(1) as f64,
        report.map_build_s
    ));
    s.push_str(&format!(
        "     ({} verified matches in {} frame pairs; {} landmarks triangulated, {} placed from depth)\n",
        report.build.matches, report.build.pairs, report.build.triangulated, report.build.from_depth
    ));
    s.push_str(
        "slice      | mode  | frames | 5cm,1° | 25cm,2° | 1m,5° | false | p50 ms | p95 ms | failures\n",
    );
    s.push_str(
        "-----------|-------|--------|--------|---------|-------|-------|--------|--------|---------\n",
    );
    for r in &report.slices {
        for (mode, st) in [("cold", &r.cold), ("track", &r.tracking)] {
            let fails: Vec<String> = st
                .failures
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            s.push_str(&format!(
                "{:<10} | {:<5} | {:>6} | {:>5.1}% | {:>6.1}% | {:>4.1}% | {:>5} | {:>6.1} | {:>6.1} | {}\n",
                r.name,
                mode,
                st.frames,
                100.0 * st.recall[0],
                100.0 * st.recall[1],
                100.0 * st.recall[2],
                if r.name == "outside" { st.localized } else { st.false_fixes },
                st.p50_ms,
                st.p95_ms,
                fails.join(", ")
            ));
        }
    }
    s.push_str(
        "(\"false\": localised frames off by > 1 m or > 5°; for \"outside\", any pose at all.)\n",
    );
    s
}

/// Runs `sextant eval localize`.
pub fn run(args: LocalizeEvalArgs) -> Result<()> {
    let report = run_benchmark(&args, false)?;
    print!("{}", table(&report));
    let html = crate::report::html(&report, "Sextant localisation benchmark");
    let path = args.out.join("report.html");
    std::fs::write(&path, html).with_context(|| format!("writing {}", path.display()))?;
    println!("eval.json and report.html in {}", args.out.display());
    Ok(())
}
