//! `sextant localize --map MAP SESSION --out FILE`: localises every frame of a session against
//! a map and writes the results file of `shared/formats/session.md`
//! (`sextant-localizations/1`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use nalgebra::{UnitQuaternion, Vector3};
use serde::Serialize;
use sextant_runtime::descriptor::DescriptorModel;
use sextant_runtime::geometry::rng::Pcg32;
use sextant_runtime::localize::{Localization, Localizer, LocalizerConfig, Prior, Query};
use sextant_runtime::map::Map;
use sextant_runtime::{Frame, PixelFormat, Pose};
use sextant_sim::session::{Session, read_session};

use crate::features::BackendChoice;

/// Arguments of `sextant localize`.
#[derive(Debug, Args)]
pub struct LocalizeArgs {
    /// The map file.
    #[arg(long)]
    pub map: PathBuf,
    /// The query session folder.
    pub session: PathBuf,
    /// Results file (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// `track`: frames in order, each tracked from the previous result (cold start when there
    /// is none); `cold`: every frame by cold start.
    #[arg(long, value_enum, default_value_t = RunMode::Track)]
    pub mode: RunMode,
    /// Ignore the frames' position priors (search the whole map).
    #[arg(long)]
    pub no_prior: bool,
    /// Ignore the frames' gravity.
    #[arg(long)]
    pub no_gravity: bool,
    /// RANSAC seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where features and descriptors run (the answers are identical on every backend).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
}

/// How a session's frames are localised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunMode {
    /// In order, tracking from the previous result.
    Track,
    /// Every frame independently by cold start.
    Cold,
}

/// One frame's result with its ground truth (when the session has poses).
#[derive(Debug, Clone)]
pub struct FrameOutcome {
    /// The image path as in session.json.
    pub image: String,
    /// What the localizer answered.
    pub loc: Localization,
    /// Ground-truth pose, if the session carries one.
    pub truth: Option<Pose>,
}

/// Options of [`localize_session`].
#[derive(Debug, Clone, Copy)]
pub struct SessionRun {
    /// Tracking or cold start.
    pub mode: RunMode,
    /// Use the frames' position priors.
    pub use_prior: bool,
    /// Use the frames' gravity.
    pub use_gravity: bool,
    /// Evaluation only: when tracking, simulate the AR framework's visual-inertial odometry
    /// from the ground-truth poses — the prior of frame i is the last fix moved by the true
    /// relative motion since, perturbed by drift (this fraction of the distance travelled,
    /// per axis, and 0.3° of rotation per metre). `None`: the prior is the previous result.
    pub vio_drift: Option<f64>,
    /// Seed of the simulated drift.
    pub seed: u64,
}

/// A standard normal sample from a PCG32 stream (Box–Muller).
fn normal(rng: &mut Pcg32) -> f64 {
    let u1 = rng.next_f64().max(1e-300);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The VIO-like prior: `est` (a fix at ground truth `gt_then`) moved by the true motion to
/// `gt_now`, with drift.
fn vio_prior(est: &Pose, gt_then: &Pose, gt_now: &Pose, drift: f64, rng: &mut Pcg32) -> Pose {
    let motion = gt_now.compose(&gt_then.inverse());
    let moved = motion.compose(est);
    let dist = gt_now.center_error(gt_then);
    let dt = Vector3::new(normal(rng), normal(rng), normal(rng)) * (drift * dist);
    let rot_sigma = (0.3f64 * dist).to_radians();
    let dr = UnitQuaternion::from_scaled_axis(
        Vector3::new(normal(rng), normal(rng), normal(rng)) * rot_sigma,
    );
    // Perturb the camera centre and the orientation.
    let c = moved.center().coords + dt;
    let r = dr * moved.rotation();
    Pose::from_parts(r, -(r * c))
}

/// Localises every frame of `session`, in order.
pub fn localize_session(
    localizer: &mut Localizer,
    session: &Session,
    run: SessionRun,
    quiet: bool,
) -> Result<Vec<FrameOutcome>> {
    let bar = crate::scene::progress_bar(session.frames.len() as u64, "localising", quiet);
    let mut out = Vec::with_capacity(session.frames.len());
    let mut previous: Option<Pose> = None;
    // Last fix with its ground truth (for the VIO-like prior).
    let mut anchor: Option<(Pose, Pose)> = None;
    let mut rng = Pcg32::new(run.seed ^ 0x5649_4f00);
    for (i, f) in session.frames.iter().enumerate() {
        let gray = f
            .load_gray()
            .with_context(|| format!("reading {}", f.image.display()))?;
        let frame = Frame::new(
            PixelFormat::Gray8,
            gray.width(),
            gray.height(),
            gray.width() as usize,
            gray.as_slice(),
        )?;
        let vio = match (run.vio_drift, anchor, f.pose) {
            (Some(d), Some((est, then)), Some(now)) => {
                Some(vio_prior(&est, &then, &now, d, &mut rng))
            }
            _ => None,
        };
        let prior = match (run.mode, vio.or(previous)) {
            (RunMode::Track, Some(p)) => Prior::Pose(p),
            _ => match (&f.prior, run.use_prior) {
                (Some(p), true) => Prior::Position {
                    position: p.position,
                    sigma_m: p.sigma_m,
                },
                _ => Prior::None,
            },
        };
        let loc = localizer
            .localize(&Query {
                frame: &frame,
                camera: session.camera_for(i),
                gravity: if run.use_gravity { f.gravity } else { None },
                prior,
            })
            .with_context(|| format!("localising frame {i} ({})", f.image_rel))?;
        previous = loc.outcome.as_ref().ok().map(|fix| fix.pose);
        if let (Some(p), Some(gt)) = (previous, f.pose) {
            anchor = Some((p, gt));
        }
        out.push(FrameOutcome {
            image: f.image_rel.clone(),
            loc,
            truth: f.pose,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

#[derive(Serialize)]
struct ResultsFile<'a> {
    format: &'static str,
    results: Vec<ResultJson<'a>>,
}

#[derive(Serialize)]
struct ResultJson<'a> {
    image: &'a str,
    status: &'static str,
    #[serde(rename = "R", skip_serializing_if = "Option::is_none")]
    r: Option<[[f64; 3]; 3]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    t: Option<[f64; 3]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inliers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    visual_fix: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    visible_at_pose: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    coverage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position_sigma_m: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation_sigma_deg: Option<f64>,
    time_s: f64,
    backend: &'static str,
    mode: &'static str,
}

/// The results file (`sextant-localizations/1`) as JSON text.
pub fn results_json(outcomes: &[FrameOutcome]) -> Result<String> {
    let finite = |v: f64| v.is_finite().then_some(v);
    let results = outcomes
        .iter()
        .map(|o| {
            let fix = o.loc.outcome.as_ref().ok();
            let rm = fix.map(|f| f.pose.rotation_matrix());
            ResultJson {
                image: &o.image,
                status: match &o.loc.outcome {
                    Ok(_) => "localized",
                    Err(r) => r.as_str(),
                },
                r: rm.map(|m| {
                    [
                        [m[(0, 0)], m[(0, 1)], m[(0, 2)]],
                        [m[(1, 0)], m[(1, 1)], m[(1, 2)]],
                        [m[(2, 0)], m[(2, 1)], m[(2, 2)]],
                    ]
                }),
                t: fix.map(|f| {
                    let t = f.pose.translation();
                    [t.x, t.y, t.z]
                }),
                inliers: fix.map(|f| f.inliers),
                visual_fix: fix.map(|f| f.visual_fix),
                visible_at_pose: fix.map(|f| f.visible_at_pose),
                coverage: fix.map(|f| f.coverage),
                position_sigma_m: fix.and_then(|f| finite(f.position_sigma_m())),
                rotation_sigma_deg: fix.and_then(|f| finite(f.rotation_sigma_deg())),
                time_s: o.loc.timings.total_s,
                backend: o.loc.backend,
                mode: o.loc.mode.as_str(),
            }
        })
        .collect();
    Ok(serde_json::to_string_pretty(&ResultsFile {
        format: "sextant-localizations/1",
        results,
    })?)
}

/// A localizer over a map file, with the embedded descriptor model, on `backend`.
pub fn open_localizer(
    map: &std::path::Path,
    seed: u64,
    backend: BackendChoice,
) -> Result<Localizer> {
    let map = Map::open(map).with_context(|| format!("reading map {}", map.display()))?;
    localizer_for(Arc::new(map), seed, backend)
}

/// A localizer over `map` with the embedded descriptor model, on `backend` (the choice and its
/// reason go to stderr).
pub fn localizer_for(map: Arc<Map>, seed: u64, backend: BackendChoice) -> Result<Localizer> {
    let model = DescriptorModel::embedded_default()?;
    let config = LocalizerConfig {
        seed,
        backend: backend.into(),
        ..LocalizerConfig::default()
    };
    let localizer = Localizer::new(map, model, config)?;
    eprintln!("backend: {}", localizer.selection().reason());
    Ok(localizer)
}

/// Runs `sextant localize`.
pub fn run(a: LocalizeArgs) -> Result<()> {
    let mut localizer = open_localizer(&a.map, a.seed, a.backend)?;
    let session = read_session(&a.session)
        .with_context(|| format!("reading session {}", a.session.display()))?;
    let run = SessionRun {
        mode: a.mode,
        use_prior: !a.no_prior,
        use_gravity: !a.no_gravity,
        vio_drift: None,
        seed: a.seed,
    };
    let outcomes = localize_session(&mut localizer, &session, run, false)?;
    let json = results_json(&outcomes)?;
    crate::map::write_atomic(&a.out, json.as_bytes())?;
    let ok = outcomes.iter().filter(|o| o.loc.outcome.is_ok()).count();
    println!(
        "{ok} of {} frames localised → {}",
        outcomes.len(),
        a.out.display()
    );
    let with_truth: Vec<(f64, f64)> = outcomes
        .iter()
        .filter_map(|o| {
            let fix = o.loc.outcome.as_ref().ok()?;
            let t = o.truth?;
            Some((
                fix.pose.center_error(&t),
                fix.pose.rotation_error(&t).to_degrees(),
            ))
        })
        .collect();
    if !with_truth.is_empty() {
        let within = with_truth
            .iter()
            .filter(|(p, r)| *p <= 0.25 && *r <= 2.0)
            .count();
        println!(
            "against the session's ground truth: {within} of {} localised frames within 25 cm / 2°",
            with_truth.len()
        );
    }
    Ok(())
}
