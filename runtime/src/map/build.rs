//! Map building from posed frames: features per frame, matching between covisible frames
//! (guided by depth where the frames carry it, verified by the known epipolar geometry),
//! tracks by union-find, multi-view triangulation (or depth when the views are too close to
//! triangulate), filtering, one medoid descriptor per landmark, and keyframes with tf-idf
//! retrieval vectors.

use nalgebra::{Matrix3, Point3, Vector2, Vector3};

use super::vocab::quantize_bow;
use super::{
    Keyframe, Landmarks, MapContents, MapError, Vocabulary, VocabularyConfig,
    model_id_from_sha256_hex, tiles,
};
use crate::backend::Backend;
use crate::descriptor::DescriptorModel;
use crate::features::matching::{DescriptorSet, GuidedQuery, Match, MatchConfig, Matcher};
use crate::features::{FeatureConfig, FeaturePipeline};
use crate::geometry::{Observation, TriangulationOptions, triangulate};
use crate::{Camera, GrayImage, Pose};

/// Settings of [`MapBuilder`].
#[derive(Debug, Clone, PartialEq)]
pub struct MapBuildConfig {
    /// Keypoint settings for the mapping frames.
    pub features: FeatureConfig,
    /// Lowe's ratio for frame-to-frame matches.
    pub match_ratio: f32,
    /// Covisible frames each frame is matched with (the best by predicted overlap).
    pub neighbours: usize,
    /// Smallest predicted overlap (fraction of a frame's keypoints visible in the other) for a
    /// pair to be matched.
    pub min_overlap: f64,
    /// Search radius of depth-guided matching (pixels).
    pub guided_radius_px: f32,
    /// Largest epipolar (Sampson) error of a verified match (pixels).
    pub epipolar_px: f64,
    /// Triangulation acceptance (angle, reprojection).
    pub triangulation: TriangulationOptions,
    /// Fewest views of a landmark.
    pub min_track: usize,
    /// Side of a tile (metres).
    pub tile_size_m: f32,
    /// Retrieval vocabulary.
    pub vocabulary: VocabularyConfig,
    /// Where the frames' features and descriptors run ([`Backend::Cpu`] by default; the GPU
    /// gives the same keypoints and descriptors, so the same map).
    pub backend: Backend,
}

impl Default for MapBuildConfig {
    fn default() -> Self {
        MapBuildConfig {
            features: FeatureConfig::localization(),
            match_ratio: 0.9,
            neighbours: 6,
            min_overlap: 0.15,
            guided_radius_px: 6.0,
            epipolar_px: 2.0,
            triangulation: TriangulationOptions {
                min_angle_rad: 2f64.to_radians(),
                max_reprojection_px: 3.0,
                refine_iterations: 10,
            },
            min_track: 2,
            tile_size_m: 16.0,
            vocabulary: VocabularyConfig::default(),
            backend: Backend::Cpu,
        }
    }
}

/// One posed mapping frame.
#[derive(Debug, Clone, Copy)]
pub struct MapFrame<'a> {
    /// The image.
    pub gray: &'a GrayImage,
    /// Its camera.
    pub camera: &'a Camera,
    /// World-to-camera pose.
    pub pose: &'a Pose,
    /// Optional depth along the camera's Z axis, metres, row-major, same size as the image;
    /// 0 or non-finite = unknown.
    pub depth: Option<&'a [f32]>,
}

/// What a build did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MapBuildStats {
    /// Frames added.
    pub frames: usize,
    /// Keypoints over all frames.
    pub keypoints: usize,
    /// Frame pairs matched.
    pub pairs: usize,
    /// Verified frame-to-frame matches.
    pub matches: usize,
    /// Tracks with at least `min_track` views.
    pub tracks: usize,
    /// Tracks dropped because two of their keypoints lie in one frame.
    pub inconsistent_tracks: usize,
    /// Landmarks placed by triangulation.
    pub triangulated: usize,
    /// Landmarks placed from depth (views too close to triangulate).
    pub from_depth: usize,
    /// Tracks rejected by the reprojection, angle or cheirality checks.
    pub rejected: usize,
}

#[derive(Debug)]
struct FrameFeatures {
    camera: u32,
    pose: Pose,
    xy: Vec<[f32; 2]>,
    descriptors: Vec<i8>,
    /// Depth at each keypoint (metres), NaN when unknown.
    depth: Vec<f32>,
}

/// Builds a map frame by frame: `add_frame` extracts features at once (the image is not kept),
/// `build` does the rest.
#[derive(Debug)]
pub struct MapBuilder {
    config: MapBuildConfig,
    pipeline: FeaturePipeline,
    model_id: [u8; 16],
    cameras: Vec<Camera>,
    frames: Vec<FrameFeatures>,
}

/// Depth at a keypoint: the nearest pixel's, when its 2×2 neighbourhood agrees within 2 %
/// (no depth edge), else NaN.
fn depth_at(depth: &[f32], w: usize, h: usize, x: f32, y: f32) -> f32 {
    let (u, v) = (x - 0.5, y - 0.5);
    if !(u >= 0.0 && v >= 0.0) {
        return f32::NAN;
    }
    let (u0, v0) = (u.floor() as usize, v.floor() as usize);
    if u0 + 1 >= w || v0 + 1 >= h {
        return f32::NAN;
    }
    let s = [
        depth[v0 * w + u0],
        depth[v0 * w + u0 + 1],
        depth[(v0 + 1) * w + u0],
        depth[(v0 + 1) * w + u0 + 1],
    ];
    if s.iter().any(|d| !(d.is_finite() && *d > 0.0)) {
        return f32::NAN;
    }
    let (lo, hi) = s
        .iter()
        .fold((f32::MAX, 0.0f32), |(lo, hi), &d| (lo.min(d), hi.max(d)));
    if hi > lo * 1.02 {
        return f32::NAN;
    }
    let (fu, fv) = (u - u0 as f32, v - v0 as f32);
    (s[0] * (1.0 - fu) + s[1] * fu) * (1.0 - fv) + (s[2] * (1.0 - fu) + s[3] * fu) * fv
}

struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    fn new(n: usize) -> UnionFind {
        UnionFind {
            parent: (0..n as u32).collect(),
        }
    }
    fn find(&mut self, mut a: u32) -> u32 {
        while self.parent[a as usize] != a {
            let p = self.parent[a as usize];
            self.parent[a as usize] = self.parent[p as usize];
            a = p;
        }
        a
    }
    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi as usize] = lo;
        }
    }
}

fn cross(t: &Vector3<f64>) -> Matrix3<f64> {
    Matrix3::new(0.0, -t.z, t.y, t.z, 0.0, -t.x, -t.y, t.x, 0.0)
}

impl MapBuilder {
    /// A builder with the given settings and descriptor model.
    pub fn new(config: MapBuildConfig, model: DescriptorModel) -> Result<MapBuilder, MapError> {
        if !(config.tile_size_m.is_finite() && config.tile_size_m > 0.0) {
            return Err(MapError::Build(format!(
                "tile size {} m must be positive",
                config.tile_size_m
            )));
        }
        if config.min_track < 2 {
            return Err(MapError::Build("min_track must be at least 2".into()));
        }
        let model_id = model_id_from_sha256_hex(&model.info().sha256);
        let pipeline =
            FeaturePipeline::with_backend(config.features.clone(), model, config.backend)
                .map_err(|e| MapError::Build(e.to_string()))?;
        Ok(MapBuilder {
            config,
            pipeline,
            model_id,
            cameras: Vec::new(),
            frames: Vec::new(),
        })
    }

    /// Frames added so far.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame was added.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Extracts and keeps the features of one posed frame.
    pub fn add_frame(&mut self, frame: &MapFrame<'_>) -> Result<(), MapError> {
        let (w, h) = (frame.gray.width(), frame.gray.height());
        if (w, h) != (frame.camera.width(), frame.camera.height()) {
            return Err(MapError::Build(format!(
                "frame {}: image {w}x{h} but camera {}x{}",
                self.frames.len(),
                frame.camera.width(),
                frame.camera.height()
            )));
        }
        if let Some(d) = frame.depth
            && d.len() != w as usize * h as usize
        {
            return Err(MapError::Build(format!(
                "frame {}: depth has {} values for a {w}x{h} image",
                self.frames.len(),
                d.len()
            )));
        }
        let camera = match self.cameras.iter().position(|c| c == frame.camera) {
            Some(i) => i,
            None => {
                self.cameras.push(*frame.camera);
                self.cameras.len() - 1
            }
        } as u32;
        let f = self
            .pipeline
            .extract_gray(frame.gray)
            .map_err(|e| MapError::Build(e.to_string()))?;
        let xy: Vec<[f32; 2]> = f.keypoints.iter().map(|k| [k.x, k.y]).collect();
        let depth = match frame.depth {
            Some(d) => xy
                .iter()
                .map(|p| depth_at(d, w as usize, h as usize, p[0], p[1]))
                .collect(),
            None => vec![f32::NAN; xy.len()],
        };
        self.frames.push(FrameFeatures {
            camera,
            pose: *frame.pose,
            xy,
            descriptors: f.descriptors.to_vec(),
            depth,
        });
        Ok(())
    }

    fn camera(&self, f: &FrameFeatures) -> &Camera {
        &self.cameras[f.camera as usize]
    }

    /// World point of keypoint `k` of frame `f` from its depth, if known.
    fn depth_point(&self, f: &FrameFeatures, k: usize) -> Option<Vector3<f64>> {
        let d = f64::from(f.depth[k]);
        if !d.is_finite() {
            return None;
        }
        let ray = self
            .camera(f)
            .pixel_to_normalized(&Vector2::new(f64::from(f.xy[k][0]), f64::from(f.xy[k][1])));
        let pc = Point3::new(ray.x * d, ray.y * d, d);
        Some(f.pose.inverse().transform_point(&pc).coords)
    }

    /// Predicted fraction of frame `a`'s keypoints (with depth, or at the frame's median depth)
    /// that frame `b` sees.
    fn overlap(&self, a: &FrameFeatures, b: &FrameFeatures, median_depth: f64) -> f64 {
        let n = a.xy.len();
        if n == 0 {
            return 0.0;
        }
        let step = (n / 64).max(1);
        let (mut seen, mut total) = (0usize, 0usize);
        let cam_a = self.camera(a);
        let cam_b = self.camera(b);
        let inv_a = a.pose.inverse();
        for k in (0..n).step_by(step) {
            let d = if a.depth[k].is_finite() {
                f64::from(a.depth[k])
            } else {
                median_depth
            };
            let ray = cam_a
                .pixel_to_normalized(&Vector2::new(f64::from(a.xy[k][0]), f64::from(a.xy[k][1])));
            let pw = inv_a.transform_point(&Point3::new(ray.x * d, ray.y * d, d));
            let pb = b.pose.transform_point(&pw);
            total += 1;
            // Seen from b: in front, in the image, and the viewing angle change moderate.
            if pb.z > 0.05
                && let Some(px) = cam_b.project(&pb.coords)
                && cam_b.contains(&px)
            {
                let ca = a.pose.center();
                let cb = b.pose.center();
                if (ca - pw).angle(&(cb - pw)) < 50f64.to_radians() {
                    seen += 1;
                }
            }
        }
        seen as f64 / total as f64
    }

    /// Sampson error (pixels, at the first camera's focal length) of a correspondence under
    /// the known relative pose.
    fn epipolar_error(&self, a: &FrameFeatures, ka: usize, b: &FrameFeatures, kb: usize) -> f64 {
        let rel = b.pose.compose(&a.pose.inverse()); // a-camera → b-camera
        let r = rel.rotation_matrix();
        let t = rel.translation();
        let e = cross(&t) * r;
        let xa = self.camera(a).pixel_to_normalized(&Vector2::new(
            f64::from(a.xy[ka][0]),
            f64::from(a.xy[ka][1]),
        ));
        let xb = self.camera(b).pixel_to_normalized(&Vector2::new(
            f64::from(b.xy[kb][0]),
            f64::from(b.xy[kb][1]),
        ));
        let (pa, pb) = (xa.push(1.0), xb.push(1.0));
        let ea = e * pa;
        let etb = e.transpose() * pb;
        let num = pb.dot(&ea);
        let den = ea.x * ea.x + ea.y * ea.y + etb.x * etb.x + etb.y * etb.y;
        if den.is_nan() || den <= 0.0 {
            return f64::INFINITY;
        }
        (num * num / den).sqrt() * self.camera(a).fx()
    }

    /// Verified matches of frame `i` (query) with frame `j` (train).
    fn match_pair(
        &self,
        matcher: &mut Matcher,
        i: usize,
        j: usize,
        predicted: &mut Vec<[f32; 2]>,
        out: &mut Vec<Match>,
    ) -> Result<(), MapError> {
        let (a, b) = (&self.frames[i], &self.frames[j]);
        let dim = crate::descriptor::DESCRIPTOR_DIM;
        let qa =
            DescriptorSet::new(&a.descriptors, dim).map_err(|e| MapError::Build(e.to_string()))?;
        let tb =
            DescriptorSet::new(&b.descriptors, dim).map_err(|e| MapError::Build(e.to_string()))?;
        // Guided by b's depth where b has any: predict b's keypoints in a.
        predicted.clear();
        let cam_a = self.camera(a);
        let mut any = false;
        for k in 0..b.xy.len() {
            let p = self
                .depth_point(b, k)
                .and_then(|pw| {
                    let pc = a.pose.transform_point(&Point3::from(pw));
                    (pc.z > 0.05).then(|| cam_a.project(&pc.coords)).flatten()
                })
                .map(|px| [px.x as f32, px.y as f32]);
            any |= p.is_some();
            predicted.push(p.unwrap_or([f32::NAN, f32::NAN]));
        }
        if any {
            let guide = GuidedQuery {
                query_xy: &a.xy,
                train_xy: predicted,
                radius: self.config.guided_radius_px,
            };
            matcher
                .match_guided(&qa, &tb, &guide, out)
                .map_err(|e| MapError::Build(e.to_string()))?;
        } else {
            matcher
                .match_sets(&qa, &tb, out)
                .map_err(|e| MapError::Build(e.to_string()))?;
        }
        out.retain(|m| {
            self.epipolar_error(a, m.query as usize, b, m.train as usize) <= self.config.epipolar_px
        });
        Ok(())
    }

    /// Matches, triangulates and packs the map.
    pub fn build(self) -> Result<(MapContents, MapBuildStats), MapError> {
        let dim = crate::descriptor::DESCRIPTOR_DIM;
        let mut stats = MapBuildStats {
            frames: self.frames.len(),
            keypoints: self.frames.iter().map(|f| f.xy.len()).sum(),
            ..MapBuildStats::default()
        };
        if self.frames.len() < 2 {
            return Err(MapError::Build(format!(
                "need at least 2 mapping frames, got {}",
                self.frames.len()
            )));
        }
        // Median keypoint depth over all frames (for overlap prediction without depth).
        let mut depths: Vec<f32> = self
            .frames
            .iter()
            .flat_map(|f| f.depth.iter().copied().filter(|d| d.is_finite()))
            .collect();
        let median_depth = if depths.is_empty() {
            5.0
        } else {
            let m = depths.len() / 2;
            depths.select_nth_unstable_by(m, f32::total_cmp);
            f64::from(depths[m])
        };

        // Covisible pairs: each frame with its best-overlapping others.
        let n = self.frames.len();
        let mut pairs = Vec::new();
        for i in 0..n {
            let mut cand: Vec<(f64, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    (
                        self.overlap(&self.frames[i], &self.frames[j], median_depth),
                        j,
                    )
                })
                .filter(|&(o, _)| o >= self.config.min_overlap)
                .collect();
            cand.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            for &(_, j) in cand.iter().take(self.config.neighbours) {
                pairs.push((i.min(j), i.max(j)));
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        stats.pairs = pairs.len();

        // Matches → tracks.
        let offsets: Vec<u32> = self
            .frames
            .iter()
            .scan(0u32, |acc, f| {
                let o = *acc;
                *acc += f.xy.len() as u32;
                Some(o)
            })
            .collect();
        let total = stats.keypoints;
        let mut uf = UnionFind::new(total);
        let mut matcher = Matcher::new(MatchConfig {
            ratio: self.config.match_ratio,
            mutual: true,
            max_distance: None,
        })
        .map_err(|e| MapError::Build(e.to_string()))?;
        let mut matches = Vec::new();
        let mut predicted = Vec::new();
        for &(i, j) in &pairs {
            self.match_pair(&mut matcher, i, j, &mut predicted, &mut matches)?;
            stats.matches += matches.len();
            for m in &matches {
                uf.union(offsets[i] + m.query, offsets[j] + m.train);
            }
        }
        let node_frame = |node: u32| -> (usize, usize) {
            let f = offsets.partition_point(|&o| o <= node) - 1;
            (f, (node - offsets[f]) as usize)
        };
        let mut members: Vec<(u32, u32)> = (0..total as u32).map(|v| (uf.find(v), v)).collect();
        members.sort_unstable();

        // Tracks → landmarks.
        let mut landmarks = Landmarks::default();
        let mut max_range = 0.0f64;
        let mut start = 0;
        while start < members.len() {
            let root = members[start].0;
            let end = start + members[start..].partition_point(|m| m.0 == root);
            let track: Vec<(usize, usize)> = members[start..end]
                .iter()
                .map(|m| node_frame(m.1))
                .collect();
            start = end;
            if track.len() < self.config.min_track {
                continue;
            }
            stats.tracks += 1;
            if track.windows(2).any(|w| w[0].0 == w[1].0) {
                stats.inconsistent_tracks += 1;
                continue;
            }
            let Some(point) = self.place(&track, &mut stats) else {
                stats.rejected += 1;
                continue;
            };
            // Medoid descriptor; mean viewing direction; range.
            let desc =
                |&(f, k): &(usize, usize)| &self.frames[f].descriptors[k * dim..(k + 1) * dim];
            let best = (0..track.len())
                .min_by_key(|&a| {
                    track
                        .iter()
                        .map(|o| crate::features::matching::squared_l2(desc(&track[a]), desc(o)))
                        .map(u64::from)
                        .sum::<u64>()
                })
                .unwrap_or(0);
            let mut dir = Vector3::zeros();
            for &(f, _) in &track {
                let v = self.frames[f].pose.center().coords - point;
                max_range = max_range.max(v.norm());
                dir += v.normalize();
            }
            let dir = dir.normalize() * 127.0;
            let q = |v: f64| v.round().clamp(-127.0, 127.0) as i8;
            landmarks
                .positions
                .push([point.x as f32, point.y as f32, point.z as f32]);
            landmarks.descriptors.extend_from_slice(desc(&track[best]));
            landmarks
                .views
                .push([q(dir.x), q(dir.y), q(dir.z), track.len().min(127) as i8]);
        }
        if landmarks.is_empty() {
            return Err(MapError::Build(
                "no landmark survived matching and triangulation (frames without overlap?)".into(),
            ));
        }
        tiles::sort_by_tile(&mut landmarks, dim, self.config.tile_size_m);

        // Retrieval: vocabulary over the landmark descriptors, tf-idf of every frame.
        let mut vocab_config = self.config.vocabulary;
        vocab_config.words = vocab_config.words.min((landmarks.len() / 8).max(1));
        let mut vocabulary = Vocabulary::train(&landmarks.descriptors, dim, &vocab_config)?;
        let mut word_lists = Vec::with_capacity(n);
        let mut words = Vec::new();
        let mut assigner = Matcher::new(MatchConfig {
            ratio: 1.0,
            mutual: false,
            max_distance: None,
        })
        .map_err(|e| MapError::Build(e.to_string()))?;
        for f in &self.frames {
            vocabulary.assign(&mut assigner, &f.descriptors, &mut words)?;
            word_lists.push(words.clone());
        }
        vocabulary.set_idf(word_lists.iter().map(|w| w.as_slice()));
        let mut bow = Vec::new();
        let keyframes = self
            .frames
            .iter()
            .zip(&word_lists)
            .map(|(f, w)| {
                vocabulary.bow(w, &mut bow);
                Keyframe {
                    pose: f.pose,
                    camera: f.camera,
                    bow: quantize_bow(&bow),
                }
            })
            .collect();

        Ok((
            MapContents {
                descriptor_dim: dim,
                model_id: self.model_id,
                geo_anchor: None,
                tile_size_m: self.config.tile_size_m,
                max_range_m: (max_range * 1.1) as f32,
                cameras: self.cameras.clone(),
                keyframes,
                vocabulary,
                landmarks,
            },
            stats,
        ))
    }

    /// The landmark position of a track: triangulated, or from depth when the rays are too
    /// close to parallel; `None` when it fails the checks.
    fn place(&self, track: &[(usize, usize)], stats: &mut MapBuildStats) -> Option<Vector3<f64>> {
        let obs: Vec<Observation<'_>> = track
            .iter()
            .map(|&(f, k)| {
                let fr = &self.frames[f];
                Observation {
                    camera: self.camera(fr),
                    pose: &fr.pose,
                    pixel: Vector2::new(f64::from(fr.xy[k][0]), f64::from(fr.xy[k][1])),
                }
            })
            .collect();
        match triangulate(&obs, &self.config.triangulation) {
            Ok(p) => {
                stats.triangulated += 1;
                return Some(p.point);
            }
            Err(crate::geometry::GeometryError::SmallTriangulationAngle { .. }) => {}
            Err(_) => return None,
        }
        // Depth: mean of the views' back-projections, checked by reprojection in every view.
        let pts: Vec<Vector3<f64>> = track
            .iter()
            .filter_map(|&(f, k)| self.depth_point(&self.frames[f], k))
            .collect();
        if pts.is_empty() {
            return None;
        }
        let p = pts.iter().sum::<Vector3<f64>>() / pts.len() as f64;
        for o in &obs {
            let pc = o.pose.transform_point(&Point3::from(p));
            if pc.z <= 0.05 {
                return None;
            }
            let px = o.camera.project(&pc.coords)?;
            if (px - o.pixel).norm() > self.config.triangulation.max_reprojection_px {
                return None;
            }
        }
        stats.from_depth += 1;
        Some(p)
    }
}
