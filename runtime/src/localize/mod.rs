//! The [`Localizer`]: where is this camera frame in this map?
//!
//! Two paths, chosen by the prior the caller gives:
//!
//! - **cold start** ([`Prior::None`] or a coarse [`Prior::Position`]): features (1000
//!   keypoints) → retrieval of the most similar keyframes (tf-idf over the map's visual words,
//!   among the keyframes near the position prior when there is one) → the landmarks those
//!   keyframes see → 2D–3D matching (ratio test, mutual check) → P3P (or the upright
//!   2-point solver with gravity) in LO-RANSAC → refinement and covariance → checks.
//! - **tracking** ([`Prior::Pose`]: the previous result, or the AR framework's VIO pose):
//!   fewer keypoints, the landmarks in view of the prior pose projected into the image,
//!   guided matching in a small window, the same solver with far fewer iterations. When the
//!   prior was wrong (too few guided matches, no consensus), it falls back to cold start in
//!   the same call.
//!
//! A result is a pose only when it passes the checks against false confidence (inlier count
//! and ratio, position uncertainty, a second consensus elsewhere in the map = ambiguous);
//! otherwise it is a [`FailureReason`]. Per-stage timings ride along.

mod quality;
mod visible;

use std::time::Instant;

use nalgebra::{Vector2, Vector3};

pub use quality::{ImageQuality, image_quality};

use crate::backend::{Backend, BackendKind, StageBackends};
use crate::descriptor::{DESCRIPTOR_DIM, DescriptorModel};
use crate::error::Result;
use crate::features::matching::{DescriptorSet, GuidedQuery, Match, MatchConfig, Matcher};
use crate::features::{FeatureConfig, FeaturePipeline};
use crate::geometry::{
    AbsolutePoseOptions, AbsolutePoseWorkspace, GeometryError, Gravity, PoseCovariance,
    estimate_absolute_pose,
};
use crate::map::{BowVector, Map, MapError, TileRange, model_id_from_sha256_hex};
use crate::{Camera, Frame, Pose};

use visible::Visibility;

/// Settings of a [`Localizer`].
#[derive(Debug, Clone, PartialEq)]
pub struct LocalizerConfig {
    /// Keypoints for cold start.
    pub features: FeatureConfig,
    /// Keypoints for tracking (fewer: the prior narrows the search).
    pub tracking_features: FeatureConfig,
    /// Keyframes retrieved at cold start.
    pub retrieval_keyframes: usize,
    /// Lowe's ratio for 2D–3D matches.
    pub match_ratio: f32,
    /// Robust pose estimation (threshold, RANSAC, refinement) at cold start.
    pub pose: AbsolutePoseOptions,
    /// Most RANSAC iterations when tracking.
    pub tracking_max_iterations: u32,
    /// Fewest inliers of an accepted pose.
    pub min_inliers: usize,
    /// Smallest inlier share of the matches of an accepted pose.
    pub min_inlier_ratio: f64,
    /// Largest 1-σ position uncertainty of an accepted pose (metres).
    pub max_position_sigma_m: f64,
    /// Guided-matching window when tracking (pixels).
    pub tracking_radius_px: f32,
    /// Largest angle between a landmark's mapped viewing direction and the query's (degrees).
    pub max_view_angle_deg: f64,
    /// Fewest keypoints to attempt localisation.
    pub min_features: usize,
    /// Fewest 2D–3D matches to attempt a pose.
    pub min_matches: usize,
    /// Smallest [`Fix::coverage`] of an accepted pose.
    pub min_coverage: f64,
    /// A pose with at least `strong_inliers` inliers needs only this coverage.
    pub min_coverage_strong: f64,
    /// Inliers from which `min_coverage_strong` applies.
    pub strong_inliers: usize,
    /// Seed of the robust estimator (same frame, map and seed → same pose).
    pub seed: u64,
    /// Where features and descriptors run: [`Backend::Cpu`] (the default), [`Backend::Gpu`]
    /// (an error at [`Localizer::new`] without a usable GPU) or [`Backend::Auto`]. The GPU gives
    /// the same keypoints and descriptors, so the same answers; a GPU failure at run time
    /// falls back to the CPU for that frame.
    pub backend: Backend,
}

impl Default for LocalizerConfig {
    fn default() -> Self {
        let pose = AbsolutePoseOptions {
            threshold_px: 4.0,
            min_inliers: 12,
            ransac: crate::geometry::RansacOptions {
                max_iterations: 5000,
                ..crate::geometry::RansacOptions::default()
            },
            ..AbsolutePoseOptions::default()
        };
        LocalizerConfig {
            features: FeatureConfig::localization(),
            tracking_features: FeatureConfig {
                max_keypoints: 600,
                levels: 5,
                ..FeatureConfig::localization()
            },
            retrieval_keyframes: 6,
            match_ratio: 0.9,
            pose,
            tracking_max_iterations: 400,
            min_inliers: 25,
            min_inlier_ratio: 0.15,
            max_position_sigma_m: 0.5,
            tracking_radius_px: 24.0,
            max_view_angle_deg: 70.0,
            min_features: 60,
            min_matches: 15,
            min_coverage: 0.5,
            min_coverage_strong: 0.4,
            strong_inliers: 50,
            seed: 1,
            backend: Backend::Cpu,
        }
    }
}

/// What the caller knows about where the camera is.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Prior {
    /// Nothing (a small map, searched whole).
    #[default]
    None,
    /// A coarse position of the camera centre (GPS-like), world frame, with its 1-σ radius.
    Position {
        /// Camera centre, metres.
        position: Vector3<f64>,
        /// 1-σ radius, metres.
        sigma_m: f64,
    },
    /// A full pose (previous result or VIO): tracking.
    Pose(Pose),
}

/// One frame to localise.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The camera frame (any pixel format).
    pub frame: &'a Frame<'a>,
    /// Its camera.
    pub camera: &'a Camera,
    /// World up in the camera frame, as the AR framework reports it (the map's world is z-up).
    pub gravity: Option<Vector3<f64>>,
    /// Prior knowledge of the camera's place.
    pub prior: Prior,
}

/// Which path produced a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Retrieval and full 2D–3D matching.
    ColdStart,
    /// Guided matching around a prior pose.
    Tracking,
    /// Tracking failed and cold start ran in the same call.
    TrackingThenColdStart,
}

impl Mode {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ColdStart => "cold_start",
            Mode::Tracking => "tracking",
            Mode::TrackingThenColdStart => "tracking_then_cold_start",
        }
    }
}

/// Why a frame was not localised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The image is too dark to see anything.
    TooDark,
    /// The image is too blurred for keypoints.
    TooBlurred,
    /// Too few keypoints (a blank wall, the sky).
    TooFewFeatures,
    /// Too few 2D–3D matches.
    TooFewMatches,
    /// Matches, but no pose supported by enough of them.
    NoConsensus,
    /// Two different poses are about equally supported.
    Ambiguous,
    /// The prior places the camera away from the mapped area, or nothing in the map resembles
    /// the frame.
    OutsideMap,
}

impl FailureReason {
    /// snake_case name (as in the localisation results file).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::TooDark => "too_dark",
            FailureReason::TooBlurred => "too_blurred",
            FailureReason::TooFewFeatures => "too_few_features",
            FailureReason::TooFewMatches => "too_few_matches",
            FailureReason::NoConsensus => "no_consensus",
            FailureReason::Ambiguous => "ambiguous",
            FailureReason::OutsideMap => "outside_map",
        }
    }
}

/// An accepted pose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    /// World-to-camera pose.
    pub pose: Pose,
    /// Its covariance.
    pub covariance: Option<PoseCovariance>,
    /// Inlier correspondences.
    pub inliers: usize,
    /// 2D–3D matches the solver saw.
    pub matches: usize,
    /// RMS reprojection error over the inliers (pixels).
    pub rms_reprojection_px: f64,
    /// True: the pose comes from this frame's pixels (always, today; a future fallback may
    /// report a prior-propagated pose with `false`).
    pub visual_fix: bool,
    /// Whether gravity constrained the solver.
    pub used_gravity: bool,
    /// Map landmarks that a camera at the estimated pose would see (the inliers must explain
    /// a share of them: a look-alike place elsewhere matches only a few).
    pub visible_at_pose: usize,
    /// Share of the image cells (6×4 grid) holding visible landmarks that also hold an inlier:
    /// low when a single look-alike object (a copy of a mapped poster elsewhere) explains the
    /// matches while the rest of the view does not match the map.
    pub coverage: f64,
}

impl Fix {
    /// Total 1-σ position uncertainty (metres), infinite without covariance.
    pub fn position_sigma_m(&self) -> f64 {
        self.covariance
            .map_or(f64::INFINITY, |c| c.position_sigma_total_m())
    }

    /// Total 1-σ rotation uncertainty (degrees), infinite without covariance.
    pub fn rotation_sigma_deg(&self) -> f64 {
        self.covariance
            .map_or(f64::INFINITY, |c| c.rotation_sigma_total_rad().to_degrees())
    }
}

/// Seconds spent per stage.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StageTimings {
    /// Gray conversion, pyramid, keypoints, patches.
    pub features_s: f64,
    /// Descriptor model.
    pub describe_s: f64,
    /// Keyframe retrieval and landmark selection (or projection when tracking).
    pub retrieval_s: f64,
    /// 2D–3D matching.
    pub matching_s: f64,
    /// Robust pose estimation, refinement, covariance and checks.
    pub solve_s: f64,
    /// The whole call.
    pub total_s: f64,
}

/// The answer for one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Localization {
    /// The pose, or why not.
    pub outcome: std::result::Result<Fix, FailureReason>,
    /// Which path produced it.
    pub mode: Mode,
    /// Per-stage timings.
    pub timings: StageTimings,
    /// Where the descriptors were computed: `"gpu"` or `"cpu"` (matching and the pose are on
    /// the CPU).
    pub backend: &'static str,
    /// Which backend ran each feature stage (and whether a GPU failure fell back to the CPU).
    pub backends: StageBackends,
    /// Keypoints in the frame.
    pub keypoints: usize,
    /// Map landmarks the frame was compared with.
    pub candidates: usize,
}

/// Localises frames against one map, with reusable buffers: one per camera stream.
#[derive(Debug)]
pub struct Localizer<B: AsRef<[u8]> = crate::map::AlignedBytes> {
    map: std::sync::Arc<Map<B>>,
    config: LocalizerConfig,
    cold: FeaturePipeline,
    tracking: FeaturePipeline,
    /// Backends of the last frame's feature stages.
    backends: StageBackends,
    descriptors: Vec<i8>,
    matcher: Matcher,
    assigner: Matcher,
    ws: AbsolutePoseWorkspace,
    vis: Visibility,
    check_vis: Visibility,
    tiles: TileRange,
    words: Vec<u32>,
    bow: BowVector,
    scores: Vec<(f32, u32)>,
    keypoint_xy: Vec<[f32; 2]>,
    gathered: Vec<i8>,
    matches: Vec<Match>,
    pts2: Vec<Vector2<f64>>,
    pts3: Vec<Vector3<f64>>,
    rest2: Vec<Vector2<f64>>,
    rest3: Vec<Vector3<f64>>,
    ws2: AbsolutePoseWorkspace,
}

struct Described {
    keypoints: usize,
    features_s: f64,
    describe_s: f64,
}

impl<B: AsRef<[u8]>> Localizer<B> {
    /// A localizer for `map` using descriptor `model` (which must be the model the map was
    /// built with).
    pub fn new(
        map: std::sync::Arc<Map<B>>,
        model: DescriptorModel,
        config: LocalizerConfig,
    ) -> Result<Localizer<B>> {
        let id = model_id_from_sha256_hex(&model.info().sha256);
        if map.model_id() != id {
            return Err(MapError::Invalid(format!(
                "the map was built with descriptor model {} but the runtime has {} ({})",
                hex16(&map.model_id()),
                hex16(&id),
                model.info().version
            ))
            .into());
        }
        if map.descriptor_dim() != DESCRIPTOR_DIM {
            return Err(MapError::Invalid(format!(
                "map descriptors have {} values, the model gives {DESCRIPTOR_DIM}",
                map.descriptor_dim()
            ))
            .into());
        }
        let mc = |ratio: f32, mutual: bool| MatchConfig {
            ratio,
            mutual,
            max_distance: None,
        };
        let selection = crate::backend::select(config.backend)?;
        Ok(Localizer {
            cold: FeaturePipeline::with_selection(
                config.features.clone(),
                model.clone(),
                selection.clone(),
            )?,
            tracking: FeaturePipeline::with_selection(
                config.tracking_features.clone(),
                model,
                selection,
            )?,
            backends: StageBackends::CPU,
            descriptors: Vec::new(),
            matcher: Matcher::new(mc(config.match_ratio, true))?,
            assigner: Matcher::new(mc(1.0, false))?,
            ws: AbsolutePoseWorkspace::with_capacity(2048),
            ws2: AbsolutePoseWorkspace::with_capacity(2048),
            vis: Visibility::default(),
            check_vis: Visibility::default(),
            tiles: TileRange::default(),
            words: Vec::new(),
            bow: Vec::new(),
            scores: Vec::new(),
            keypoint_xy: Vec::new(),
            gathered: Vec::new(),
            matches: Vec::new(),
            pts2: Vec::new(),
            pts3: Vec::new(),
            rest2: Vec::new(),
            rest3: Vec::new(),
            map,
            config,
        })
    }

    /// The map.
    pub fn map(&self) -> &Map<B> {
        &self.map
    }

    /// The settings.
    pub fn config(&self) -> &LocalizerConfig {
        &self.config
    }

    /// The backend the features run on, and why.
    pub fn selection(&self) -> &crate::backend::Selection {
        self.cold.selection()
    }

    /// Localises one frame. Errors are bad input (frame and camera sizes disagree, invalid
    /// prior values); every outcome of the search itself is in the returned [`Localization`].
    pub fn localize(&mut self, query: &Query<'_>) -> Result<Localization> {
        let t0 = Instant::now();
        let (w, h) = (query.frame.width(), query.frame.height());
        if (w, h) != (query.camera.width(), query.camera.height()) {
            return Err(crate::Error::InvalidFrame(format!(
                "frame {w}x{h} but camera {}x{}",
                query.camera.width(),
                query.camera.height()
            )));
        }
        if let Some(g) = query.gravity
            && !(g.iter().all(|v| v.is_finite()) && g.norm() > 1e-9)
        {
            return Err(GeometryError::InvalidGravity.into());
        }
        let mut out = match query.prior {
            Prior::Pose(pose) => {
                let tracked = self.track(query, &pose)?;
                if tracked.outcome.is_ok() {
                    tracked
                } else {
                    let mut cold = self.cold_start(query, None)?;
                    cold.mode = Mode::TrackingThenColdStart;
                    let (a, b) = (&tracked.timings, &mut cold.timings);
                    b.features_s += a.features_s;
                    b.describe_s += a.describe_s;
                    b.retrieval_s += a.retrieval_s;
                    b.matching_s += a.matching_s;
                    b.solve_s += a.solve_s;
                    cold
                }
            }
            Prior::Position { position, sigma_m } => {
                if !(position.iter().all(|v| v.is_finite()) && sigma_m.is_finite() && sigma_m > 0.0)
                {
                    return Err(MapError::Invalid(format!(
                        "position prior {position:?} ± {sigma_m} m must be finite, σ positive"
                    ))
                    .into());
                }
                self.cold_start(query, Some((position, sigma_m)))?
            }
            Prior::None => self.cold_start(query, None)?,
        };
        out.timings.total_s = t0.elapsed().as_secs_f64();
        Ok(out)
    }

    fn extract(&mut self, frame: &Frame<'_>, tracking: bool) -> Result<Described> {
        let pipeline = if tracking {
            &mut self.tracking
        } else {
            &mut self.cold
        };
        let f = pipeline.extract(frame)?;
        self.keypoint_xy.clear();
        self.keypoint_xy
            .extend(f.keypoints.iter().map(|k| [k.x, k.y]));
        self.descriptors.clear();
        self.descriptors.extend_from_slice(f.descriptors);
        self.backends = f.backends;
        Ok(Described {
            keypoints: f.keypoints.len(),
            features_s: f.keypoints_s,
            describe_s: f.describe_s,
        })
    }

    /// The failure reason for a frame with too few keypoints.
    fn featureless_reason(&self, tracking: bool) -> FailureReason {
        let e = if tracking { &self.tracking } else { &self.cold };
        let q = image_quality(e.extractor().gray());
        if q.is_too_dark() {
            FailureReason::TooDark
        } else if q.is_too_blurred() {
            FailureReason::TooBlurred
        } else {
            FailureReason::TooFewFeatures
        }
    }

    fn result(
        &self,
        outcome: std::result::Result<Fix, FailureReason>,
        mode: Mode,
        timings: StageTimings,
        keypoints: usize,
        candidates: usize,
    ) -> Localization {
        Localization {
            outcome,
            mode,
            timings,
            backend: if self.backends.descriptors == BackendKind::Gpu {
                "gpu"
            } else {
                "cpu"
            },
            backends: self.backends,
            keypoints,
            candidates,
        }
    }

    /// Features and descriptors of the frame for `mode`: the keypoint count and the timings so
    /// far, or the finished answer for a frame with too few keypoints.
    fn start(
        &mut self,
        frame: &Frame<'_>,
        mode: Mode,
    ) -> Result<std::result::Result<(usize, StageTimings), Localization>> {
        let tracking = mode == Mode::Tracking;
        let d = self.extract(frame, tracking)?;
        let tm = StageTimings {
            features_s: d.features_s,
            describe_s: d.describe_s,
            ..StageTimings::default()
        };
        if d.keypoints < self.config.min_features {
            let r = self.featureless_reason(tracking);
            return Ok(Err(self.result(Err(r), mode, tm, d.keypoints, 0)));
        }
        Ok(Ok((d.keypoints, tm)))
    }

    fn cold_start(
        &mut self,
        query: &Query<'_>,
        prior: Option<(Vector3<f64>, f64)>,
    ) -> Result<Localization> {
        let (keypoints, mut tm) = match self.start(query.frame, Mode::ColdStart)? {
            Ok(v) => v,
            Err(featureless) => return Ok(featureless),
        };

        // Retrieval.
        let t = Instant::now();
        let map = std::sync::Arc::clone(&self.map);
        let range = f64::from(map.max_range_m());
        self.scores.clear();
        let reach = prior.map(|(_, s)| 3.0 * s + 2.0);
        for (i, kf) in map.keyframes().iter().enumerate() {
            if let (Some((p, _)), Some(r)) = (prior, reach) {
                let c = kf.pose.center();
                if (c.x - p.x).hypot(c.y - p.y) > r {
                    continue;
                }
            }
            self.scores.push((0.0, i as u32));
        }
        if self.scores.is_empty() {
            tm.retrieval_s = t.elapsed().as_secs_f64();
            return Ok(self.result(
                Err(FailureReason::OutsideMap),
                Mode::ColdStart,
                tm,
                keypoints,
                0,
            ));
        }
        map.vocabulary()
            .assign(&mut self.assigner, &self.descriptors, &mut self.words)?;
        map.vocabulary().bow(&self.words, &mut self.bow);
        for s in self.scores.iter_mut() {
            s.0 = crate::map::bow_similarity(&self.bow, &map.keyframes()[s.1 as usize].bow);
        }
        self.scores
            .sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        self.scores.truncate(self.config.retrieval_keyframes.max(1));
        if self.scores[0].0 <= 0.0 {
            tm.retrieval_s = t.elapsed().as_secs_f64();
            return Ok(self.result(
                Err(FailureReason::OutsideMap),
                Mode::ColdStart,
                tm,
                keypoints,
                0,
            ));
        }
        self.vis.begin(map.len());
        for k in 0..self.scores.len() {
            let kf = &map.keyframes()[self.scores[k].1 as usize];
            let camera = &map.cameras()[kf.camera as usize];
            let c = kf.pose.center();
            self.tiles.collect(&map, c.x, c.y, range);
            self.vis.add_visible(
                &map,
                &kf.pose,
                camera,
                &self.tiles,
                range,
                self.config.max_view_angle_deg,
            );
        }
        self.vis.gather(&map, &mut self.gathered);
        tm.retrieval_s = t.elapsed().as_secs_f64();
        let candidates = self.vis.indices().len();

        // Matching.
        let t = Instant::now();
        self.matches.clear();
        if candidates > 0 {
            let q = DescriptorSet::new(&self.descriptors, DESCRIPTOR_DIM)?;
            let tr = DescriptorSet::new(&self.gathered, DESCRIPTOR_DIM)?;
            self.matcher.match_sets(&q, &tr, &mut self.matches)?;
        }
        tm.matching_s = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let outcome = self.solve(query, &self.config.pose.clone());
        tm.solve_s = t.elapsed().as_secs_f64();
        Ok(self.result(outcome, Mode::ColdStart, tm, keypoints, candidates))
    }

    fn track(&mut self, query: &Query<'_>, prior: &Pose) -> Result<Localization> {
        let (keypoints, mut tm) = match self.start(query.frame, Mode::Tracking)? {
            Ok(v) => v,
            Err(featureless) => return Ok(featureless),
        };
        let t = Instant::now();
        let map = std::sync::Arc::clone(&self.map);
        let range = f64::from(map.max_range_m());
        let c = prior.center();
        self.tiles.collect(&map, c.x, c.y, range);
        self.vis.begin(map.len());
        self.vis.add_visible(
            &map,
            prior,
            query.camera,
            &self.tiles,
            range,
            self.config.max_view_angle_deg,
        );
        self.vis.gather(&map, &mut self.gathered);
        let candidates = self.vis.indices().len();
        tm.retrieval_s = t.elapsed().as_secs_f64();

        let t = Instant::now();
        self.matches.clear();
        if candidates > 0 {
            let q = DescriptorSet::new(&self.descriptors, DESCRIPTOR_DIM)?;
            let tr = DescriptorSet::new(&self.gathered, DESCRIPTOR_DIM)?;
            let guide = GuidedQuery {
                query_xy: &self.keypoint_xy,
                train_xy: self.vis.predicted(),
                radius: self.config.tracking_radius_px,
            };
            self.matcher
                .match_guided(&q, &tr, &guide, &mut self.matches)?;
        }
        tm.matching_s = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let mut opts = self.config.pose;
        opts.ransac.max_iterations = self.config.tracking_max_iterations;
        let outcome = self.solve(query, &opts);
        tm.solve_s = t.elapsed().as_secs_f64();
        Ok(self.result(outcome, Mode::Tracking, tm, keypoints, candidates))
    }

    /// Pose from `self.matches` (query keypoint ↔ gathered landmark), with the acceptance checks.
    fn solve(
        &mut self,
        query: &Query<'_>,
        opts: &AbsolutePoseOptions,
    ) -> std::result::Result<Fix, FailureReason> {
        let n = self.matches.len();
        if n < self.config.min_matches {
            return Err(FailureReason::TooFewMatches);
        }
        let positions = self.map.positions();
        self.pts2.clear();
        self.pts3.clear();
        for m in &self.matches {
            let [x, y] = self.keypoint_xy[m.query as usize];
            self.pts2.push(Vector2::new(f64::from(x), f64::from(y)));
            let p = positions[self.vis.indices()[m.train as usize] as usize];
            self.pts3.push(Vector3::new(
                f64::from(p[0]),
                f64::from(p[1]),
                f64::from(p[2]),
            ));
        }
        let gravity = query.gravity.map(|g| Gravity {
            up_in_camera: g,
            up_in_world: Vector3::z(),
        });
        let mut opts = *opts;
        opts.ransac.seed = self.config.seed;
        opts.min_inliers = opts.min_inliers.min(self.config.min_inliers);
        let est = match estimate_absolute_pose(
            query.camera,
            &self.pts2,
            &self.pts3,
            gravity.as_ref(),
            &opts,
            &mut self.ws,
        ) {
            Ok(e) => e,
            Err(_) => return Err(FailureReason::NoConsensus),
        };
        if est.num_inliers < self.config.min_inliers
            || (est.num_inliers as f64) < self.config.min_inlier_ratio * n as f64
        {
            return Err(FailureReason::NoConsensus);
        }
        let fix = Fix {
            pose: est.pose,
            covariance: est.covariance,
            inliers: est.num_inliers,
            matches: n,
            rms_reprojection_px: est.rms_reprojection_px,
            visual_fix: true,
            used_gravity: est.used_gravity,
            visible_at_pose: 0,
            coverage: 0.0,
        };
        let sigma = fix.position_sigma_m();
        if sigma.is_nan() || sigma > self.config.max_position_sigma_m {
            return Err(FailureReason::NoConsensus);
        }
        // The inliers must explain a share of what the camera would see from there.
        let mut fix = fix;
        fix.visible_at_pose = self.visible_from(&fix.pose, query.camera);
        fix.coverage = self.coverage(query.camera);
        let needed = if fix.inliers >= self.config.strong_inliers {
            self.config.min_coverage_strong
        } else {
            self.config.min_coverage
        };
        if fix.coverage < needed {
            return Err(FailureReason::NoConsensus);
        }
        // A second consensus among the outliers, about as strong, elsewhere: ambiguous.
        let outliers = n - est.num_inliers;
        let rival = (est.num_inliers as f64 * 0.7).ceil() as usize;
        if outliers >= rival.max(self.config.min_inliers) {
            self.rest2.clear();
            self.rest3.clear();
            let inl = self.ws.inliers();
            let mut k = 0;
            for i in 0..n {
                if k < inl.len() && inl[k] == i {
                    k += 1;
                    continue;
                }
                self.rest2.push(self.pts2[i]);
                self.rest3.push(self.pts3[i]);
            }
            let mut o2 = opts;
            o2.covariance = false;
            o2.min_inliers = rival.max(self.config.min_inliers);
            if let Ok(second) = estimate_absolute_pose(
                query.camera,
                &self.rest2,
                &self.rest3,
                gravity.as_ref(),
                &o2,
                &mut self.ws2,
            ) && second.num_inliers >= rival
                && (second.pose.center_error(&fix.pose) > 1.0
                    || second.pose.rotation_error(&fix.pose).to_degrees() > 5.0)
            {
                return Err(FailureReason::Ambiguous);
            }
        }
        Ok(fix)
    }
}

impl<B: AsRef<[u8]>> Localizer<B> {
    /// How many landmarks a camera at `pose` sees (reuses the visibility buffers: call only
    /// after the matches were resolved to landmark positions).
    fn visible_from(&mut self, pose: &Pose, camera: &Camera) -> usize {
        let map = std::sync::Arc::clone(&self.map);
        let c = pose.center();
        let range = f64::from(map.max_range_m());
        self.tiles.collect(&map, c.x, c.y, range);
        self.check_vis.begin(map.len());
        self.check_vis.add_visible(
            &map,
            pose,
            camera,
            &self.tiles,
            range,
            self.config.max_view_angle_deg,
        );
        self.check_vis.indices().len()
    }

    /// Share of the grid cells with ≥ 3 visible landmarks (as of [`Self::visible_from`]) that
    /// hold an inlier of the last estimate.
    fn coverage(&self, camera: &Camera) -> f64 {
        const GX: usize = 6;
        const GY: usize = 4;
        let (w, h) = (f64::from(camera.width()), f64::from(camera.height()));
        let cell = |x: f64, y: f64| -> Option<usize> {
            let (cx, cy) = ((x / w * GX as f64).floor(), (y / h * GY as f64).floor());
            (cx >= 0.0 && cy >= 0.0 && cx < GX as f64 && cy < GY as f64)
                .then(|| cy as usize * GX + cx as usize)
        };
        let mut visible = [0u32; GX * GY];
        for p in self.check_vis.predicted() {
            if let Some(c) = cell(f64::from(p[0]), f64::from(p[1])) {
                visible[c] += 1;
            }
        }
        let mut inlier = [false; GX * GY];
        for &i in self.ws.inliers() {
            if let Some(c) = cell(self.pts2[i].x, self.pts2[i].y) {
                inlier[c] = true;
            }
        }
        // Cells weighted by how many landmarks the map predicts there.
        let total: u32 = visible.iter().filter(|&&v| v >= 3).sum();
        if total == 0 {
            return 0.0;
        }
        let covered: u32 = (0..GX * GY)
            .filter(|&c| visible[c] >= 3 && inlier[c])
            .map(|c| visible[c])
            .sum();
        f64::from(covered) / f64::from(total)
    }
}

fn hex16(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}
