//! Keypoints, oriented patches and descriptor matching: the runtime's local features.
//!
//! # How the pieces fit
//!
//! A [`Frame`] in any pixel format is reduced to gray ([`Frame::to_gray_into`]), written straight
//! into level 0 of an image pyramid (16 levels of scale factor 1.1 by default, 8 of 1.3 for
//! maps and localisation — [`FeatureConfig::localization`]; separable bilinear
//! down-sampling). On every level a Shi–Tomasi corner response (minimum eigenvalue of the
//! smoothed gradient structure tensor) is computed; its strict 3×3 local maxima are the
//! candidates. Each level gets a share of the keypoint budget proportional to `1/s^l` (as in
//! ORB), and within a level a grid-bucketed selection takes every cell's best corner before any
//! cell's second, so keypoints spread over the image (cells sized by the level's budget,
//! [`FeatureConfig::cells_per_keypoint`]). Each kept corner gets a sub-pixel position
//! (a parabola through the response), an orientation (intensity centroid over a disc of radius
//! 15 level pixels) and a `PATCH x PATCH` patch sampled on a grid rotated by that orientation,
//! one level pixel apart — so the patch covers `size = PATCH * scale` level-0 pixels.
//!
//! The patches are the input of the descriptor model (`[N, 1, 32, 32]`, u8, row-major,
//! contiguous). [`extract_patches`] cuts patches for any keypoints from a gray image with the
//! very same sampling code, for training data.
//!
//! [`matching`] compares int8 descriptors: brute force nearest and second nearest (squared L2,
//! exact integer arithmetic, AVX2/AVX-512 kernels chosen at run time and checked bit-exactly
//! against the scalar reference), ratio test and mutual check, and a guided mode for tracking.
//! [`homography`] builds the deterministic image pairs of the homography benchmark.
//!
//! All buffers live in a [`FeatureExtractor`] kept between frames: after the first frame of a
//! given size it allocates nothing.
//!
//! ```
//! use sextant_runtime::features::{FeatureConfig, FeatureExtractor, PATCH};
//! use sextant_runtime::{Frame, PixelFormat};
//!
//! // A checkerboard: plenty of corners.
//! let (w, h) = (160u32, 120u32);
//! let pixels: Vec<u8> = (0..w * h)
//!     .map(|i| if ((i % w) / 10 + (i / w) / 10) % 2 == 0 { 40 } else { 210 })
//!     .collect();
//! let frame = Frame::new(PixelFormat::Gray8, w, h, w as usize, &pixels)?;
//! let mut extractor = FeatureExtractor::new(FeatureConfig { max_keypoints: 50, ..Default::default() })?;
//! let features = extractor.extract(&frame)?;
//! assert!(!features.keypoints.is_empty() && features.keypoints.len() <= 50);
//! assert_eq!(features.patches.len(), features.keypoints.len() * PATCH * PATCH);
//! # Ok::<(), sextant_runtime::Error>(())
//! ```

pub mod homography;
pub mod matching;
pub mod pipeline;

pub(crate) mod detect;
pub(crate) mod nms;
pub(crate) mod orientation;
pub(crate) mod patch;
#[cfg(target_arch = "x86_64")]
mod patch_x86;
pub(crate) mod pyramid;

use crate::error::Result;
use crate::frame::Frame;
use crate::image::GrayImage;

pub use matching::{
    Best2, DescriptorSet, GuidedQuery, Kernel, Match, MatchConfig, Matcher, squared_l2,
};
pub use pipeline::{DescribedFeatures, FeaturePipeline};

/// Side of a descriptor patch in pixels: patches are `PATCH x PATCH` u8, row-major.
pub const PATCH: usize = 32;

/// Bytes of one patch.
pub const PATCH_AREA: usize = PATCH * PATCH;

/// Why a feature call could not do what was asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FeatureError {
    /// A configuration value out of its valid range.
    #[error("invalid feature configuration: {0}")]
    InvalidConfig(String),
    /// A caller-provided buffer of the wrong length.
    #[error("{what} buffer holds {got} elements, expected {expected}")]
    BufferSize {
        /// Which buffer.
        what: &'static str,
        /// Elements needed.
        expected: usize,
        /// Elements given.
        got: usize,
    },
    /// A descriptor dimension that is zero or not a multiple of 32.
    #[error("descriptor dimension {0} must be a positive multiple of 32")]
    InvalidDimension(usize),
    /// Two descriptor sets (or a set and its positions) that do not fit together.
    #[error("mismatched inputs: {0}")]
    Mismatch(String),
    /// A SIMD kernel the CPU cannot run was requested explicitly.
    #[error("kernel {0} is not supported by this CPU")]
    UnsupportedKernel(&'static str),
    /// The descriptor model failed.
    #[error("descriptor model: {0}")]
    Descriptor(#[from] crate::descriptor::DescriptorError),
}

/// A keypoint in level-0 pixel coordinates (pixel centres at +0.5).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Keypoint {
    /// Column, pixels.
    pub x: f32,
    /// Row, pixels.
    pub y: f32,
    /// Diameter, in level-0 pixels, of the patch's support at the keypoint's scale.
    pub size: f32,
    /// Orientation of the patch's x axis, radians in (-π, π] (x right, y down).
    pub angle: f32,
    /// Corner response (Shi–Tomasi λ_min, grey levels² per pixel², at the keypoint's level).
    pub score: f32,
    /// Pyramid level it was detected on (0 = full resolution).
    pub level: u8,
}

/// Detector and patch settings.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureConfig {
    /// Most keypoints returned per image.
    pub max_keypoints: usize,
    /// Most pyramid levels (1 ..= 16).
    pub levels: usize,
    /// Scale factor between pyramid levels (1.05 ..= 2.0).
    pub scale_factor: f32,
    /// Grid cell side for spatial spread, in pixels of level 0 (scaled down with each level, at
    /// least 8 level pixels): the smallest cell.
    pub grid_cell: u32,
    /// Cells per keypoint of a level's budget (0: cells of `grid_cell` only). A level with a
    /// budget of `k` keypoints uses cells of side `sqrt(area / (cells_per_keypoint · k))` when
    /// that is larger than `grid_cell`'s, so the grid spreads keypoints however finely the
    /// budget is divided among levels. Small values spread more evenly; large values let strong
    /// corners win more often (4: see docs/features.md for the trade-off measured).
    pub cells_per_keypoint: u32,
    /// Smallest corner response kept (λ_min in grey levels² per pixel²).
    pub min_response: f32,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            max_keypoints: 1000,
            levels: 16,
            scale_factor: 1.1,
            grid_cell: 16,
            cells_per_keypoint: 4,
            min_response: 1.0,
        }
    }
}

impl FeatureConfig {
    /// The detector settings of maps and of the localiser's cold start: a coarser pyramid
    /// (factor 1.3, 8 levels, fixed 32-pixel cells) than [`FeatureConfig::default`]'s, so 2.4 instead of
    /// 5.8 frame areas of corner response per frame. The localiser's figures (`sextant eval
    /// localize`, the localisation bench) are measured with it; the finer default matches
    /// better across viewpoint, blur and noise (`sextant eval features`) but has not yet been
    /// made the localiser's (see docs/features.md).
    pub fn localization() -> FeatureConfig {
        FeatureConfig {
            levels: 8,
            scale_factor: 1.3,
            grid_cell: 32,
            cells_per_keypoint: 0,
            ..FeatureConfig::default()
        }
    }

    /// Checks every field's range.
    pub fn validate(&self) -> std::result::Result<(), FeatureError> {
        let bad = |m: String| Err(FeatureError::InvalidConfig(m));
        if !(self.scale_factor.is_finite() && (1.05..=2.0).contains(&self.scale_factor)) {
            return bad(format!(
                "scale_factor {} outside 1.05..=2.0",
                self.scale_factor
            ));
        }
        if self.levels == 0 || self.levels > 16 {
            return bad(format!("levels {} outside 1..=16", self.levels));
        }
        if self.grid_cell == 0 {
            return bad("grid_cell must be positive".into());
        }
        if !(self.min_response.is_finite() && self.min_response >= 0.0) {
            return bad(format!("min_response {} must be >= 0", self.min_response));
        }
        if self.max_keypoints > 1 << 20 {
            return bad(format!("max_keypoints {} above 2^20", self.max_keypoints));
        }
        Ok(())
    }
}

/// Keypoints and their patches, borrowed from a [`FeatureExtractor`].
#[derive(Clone, Copy, Debug)]
pub struct Features<'a> {
    /// The keypoints, strongest spread first (grid rank, then score), level by level.
    pub keypoints: &'a [Keypoint],
    /// `keypoints.len() * PATCH_AREA` bytes: patch `i` at `i * PATCH_AREA`.
    pub patches: &'a [u8],
}

/// Distance from a level's border inside which no keypoint is detected (level pixels): the
/// orientation disc and the unrotated patch fit inside.
pub(crate) const BORDER: usize = PATCH / 2;

/// The feature pipeline with all of its buffers: reuse one per camera stream.
#[derive(Debug)]
pub struct FeatureExtractor {
    config: FeatureConfig,
    pyramid: pyramid::Pyramid,
    scratch: detect::ResponseScratch,
    candidates: Vec<nms::Candidate>,
    grid: nms::GridScratch,
    mask: Vec<u8>,
    keypoints: Vec<Keypoint>,
    patches: Vec<u8>,
    umax: [usize; orientation::ORIENTATION_RADIUS + 1],
}

impl FeatureExtractor {
    /// A pipeline with the given settings (validated).
    pub fn new(config: FeatureConfig) -> Result<FeatureExtractor> {
        config.validate()?;
        Ok(FeatureExtractor {
            config,
            pyramid: pyramid::Pyramid::default(),
            scratch: detect::ResponseScratch::default(),
            candidates: Vec::new(),
            grid: nms::GridScratch::default(),
            mask: Vec::new(),
            keypoints: Vec::new(),
            patches: Vec::new(),
            umax: orientation::disc_half_widths(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// Keypoints and patches of a camera frame (any pixel format).
    pub fn extract(&mut self, frame: &Frame<'_>) -> Result<Features<'_>> {
        frame.to_gray_into(self.pyramid.base_mut());
        self.run();
        Ok(self.features())
    }

    /// Keypoints and patches of a gray image.
    pub fn extract_gray(&mut self, gray: &GrayImage) -> Result<Features<'_>> {
        let base = self.pyramid.base_mut();
        base.resize(gray.width(), gray.height());
        base.as_mut_slice().copy_from_slice(gray.as_slice());
        self.run();
        Ok(self.features())
    }

    /// The result of the last extraction.
    pub fn features(&self) -> Features<'_> {
        Features {
            keypoints: &self.keypoints,
            patches: &self.patches,
        }
    }

    /// The detector's first stage alone on a gray image: the pyramid, and every level's corner
    /// response and local maxima above `min_response` (no selection, orientation or patches);
    /// returns the number of candidates over all levels. For benchmarks comparing this stage with
    /// the GPU's (`gpu::GpuKeypoints::detect_candidates`); levels too small for keypoints are
    /// skipped, as in [`FeatureExtractor::extract`].
    pub fn detect_candidates(&mut self, gray: &GrayImage) -> usize {
        let base = self.pyramid.base_mut();
        base.resize(gray.width(), gray.height());
        base.as_mut_slice().copy_from_slice(gray.as_slice());
        self.pyramid
            .build_from_base(self.config.scale_factor, self.config.levels, MIN_LEVEL_SIDE);
        let mut total = 0;
        for l in 0..self.pyramid.len() {
            let img = self.pyramid.level(l);
            let (w, h) = (img.width(), img.height());
            if !level_is_detectable(w, h) {
                continue;
            }
            detect::shi_tomasi(img, &mut self.scratch);
            self.candidates.clear();
            nms::local_maxima(
                &self.scratch.response,
                w as usize,
                h as usize,
                BORDER,
                self.config.min_response,
                &mut self.mask,
                &mut self.candidates,
            );
            total += self.candidates.len();
        }
        total
    }

    /// The gray image of the last extraction.
    pub fn gray(&self) -> &GrayImage {
        self.pyramid.level(0)
    }

    fn run(&mut self) {
        let cfg = self.config.clone();
        self.pyramid
            .build_from_base(cfg.scale_factor, cfg.levels, MIN_LEVEL_SIDE);
        // Room for the worst case of every level (level 0 bounds them all), reserved once per
        // frame size: a busier frame never grows a buffer, and the pages are touched only when
        // used. Cells are at least 8 level pixels (`level_grid_cell`).
        let (w0, h0) = (self.gray().width() as usize, self.gray().height() as usize);
        let most = nms::max_candidates(w0, h0);
        self.candidates
            .reserve(most.saturating_sub(self.candidates.len()));
        self.grid
            .reserve(most, w0.div_ceil(8) * h0.div_ceil(8) + w0 + h0);
        self.keypoints.clear();
        let levels = self.pyramid.len();
        for_each_level_share(&cfg, levels, |l, share| self.detect_level(l, share));
        let n = self.keypoints.len();
        // No clearing: `sample_patch` writes every byte of every patch.
        self.patches.resize(n * PATCH_AREA, 0);
        for (kp, out) in self
            .keypoints
            .iter()
            .zip(self.patches.chunks_exact_mut(PATCH_AREA))
        {
            let level = usize::from(kp.level);
            let [sx, sy] = self.pyramid.scale(level);
            patch::sample_patch(
                self.pyramid.level(level),
                kp.x / sx,
                kp.y / sy,
                1.0,
                kp.angle,
                out,
            );
        }
    }

    /// Detects up to `k` keypoints on level `l`; returns how many were added.
    fn detect_level(&mut self, l: usize, k: usize) -> usize {
        let img = self.pyramid.level(l);
        let (w, h) = (img.width() as usize, img.height() as usize);
        if k == 0 || !level_is_detectable(w as u32, h as u32) {
            return 0;
        }
        detect::shi_tomasi(img, &mut self.scratch);
        self.candidates.clear();
        nms::local_maxima(
            &self.scratch.response,
            w,
            h,
            BORDER,
            self.config.min_response,
            &mut self.mask,
            &mut self.candidates,
        );
        let scale = self.pyramid.scale(l);
        let cell = level_grid_cell(&self.config, scale, w as u32, h as u32, k);
        let n = nms::grid_select(&mut self.candidates, k, cell, w as u32, &mut self.grid);
        let resp = &self.scratch.response;
        for c in &self.candidates[..n] {
            let (x, y) = (c.x as usize, c.y as usize);
            let i = y * w + x;
            let around = [resp[i - 1], resp[i + 1], resp[i - w], resp[i + w]];
            let m = orientation::moments(img, x, y, &self.umax);
            let angle = orientation::angle_of_moments(m);
            self.keypoints.push(keypoint_at(c, around, l, scale, angle));
        }
        n
    }
}

/// Smallest side of a pyramid level: the orientation disc and the unrotated patch fit inside
/// with room for a few keypoints.
pub(crate) const MIN_LEVEL_SIDE: u32 = (2 * BORDER + 8) as u32;

/// Whether a `w x h` level has pixels at least [`BORDER`] from every side (else it gives no
/// keypoints).
pub(crate) fn level_is_detectable(w: u32, h: u32) -> bool {
    w as usize > 2 * BORDER && h as usize > 2 * BORDER
}

/// The grid cell (level pixels) of a `w x h` level of `scale` level-0 pixels per pixel with a
/// budget of `share` keypoints: `grid_cell / scale` (at least 8), or larger where
/// `cells_per_keypoint` asks for fewer, larger cells (see [`FeatureConfig::cells_per_keypoint`]).
pub(crate) fn level_grid_cell(
    config: &FeatureConfig,
    [sx, sy]: [f32; 2],
    w: u32,
    h: u32,
    share: usize,
) -> u32 {
    let scale = 0.5 * (sx + sy);
    let fixed = ((config.grid_cell as f32 / scale).round() as u32).max(8);
    if config.cells_per_keypoint == 0 {
        return fixed;
    }
    let cells = f64::from(config.cells_per_keypoint) * share.max(1) as f64;
    let adaptive = (f64::from(w) * f64::from(h) / cells).sqrt().round() as u32;
    fixed.max(adaptive)
}

/// ORB's budget over `levels` levels: level `l` gets a share proportional to `(1/s)^l`, what a
/// level does not use rolls down to the next, the last level gets whatever is left. Calls
/// `detect(l, share)` level by level; it returns how many keypoints it added (`<= share`).
pub(crate) fn for_each_level_share(
    cfg: &FeatureConfig,
    levels: usize,
    mut detect: impl FnMut(usize, usize) -> usize,
) {
    let f = 1.0 / f64::from(cfg.scale_factor);
    let total: f64 = (0..levels).map(|l| f.powi(l as i32)).sum();
    let mut carried = 0usize;
    let mut added = 0usize;
    for l in 0..levels {
        let share = if l + 1 == levels {
            cfg.max_keypoints.saturating_sub(added)
        } else {
            ((cfg.max_keypoints as f64) * f.powi(l as i32) / total).round() as usize + carried
        };
        let share = share.min(cfg.max_keypoints - added);
        let got = detect(l, share).min(share);
        added += got;
        carried = share - got;
    }
}

/// The keypoint of a selected candidate of level `l` (`scale` level-0 pixels per level pixel),
/// with the responses `around` it (`[left, right, up, down]`) for the sub-pixel parabola and its
/// orientation `angle`.
pub(crate) fn keypoint_at(
    c: &nms::Candidate,
    [left, right, up, down]: [f32; 4],
    l: usize,
    [sx, sy]: [f32; 2],
    angle: f32,
) -> Keypoint {
    let dx = nms::parabola_offset(left, c.score, right);
    let dy = nms::parabola_offset(up, c.score, down);
    Keypoint {
        x: (c.x as f32 + 0.5 + dx) * sx,
        y: (c.y as f32 + 0.5 + dy) * sy,
        size: PATCH as f32 * (0.5 * (sx + sy)),
        angle,
        score: c.score,
        level: l as u8,
    }
}

/// The corner response of `img` ([`Keypoint::score`]'s function: Shi–Tomasi `λ_min` in grey
/// levels² per pixel², the exact integer contract of `shaders/detect.wgsl`), `width * height`
/// values row-major, zero within 3 pixels of the border. The reference the GPU kernel is tested
/// against; the extractor computes it into reused buffers instead.
pub fn corner_response(img: &GrayImage) -> Vec<f32> {
    let mut s = detect::ResponseScratch::default();
    detect::shi_tomasi(img, &mut s);
    s.response
}

/// The image pyramid [`FeatureExtractor`] builds from `gray` with `config`'s scale factor and
/// levels: level 0 is `gray`, each further level a bilinear down-sampling of the one above (8-bit
/// fixed point, the contract of `shaders/detect.wgsl`). The reference the GPU pyramid is tested
/// against.
pub fn pyramid_levels(gray: &GrayImage, config: &FeatureConfig) -> Result<Vec<GrayImage>> {
    config.validate()?;
    let mut pyr = pyramid::Pyramid::default();
    pyr.build(gray, config.scale_factor, config.levels, MIN_LEVEL_SIDE);
    Ok((0..pyr.len()).map(|l| pyr.level(l).clone()).collect())
}

/// Cuts the oriented, scale-normalised patch of each keypoint out of `gray` into `out`
/// (`keypoints.len() * PATCH_AREA` bytes, patch `i` at `i * PATCH_AREA`), with the same pyramid
/// (default [`FeatureConfig`] scale factor and levels) and sampling as [`FeatureExtractor`], so
/// patches cut here for training equal the ones the runtime describes. Keypoints may come from
/// anywhere: the level is chosen from `size`; a non-finite size or angle is treated as 32 px / 0.
pub fn extract_patches(gray: &GrayImage, keypoints: &[Keypoint], out: &mut [u8]) -> Result<()> {
    extract_patches_with(&FeatureConfig::default(), gray, keypoints, out)
}

/// [`extract_patches`] with the pyramid of another configuration.
pub fn extract_patches_with(
    config: &FeatureConfig,
    gray: &GrayImage,
    keypoints: &[Keypoint],
    out: &mut [u8],
) -> Result<()> {
    config.validate()?;
    let expected = keypoints.len() * PATCH_AREA;
    if out.len() != expected {
        return Err(FeatureError::BufferSize {
            what: "patch",
            expected,
            got: out.len(),
        }
        .into());
    }
    if keypoints.is_empty() {
        return Ok(());
    }
    let mut pyr = pyramid::Pyramid::default();
    pyr.build(gray, config.scale_factor, config.levels, MIN_LEVEL_SIDE);
    for (kp, o) in keypoints.iter().zip(out.chunks_exact_mut(PATCH_AREA)) {
        patch::sample_keypoint(&pyr, kp, o);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(w: u32, h: u32, cell: u32) -> GrayImage {
        let data = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                if ((x / cell) + (y / cell)).is_multiple_of(2) {
                    30
                } else {
                    220
                }
            })
            .collect();
        GrayImage::from_vec(w, h, data).unwrap()
    }

    #[test]
    fn extractor_patches_equal_extract_patches() {
        let g = checker(200, 150, 13);
        let mut ex = FeatureExtractor::new(FeatureConfig::default()).unwrap();
        let f = ex.extract_gray(&g).unwrap();
        assert!(f.keypoints.len() > 20);
        let mut cut = vec![0u8; f.patches.len()];
        extract_patches(&g, f.keypoints, &mut cut).unwrap();
        assert_eq!(cut, f.patches);
    }

    #[test]
    fn checker_corners_are_found_near_grid_crossings() {
        let g = checker(200, 150, 20);
        let mut ex = FeatureExtractor::new(FeatureConfig::default()).unwrap();
        let f = ex.extract_gray(&g).unwrap();
        let level0: Vec<_> = f.keypoints.iter().filter(|k| k.level == 0).collect();
        assert!(level0.len() >= 20, "{}", level0.len());
        for k in level0 {
            let ex = (k.x / 20.0).round() * 20.0 - k.x;
            let ey = (k.y / 20.0).round() * 20.0 - k.y;
            assert!(ex.abs() < 0.6 && ey.abs() < 0.6, "{k:?}");
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        for c in [
            FeatureConfig {
                scale_factor: 1.0,
                ..Default::default()
            },
            FeatureConfig {
                scale_factor: f32::NAN,
                ..Default::default()
            },
            FeatureConfig {
                levels: 0,
                ..Default::default()
            },
            FeatureConfig {
                grid_cell: 0,
                ..Default::default()
            },
            FeatureConfig {
                min_response: -1.0,
                ..Default::default()
            },
        ] {
            assert!(FeatureExtractor::new(c).is_err());
        }
    }
}
