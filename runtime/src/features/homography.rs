//! The homography benchmark: image pairs related by known homographies, and the metrics.
//!
//! A pair is a real photo `A` and `B = photometric(warp(A, H))`, where `H` maps pixel
//! coordinates of `A` to those of `B` (pixel centres at +0.5). Each [`Slice`] varies one factor
//! over a few [`Slice::levels`] (HPatches' split into viewpoint and illumination, made finer):
//! viewpoint (a camera orbiting the photo's plane by up to 60°), scale (zoom up to 2.5×),
//! in-plane rotation, Gaussian blur, additive Gaussian noise, and illumination (gain, gamma and
//! offset). Everything is deterministic from a seed ([`SplitMix64`]).
//!
//! Metrics, as reported by `sextant eval features`:
//!
//! - [`repeatability`]: SuperPoint's definition (DeTone et al. 2018) — keypoints of each image
//!   whose position maps inside the other image; a keypoint is repeated when a keypoint of the
//!   other image lies within `eps` pixels of its mapped position; repeatability = repeated
//!   keypoints of both images / visible keypoints of both images.
//! - [`matching_accuracy`]: HPatches mean matching accuracy as in D2-Net (Dusmanu et al. 2019) —
//!   the fraction of a pair's matches whose mapped position `H·a` lies within `t` pixels of `b`;
//!   averaged over pairs by the caller.

use nalgebra::{Matrix3, Vector3};

use crate::image::GrayImage;

/// A small, seeded, portable random generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Maps a point through a homography; `None` when it lands at infinity or behind.
pub fn apply(h: &Matrix3<f64>, x: f64, y: f64) -> Option<(f64, f64)> {
    let p = h * Vector3::new(x, y, 1.0);
    if p.z.abs() < 1e-12 || !p.z.is_finite() {
        return None;
    }
    Some((p.x / p.z, p.y / p.z))
}

/// One factor the benchmark varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slice {
    /// Camera orbiting the plane: 20°, 40°, 60° out-of-plane rotation.
    Viewpoint,
    /// Zoom about the centre: 1.4×, 1.9×, 2.5×.
    Scale,
    /// In-plane rotation: 30°, 90°, 135°.
    Rotation,
    /// Gaussian blur: σ = 1, 2, 3 px.
    Blur,
    /// Additive Gaussian noise: σ = 5, 10, 20 grey levels.
    Noise,
    /// Illumination: gain 0.5 / gamma 1.6, gain 1.5 / gamma 0.7, gain 0.3 + offset 10.
    Illumination,
}

impl Slice {
    /// Every slice, in report order.
    pub const ALL: [Slice; 6] = [
        Slice::Viewpoint,
        Slice::Scale,
        Slice::Rotation,
        Slice::Blur,
        Slice::Noise,
        Slice::Illumination,
    ];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Slice::Viewpoint => "viewpoint",
            Slice::Scale => "scale",
            Slice::Rotation => "rotation",
            Slice::Blur => "blur",
            Slice::Noise => "noise",
            Slice::Illumination => "illumination",
        }
    }

    /// Number of strength levels.
    pub fn levels(self) -> usize {
        3
    }

    /// A human-readable description of level `level` (0-based).
    pub fn describe(self, level: usize) -> String {
        let l = level.min(2);
        match self {
            Slice::Viewpoint => format!("{}°", [20, 40, 60][l]),
            Slice::Scale => format!("{}x", [1.4, 1.9, 2.5][l]),
            Slice::Rotation => format!("{}°", [30, 90, 135][l]),
            Slice::Blur => format!("sigma {}", [1, 2, 3][l]),
            Slice::Noise => format!("sigma {}", [5, 10, 20][l]),
            Slice::Illumination => {
                ["gain 0.5 gamma 1.6", "gain 1.5 gamma 0.7", "gain 0.3 +10"][l].to_string()
            }
        }
    }
}

/// A benchmark pair: the warped image and the homography from `A` to it.
#[derive(Clone, Debug)]
pub struct Pair {
    /// Image `B`, the size of `A`.
    pub image: GrayImage,
    /// Maps `A` pixel coordinates to `B` pixel coordinates.
    pub h: Matrix3<f64>,
}

/// The homography of a slice's level for an image of `w x h`; `sign` (±1) alternates the
/// direction of viewpoint and rotation changes between photos.
pub fn slice_homography(slice: Slice, level: usize, w: u32, h: u32, sign: f64) -> Matrix3<f64> {
    let (cx, cy) = (f64::from(w) * 0.5, f64::from(h) * 0.5);
    let l = level.min(2);
    let t = |x: f64, y: f64| Matrix3::new(1.0, 0.0, x, 0.0, 1.0, y, 0.0, 0.0, 1.0);
    match slice {
        Slice::Viewpoint => {
            // Reference camera looks at the plane head-on from distance f; the second camera
            // orbits the plane's centre by theta about the vertical axis (odd photos: the
            // horizontal axis). Plane coordinates are pixel offsets from the centre.
            let theta = sign * [20.0f64, 40.0, 60.0][l].to_radians();
            let f = f64::from(w.max(h));
            let k = Matrix3::new(f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0);
            let (s, c) = theta.sin_cos();
            // World-to-camera rotation of the orbiting camera, translation (0, 0, f).
            let r = if sign > 0.0 {
                Matrix3::new(c, 0.0, -s, 0.0, 1.0, 0.0, s, 0.0, c)
            } else {
                Matrix3::new(1.0, 0.0, 0.0, 0.0, c, s, 0.0, -s, c)
            };
            let plane_to_b = k * Matrix3::from_columns(&[
                r.column(0).into_owned(),
                r.column(1).into_owned(),
                Vector3::new(0.0, 0.0, f),
            ]);
            let plane_to_a = k * Matrix3::new(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, f);
            let hab = plane_to_b * plane_to_a.try_inverse().unwrap_or_else(Matrix3::identity);
            hab / hab[(2, 2)]
        }
        Slice::Scale => {
            let s = [1.4, 1.9, 2.5][l];
            t(cx, cy) * Matrix3::new(s, 0.0, 0.0, 0.0, s, 0.0, 0.0, 0.0, 1.0) * t(-cx, -cy)
        }
        Slice::Rotation => {
            let a = sign * [30.0f64, 90.0, 135.0][l].to_radians();
            let (s, c) = a.sin_cos();
            t(cx, cy) * Matrix3::new(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0) * t(-cx, -cy)
        }
        _ => Matrix3::identity(),
    }
}

/// Builds pair `(slice, level)` of photo `a`; `seed` drives the noise and `sign` the direction.
pub fn make_pair(a: &GrayImage, slice: Slice, level: usize, sign: f64, seed: u64) -> Pair {
    let (w, h) = (a.width(), a.height());
    let hm = slice_homography(slice, level, w, h, sign);
    let mut b = warp(a, &hm, w, h, 128);
    let l = level.min(2);
    match slice {
        Slice::Blur => b = gaussian_blur(&b, [1.0, 2.0, 3.0][l]),
        Slice::Noise => add_noise(&mut b, [5.0, 10.0, 20.0][l], seed),
        Slice::Illumination => {
            let (gain, gamma, offset) = [(0.5, 1.6, 0.0), (1.5, 0.7, 0.0), (0.3, 1.0, 10.0)][l];
            photometric(&mut b, gain, gamma, offset);
        }
        _ => {}
    }
    Pair { image: b, h: hm }
}

/// Renders `B(x) = A(H⁻¹ x)` at `w x h` with bilinear sampling, 2×2 supersampled; pixels whose
/// source lies outside `A` get `fill`.
pub fn warp(a: &GrayImage, h_ab: &Matrix3<f64>, w: u32, h: u32, fill: u8) -> GrayImage {
    let mut out = GrayImage::new(w, h);
    let Some(inv) = h_ab.try_inverse() else {
        out.as_mut_slice().fill(fill);
        return out;
    };
    let (aw, ah) = (f64::from(a.width()), f64::from(a.height()));
    let src = a.as_slice();
    let stride = a.width() as usize;
    let sample = |x: f64, y: f64| -> Option<f64> {
        // Continuous coordinates: pixel i covers [i, i+1), centre i + 0.5.
        if !(x >= 0.0 && y >= 0.0 && x <= aw && y <= ah) {
            return None;
        }
        let (px, py) = (
            (x - 0.5).clamp(0.0, aw - 1.0),
            (y - 0.5).clamp(0.0, ah - 1.0),
        );
        let (x0, y0) = (px.floor() as usize, py.floor() as usize);
        let (x1, y1) = (
            (x0 + 1).min(stride - 1),
            (y0 + 1).min(a.height() as usize - 1),
        );
        let (fx, fy) = (px - x0 as f64, py - y0 as f64);
        let g = |xx: usize, yy: usize| f64::from(src[yy * stride + xx]);
        let top = g(x0, y0) * (1.0 - fx) + g(x1, y0) * fx;
        let bot = g(x0, y1) * (1.0 - fx) + g(x1, y1) * fx;
        Some(top * (1.0 - fy) + bot * fy)
    };
    let wu = w as usize;
    for (i, o) in out.as_mut_slice().iter_mut().enumerate() {
        let (x, y) = ((i % wu) as f64, (i / wu) as f64);
        let mut sum = 0.0;
        let mut n = 0;
        for (dx, dy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
            if let Some(v) = apply(&inv, x + dx, y + dy).and_then(|(sx, sy)| sample(sx, sy)) {
                sum += v;
                n += 1;
            }
        }
        *o = if n == 4 {
            (sum / 4.0).round().clamp(0.0, 255.0) as u8
        } else {
            fill
        };
    }
    out
}

/// Separable Gaussian blur (kernel radius 3σ, clamped borders).
pub fn gaussian_blur(img: &GrayImage, sigma: f64) -> GrayImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if sigma <= 0.0 || w == 0 || h == 0 {
        return img.clone();
    }
    let r = (3.0 * sigma).ceil() as isize;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-((i * i) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = k.iter().sum();
    let src = img.as_slice();
    let mut tmp = vec![0.0f64; w * h];
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0;
            for (t, kv) in k.iter().enumerate() {
                let xx = (x as isize + t as isize - r).clamp(0, w as isize - 1) as usize;
                s += kv * f64::from(src[y * w + xx]);
            }
            tmp[y * w + x] = s / total;
        }
    }
    let mut out = GrayImage::new(w as u32, h as u32);
    let o = out.as_mut_slice();
    for y in 0..h {
        for x in 0..w {
            let mut s = 0.0;
            for (t, kv) in k.iter().enumerate() {
                let yy = (y as isize + t as isize - r).clamp(0, h as isize - 1) as usize;
                s += kv * tmp[yy * w + x];
            }
            o[y * w + x] = (s / total).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Adds Gaussian noise of standard deviation `sigma` grey levels (seeded), saturating.
pub fn add_noise(img: &mut GrayImage, sigma: f64, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    for v in img.as_mut_slice() {
        *v = (f64::from(*v) + sigma * rng.normal())
            .round()
            .clamp(0.0, 255.0) as u8;
    }
}

/// `v' = 255 · gain · (v / 255)^gamma + offset`, saturating.
pub fn photometric(img: &mut GrayImage, gain: f64, gamma: f64, offset: f64) {
    let mut lut = [0u8; 256];
    for (i, l) in lut.iter_mut().enumerate() {
        let v = 255.0 * gain * (i as f64 / 255.0).powf(gamma) + offset;
        *l = v.round().clamp(0.0, 255.0) as u8;
    }
    for v in img.as_mut_slice() {
        *v = lut[usize::from(*v)];
    }
}

/// Repeatability counts of one pair (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Repeatability {
    /// Keypoints of both images that map inside the other image.
    pub visible: usize,
    /// Of those, the ones with a keypoint of the other image within `eps`.
    pub repeated: usize,
}

impl Repeatability {
    /// `repeated / visible` (0 when nothing is visible).
    pub fn ratio(&self) -> f64 {
        if self.visible == 0 {
            0.0
        } else {
            self.repeated as f64 / self.visible as f64
        }
    }
}

fn inside(p: (f64, f64), w: u32, h: u32) -> bool {
    p.0 >= 0.0 && p.1 >= 0.0 && p.0 < f64::from(w) && p.1 < f64::from(h)
}

fn one_way(
    from: &[[f32; 2]],
    to: &[[f32; 2]],
    h: &Matrix3<f64>,
    size_to: (u32, u32),
    eps: f64,
) -> (usize, usize) {
    let (mut vis, mut rep) = (0, 0);
    for p in from {
        let Some(q) = apply(h, f64::from(p[0]), f64::from(p[1])) else {
            continue;
        };
        if !inside(q, size_to.0, size_to.1) {
            continue;
        }
        vis += 1;
        if to.iter().any(|t| {
            let (dx, dy) = (f64::from(t[0]) - q.0, f64::from(t[1]) - q.1);
            dx * dx + dy * dy <= eps * eps
        }) {
            rep += 1;
        }
    }
    (vis, rep)
}

/// Repeatability of keypoints `a` (in image A, `size_a`) and `b` (in B, `size_b`) under `h`
/// (A → B) at `eps` pixels.
pub fn repeatability(
    a: &[[f32; 2]],
    b: &[[f32; 2]],
    h: &Matrix3<f64>,
    size_a: (u32, u32),
    size_b: (u32, u32),
    eps: f64,
) -> Repeatability {
    let inv = h.try_inverse().unwrap_or_else(Matrix3::identity);
    let (va, ra) = one_way(a, b, h, size_b, eps);
    let (vb, rb) = one_way(b, a, &inv, size_a, eps);
    Repeatability {
        visible: va + vb,
        repeated: ra + rb,
    }
}

/// Fraction of `matches` (`(point in A, point in B)`) whose `H·a` lies within each threshold of
/// `b`; `None` when there are no matches.
pub fn matching_accuracy<const N: usize>(
    matches: &[([f32; 2], [f32; 2])],
    h: &Matrix3<f64>,
    thresholds: [f64; N],
) -> Option<[f64; N]> {
    if matches.is_empty() {
        return None;
    }
    let mut hits = [0usize; N];
    for (a, b) in matches {
        let Some(q) = apply(h, f64::from(a[0]), f64::from(a[1])) else {
            continue;
        };
        let e = ((q.0 - f64::from(b[0])).powi(2) + (q.1 - f64::from(b[1])).powi(2)).sqrt();
        for (k, t) in thresholds.iter().enumerate() {
            if e <= *t {
                hits[k] += 1;
            }
        }
    }
    Some(hits.map(|c| c as f64 / matches.len() as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_by_90_maps_the_centre_to_itself_and_corners_around() {
        let h = slice_homography(Slice::Rotation, 1, 100, 100, 1.0);
        let c = apply(&h, 50.0, 50.0).unwrap();
        assert!((c.0 - 50.0).abs() < 1e-9 && (c.1 - 50.0).abs() < 1e-9);
        let p = apply(&h, 100.0, 50.0).unwrap();
        assert!(
            (p.0 - 50.0).abs() < 1e-9 && (p.1 - 100.0).abs() < 1e-9,
            "{p:?}"
        );
    }

    #[test]
    fn viewpoint_keeps_the_centre_and_foreshortens() {
        let h = slice_homography(Slice::Viewpoint, 2, 200, 100, 1.0);
        let c = apply(&h, 100.0, 50.0).unwrap();
        assert!(
            (c.0 - 100.0).abs() < 1e-6 && (c.1 - 50.0).abs() < 1e-6,
            "{c:?}"
        );
        let l = apply(&h, 50.0, 50.0).unwrap();
        let r = apply(&h, 150.0, 50.0).unwrap();
        let width = r.0 - l.0;
        assert!(width > 30.0 && width < 80.0, "{width}"); // about cos 60° of 100
    }

    #[test]
    fn warp_by_identity_is_a_copy_and_noise_is_seeded() {
        // Bilinear supersampling reproduces a linear ramp exactly (away from the clamped border).
        let data: Vec<u8> = (0..64 * 48)
            .map(|i| ((i % 64) * 2 + (i / 64) * 2) as u8)
            .collect();
        let a = GrayImage::from_vec(64, 48, data).unwrap();
        let b = warp(&a, &Matrix3::identity(), 64, 48, 0);
        for y in 1..47 {
            for x in 1..63 {
                assert_eq!(a.get(x, y), b.get(x, y), "({x}, {y})");
            }
        }
        let mut n1 = a.clone();
        let mut n2 = a.clone();
        add_noise(&mut n1, 5.0, 7);
        add_noise(&mut n2, 5.0, 7);
        assert_eq!(n1, n2);
        assert_ne!(n1, a);
    }

    #[test]
    fn metrics_count_what_they_say() {
        let h = Matrix3::identity();
        let a = [[10.0, 10.0], [20.0, 20.0], [500.0, 500.0]];
        let b = [[10.5, 10.0], [40.0, 40.0]];
        let r = repeatability(&a, &b, &h, (100, 100), (100, 100), 3.0);
        // A: two visible (third is outside B), one repeated; B: two visible, one repeated.
        assert_eq!(
            r,
            Repeatability {
                visible: 4,
                repeated: 2
            }
        );
        let m = [([10.0, 10.0], [10.5, 10.0]), ([20.0, 20.0], [24.0, 20.0])];
        assert_eq!(
            matching_accuracy(&m, &h, [1.0, 3.0, 5.0]),
            Some([0.5, 0.5, 1.0])
        );
        assert_eq!(matching_accuracy(&[], &h, [1.0]), None);
    }
}
