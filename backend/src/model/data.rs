//! Training data: gray photos, and patch pairs with known correspondence cut from them through
//! random homographies with photometric changes, blur and noise.
//!
//! A pair is the same physical point seen in two synthetic views of one photo. View A is the
//! photo itself (photometrically perturbed); view B is the photo warped by a random homography
//! `H` (rotation, zoom, perspective tilt, shift), perturbed independently. Both patches are
//! oriented, scale-normalised 32×32 samples as the runtime's keypoint stage produces them: view
//! A at a random orientation and scale, view B at the orientation and scale the *similarity part*
//! of `H` maps them to (its local Jacobian's rotation and √det), plus detector-like jitter
//! (position, angle, scale). The residual anisotropic distortion of `H` is left in, as a real
//! detector would leave it.

use std::path::Path;

use sextant_runtime::descriptor::{PATCH_PIXELS, PATCH_SIZE};
use sextant_runtime::rgb_to_luma;

use super::rng::Rng;
use super::{ModelError, Result};

/// A gray photo as f32 intensities.
#[derive(Debug, Clone)]
pub struct Photo {
    /// File stem (e.g. `brick`).
    pub name: String,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major gray levels in `[0, 255]`.
    pub pixels: Vec<f32>,
}

/// Decodes a PNG (gray, gray+alpha, RGB, RGBA; 8 bit) to gray with the runtime's luma rule.
pub fn load_photo(path: &Path) -> Result<(Photo, Vec<u8>)> {
    let bytes =
        std::fs::read(path).map_err(|e| ModelError::Io(format!("{}: {e}", path.display())))?;
    let photo = decode_png(&bytes, path)?;
    Ok((photo, bytes))
}

fn decode_png(bytes: &[u8], path: &Path) -> Result<Photo> {
    let bad = |m: String| ModelError::Data(format!("{}: {m}", path.display()));
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| bad(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("image too large".into()))?;
    let mut buf = vec![0; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(e.to_string()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => return Err(bad(format!("unsupported colour type {other:?}"))),
    };
    if info.bit_depth != png::BitDepth::Eight || buf.len() < w * h * channels || w < 96 || h < 96 {
        return Err(bad("need an 8-bit image of at least 96×96".into()));
    }
    let pixels = buf[..w * h * channels]
        .chunks_exact(channels)
        .map(|p| match channels {
            1 | 2 => f32::from(p[0]),
            _ => f32::from(rgb_to_luma(p[0], p[1], p[2])),
        })
        .collect();
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Photo {
        name,
        width: w,
        height: h,
        pixels,
    })
}

impl Photo {
    /// Bilinear sample at continuous coordinates (pixel centres at +0.5), clamped at the border.
    pub fn sample(&self, x: f64, y: f64) -> f32 {
        let fx = (x - 0.5).clamp(0.0, (self.width - 1) as f64);
        let fy = (y - 0.5).clamp(0.0, (self.height - 1) as f64);
        let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(self.width - 1), (y0 + 1).min(self.height - 1));
        let (ax, ay) = ((fx - x0 as f64) as f32, (fy - y0 as f64) as f32);
        let p = |x: usize, y: usize| self.pixels[y * self.width + x];
        let top = p(x0, y0) * (1.0 - ax) + p(x1, y0) * ax;
        let bottom = p(x0, y1) * (1.0 - ax) + p(x1, y1) * ax;
        top * (1.0 - ay) + bottom * ay
    }

    /// Cornerness (smaller eigenvalue of the structure tensor over a 15×15 window) at a point.
    fn cornerness(&self, cx: usize, cy: usize) -> f64 {
        let (mut xx, mut xy, mut yy) = (0.0, 0.0, 0.0);
        for y in cy - 7..=cy + 7 {
            for x in cx - 7..=cx + 7 {
                let p = |x: usize, y: usize| f64::from(self.pixels[y * self.width + x]);
                let gx = p(x + 1, y) - p(x - 1, y);
                let gy = p(x, y + 1) - p(x, y - 1);
                xx += gx * gx;
                xy += gx * gy;
                yy += gy * gy;
            }
        }
        let tr = xx + yy;
        let det = xx * yy - xy * xy;
        tr / 2.0 - ((tr * tr / 4.0 - det).max(0.0)).sqrt()
    }
}

/// A 3×3 homography, row-major, mapping view-A pixels to view-B pixels.
#[derive(Debug, Clone, Copy)]
pub struct Homography(pub [f64; 9]);

impl Homography {
    /// Applies the homography to a point.
    pub fn map(&self, x: f64, y: f64) -> (f64, f64) {
        let h = &self.0;
        let w = h[6] * x + h[7] * y + h[8];
        (
            (h[0] * x + h[1] * y + h[2]) / w,
            (h[3] * x + h[4] * y + h[5]) / w,
        )
    }

    /// The inverse (adjugate; the scale is irrelevant).
    pub fn inverse(&self) -> Homography {
        let h = &self.0;
        Homography([
            h[4] * h[8] - h[5] * h[7],
            h[2] * h[7] - h[1] * h[8],
            h[1] * h[5] - h[2] * h[4],
            h[5] * h[6] - h[3] * h[8],
            h[0] * h[8] - h[2] * h[6],
            h[2] * h[3] - h[0] * h[5],
            h[3] * h[7] - h[4] * h[6],
            h[1] * h[6] - h[0] * h[7],
            h[0] * h[4] - h[1] * h[3],
        ])
    }

    /// Local similarity of the map at a point: (scale, rotation in radians).
    pub fn local_similarity(&self, x: f64, y: f64) -> (f64, f64) {
        let e = 0.5;
        let (ax, ay) = self.map(x + e, y);
        let (bx, by) = self.map(x - e, y);
        let (cx, cy) = self.map(x, y + e);
        let (dx, dy) = self.map(x, y - e);
        let j = [
            (ax - bx) / (2.0 * e),
            (cx - dx) / (2.0 * e),
            (ay - by) / (2.0 * e),
            (cy - dy) / (2.0 * e),
        ];
        let det = (j[0] * j[3] - j[1] * j[2]).abs();
        (det.sqrt(), (j[2] - j[1]).atan2(j[0] + j[3]))
    }

    fn random(rng: &mut Rng, cfg: &AugmentConfig, w: f64, h: f64) -> Homography {
        let (cx, cy) = (w / 2.0, h / 2.0);
        let angle = rng
            .range(-cfg.max_rotation_deg, cfg.max_rotation_deg)
            .to_radians();
        let zoom = (rng.range(-1.0, 1.0) * cfg.max_zoom.ln()).exp();
        let (px, py) = (
            rng.range(-cfg.max_tilt, cfg.max_tilt) / w.max(h),
            rng.range(-cfg.max_tilt, cfg.max_tilt) / w.max(h),
        );
        let (c, s) = (angle.cos() * zoom, angle.sin() * zoom);
        let (tx, ty) = (rng.range(-0.05, 0.05) * w, rng.range(-0.05, 0.05) * h);
        // Centre, perspective, similarity, un-centre.
        let t = |m: [f64; 9], n: [f64; 9]| {
            let mut r = [0.0; 9];
            for i in 0..3 {
                for j in 0..3 {
                    r[i * 3 + j] = (0..3).map(|k| m[i * 3 + k] * n[k * 3 + j]).sum();
                }
            }
            r
        };
        let centre = [1.0, 0.0, -cx, 0.0, 1.0, -cy, 0.0, 0.0, 1.0];
        let persp = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, px, py, 1.0];
        let sim = [c, -s, cx + tx, s, c, cy + ty, 0.0, 0.0, 1.0];
        Homography(t(sim, t(persp, centre)))
    }
}

/// How views are perturbed (part of the build configuration).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Largest in-plane rotation of the homography, degrees.
    pub max_rotation_deg: f64,
    /// Largest zoom factor (and its inverse).
    pub max_zoom: f64,
    /// Perspective strength (projective terms × image size).
    pub max_tilt: f64,
    /// Patch sampling step range in source pixels per patch pixel.
    pub patch_scale: [f64; 2],
    /// Detector jitter: position (pixels of view B), angle (degrees), log-scale, 1 σ each.
    pub jitter_px: f64,
    /// Orientation jitter, degrees (1 σ).
    pub jitter_deg: f64,
    /// Relative scale jitter (1 σ).
    pub jitter_scale: f64,
    /// Contrast gain range.
    pub gain: [f64; 2],
    /// Brightness offset range (gray levels).
    pub bias: [f64; 2],
    /// Gamma range.
    pub gamma: [f64; 2],
    /// Gaussian blur σ range (patch pixels).
    pub blur: [f64; 2],
    /// Gaussian noise σ range (gray levels).
    pub noise: [f64; 2],
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            max_rotation_deg: 30.0,
            max_zoom: 1.4,
            max_tilt: 0.35,
            patch_scale: [1.2, 2.4],
            jitter_px: 0.6,
            jitter_deg: 4.0,
            jitter_scale: 0.04,
            gain: [0.6, 1.4],
            bias: [-30.0, 30.0],
            gamma: [0.7, 1.4],
            blur: [0.0, 1.0],
            noise: [0.0, 4.0],
        }
    }
}

/// Matching patch pairs: `a[i]` and `b[i]` show the same point; `source[i]` names the photo.
#[derive(Debug, Clone, Default)]
pub struct PairSet {
    /// View-A patches, `PATCH_PIXELS` bytes each.
    pub a: Vec<u8>,
    /// View-B patches.
    pub b: Vec<u8>,
    /// Index of the source photo for each pair.
    pub source: Vec<usize>,
}

impl PairSet {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.source.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }
}

#[derive(Debug, Clone, Copy)]
struct Photometric {
    gain: f64,
    bias: f64,
    gamma: f64,
    blur: f64,
    noise: f64,
}

impl Photometric {
    fn random(rng: &mut Rng, c: &AugmentConfig) -> Photometric {
        Photometric {
            gain: rng.range(c.gain[0], c.gain[1]),
            bias: rng.range(c.bias[0], c.bias[1]),
            gamma: rng.range(c.gamma[0], c.gamma[1]),
            blur: rng.range(c.blur[0], c.blur[1]),
            noise: rng.range(c.noise[0], c.noise[1]),
        }
    }
}

const MARGIN: usize = 2;
const BIG: usize = PATCH_SIZE + 2 * MARGIN;

/// Samples one oriented patch: centre `(x, y)` in view coordinates, `step` view pixels per patch
/// pixel, angle `theta`; `to_source` maps view coordinates to photo coordinates. 2×2
/// supersampling per patch pixel, then blur, photometric change and noise.
#[allow(clippy::too_many_arguments)]
fn cut_patch(
    photo: &Photo,
    to_source: &dyn Fn(f64, f64) -> (f64, f64),
    x: f64,
    y: f64,
    step: f64,
    theta: f64,
    ph: Photometric,
    rng: &mut Rng,
    out: &mut [u8],
) {
    let (c, s) = (theta.cos() * step, theta.sin() * step);
    let mut big = [0f64; BIG * BIG];
    let half = BIG as f64 / 2.0;
    for v in 0..BIG {
        for u in 0..BIG {
            let mut acc = 0.0;
            for (du, dv) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                let (pu, pv) = (u as f64 + du - half, v as f64 + dv - half);
                let (vx, vy) = (x + c * pu - s * pv, y + s * pu + c * pv);
                let (sx, sy) = to_source(vx, vy);
                acc += f64::from(photo.sample(sx, sy));
            }
            big[v * BIG + u] = acc / 4.0;
        }
    }
    // Separable Gaussian blur (5 taps) when σ is noticeable.
    if ph.blur > 0.2 {
        let k: Vec<f64> = (-2..=2)
            .map(|i: i32| (-f64::from(i * i) / (2.0 * ph.blur * ph.blur)).exp())
            .collect();
        let norm: f64 = k.iter().sum();
        let mut tmp = [0f64; BIG * BIG];
        for v in 0..BIG {
            for u in 0..BIG {
                tmp[v * BIG + u] = (0..5)
                    .map(|t| big[v * BIG + (u + t).clamp(2, BIG + 1) - 2] * k[t])
                    .sum::<f64>()
                    / norm;
            }
        }
        for v in 0..BIG {
            for u in 0..BIG {
                big[v * BIG + u] = (0..5)
                    .map(|t| tmp[((v + t).clamp(2, BIG + 1) - 2) * BIG + u] * k[t])
                    .sum::<f64>()
                    / norm;
            }
        }
    }
    for v in 0..PATCH_SIZE {
        for u in 0..PATCH_SIZE {
            let g = big[(v + MARGIN) * BIG + u + MARGIN] / 255.0;
            let val =
                255.0 * g.max(0.0).powf(ph.gamma) * ph.gain + ph.bias + ph.noise * rng.normal();
            out[v * PATCH_SIZE + u] = val.round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// Picks up to `count` textured points (cornerness above the median of random candidates), at
/// least `margin` pixels from the border.
fn keypoints(photo: &Photo, rng: &mut Rng, count: usize, margin: usize) -> Vec<(f64, f64)> {
    if photo.width <= 2 * margin + 16 || photo.height <= 2 * margin + 16 {
        return Vec::new();
    }
    let mut cands: Vec<(f64, usize, usize)> = (0..count * 3)
        .map(|_| {
            let x = margin + rng.below(photo.width - 2 * margin);
            let y = margin + rng.below(photo.height - 2 * margin);
            (photo.cornerness(x, y), x, y)
        })
        .collect();
    cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    cands.truncate(count);
    cands
        .into_iter()
        .map(|(_, x, y)| (x as f64 + 0.5, y as f64 + 0.5))
        .collect()
}

/// Cuts `views × points` matching pairs from each photo.
pub fn make_pairs(
    photos: &[&Photo],
    views: usize,
    points: usize,
    cfg: &AugmentConfig,
    seed: u64,
) -> PairSet {
    let mut set = PairSet::default();
    let mut rng = Rng::new(seed);
    let mut pa = vec![0u8; PATCH_PIXELS];
    let mut pb = vec![0u8; PATCH_PIXELS];
    for (pi, photo) in photos.iter().enumerate() {
        let (w, h) = (photo.width as f64, photo.height as f64);
        for _ in 0..views {
            let mut r = rng.fork(pi as u64);
            let hmg = Homography::random(&mut r, cfg, w, h);
            let inv = hmg.inverse();
            let (pha, phb) = (
                Photometric::random(&mut r, cfg),
                Photometric::random(&mut r, cfg),
            );
            let margin = (cfg.patch_scale[1] * 24.0) as usize;
            for (x, y) in keypoints(photo, &mut r, points, margin) {
                let (bx, by) = hmg.map(x, y);
                // Keep points whose view-B position lies inside the warped frame.
                if !(bx > 24.0 && by > 24.0 && bx < w - 24.0 && by < h - 24.0) {
                    continue;
                }
                let step = r.range(cfg.patch_scale[0], cfg.patch_scale[1]);
                let theta = r.range(-std::f64::consts::PI, std::f64::consts::PI);
                let (sc, rot) = hmg.local_similarity(x, y);
                let jx = bx + cfg.jitter_px * r.normal();
                let jy = by + cfg.jitter_px * r.normal();
                let jtheta = theta + rot + cfg.jitter_deg.to_radians() * r.normal();
                let jstep = step * sc * (1.0 + cfg.jitter_scale * r.normal());
                cut_patch(
                    photo,
                    &|u, v| (u, v),
                    x,
                    y,
                    step,
                    theta,
                    pha,
                    &mut r,
                    &mut pa,
                );
                cut_patch(
                    photo,
                    &|u, v| inv.map(u, v),
                    jx,
                    jy,
                    jstep,
                    jtheta,
                    phb,
                    &mut r,
                    &mut pb,
                );
                set.a.extend_from_slice(&pa);
                set.b.extend_from_slice(&pb);
                set.source.push(pi);
            }
        }
    }
    set
}
