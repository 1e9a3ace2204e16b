//! The ray caster: one ray per pixel centre, nearest textured quad, trilinear texture sampling.
//!
//! Per camera (once): a [`RayTable`] unprojects every pixel centre through the lens model
//! (distortion included) to an ideal normalised direction `d = (x, y, 1)` in the camera frame, so
//! a hit's ray parameter *is* its depth along the optical axis; it also stores each pixel's ray
//! footprint (how `d` changes per pixel step) and the bounds of `d` over 16×16 pixel tiles.
//!
//! Per frame: every quad is moved into the camera frame with its plane `n·X = k` and dual edge
//! basis (`s = a_u·X − s0`), clipped against the near plane and projected to bound the rays that
//! can hit it; each tile keeps only the quads whose bounds overlap its own. Per pixel: for each
//! candidate quad, `t = k / (n·d)`, `s`, `w` from the dual basis, keep the nearest hit inside the
//! quad. The winner is shaded once: the analytic derivative of the texture coordinates with
//! respect to the pixel (the ray footprint projected on the plane) sets the level of detail of a
//! trilinear lookup, so distant and grazing surfaces are filtered instead of aliased. Optionally
//! ([`Renderer::set_max_anisotropy`]) several trilinear taps along the footprint's major axis keep
//! grazing surfaces sharper, at a cost in speed.

use nalgebra::{Point3, Vector2, Vector3};
use sextant_runtime::{Camera, Pose};

use crate::image::RgbF32;
use crate::scene::Scene;
use crate::texture::Wrap;

const TILE: usize = 16;
/// Default for [`Renderer::set_max_anisotropy`].
pub const DEFAULT_MAX_ANISO: usize = 1;
/// Hits closer than this (metres along the optical axis) are ignored.
pub const NEAR: f64 = 1e-3;

/// Per-camera ray directions, footprints and tile bounds.
#[derive(Clone, Debug)]
pub struct RayTable {
    camera: Camera,
    width: usize,
    height: usize,
    dirs: Vec<[f64; 2]>,
    /// `[dx/du, dy/du, dx/dv, dy/dv]`: change of the normalised direction per pixel step.
    derivs: Vec<[f32; 4]>,
    tiles_x: usize,
    tiles_y: usize,
    /// Per tile: `[x_min, x_max, y_min, y_max]` of the normalised directions.
    tile_bounds: Vec<[f64; 4]>,
}

impl RayTable {
    /// Unprojects every pixel centre of `camera`.
    pub fn new(camera: &Camera) -> RayTable {
        let (w, h) = (camera.width() as usize, camera.height() as usize);
        let mut dirs = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let n = camera.pixel_to_normalized(&Vector2::new(x as f64 + 0.5, y as f64 + 0.5));
                dirs.push([n.x, n.y]);
            }
        }
        let mut derivs = Vec::with_capacity(w * h);
        let at = |x: usize, y: usize| dirs[y * w + x];
        for y in 0..h {
            for x in 0..w {
                let (xa, xb) = (x.saturating_sub(1), (x + 1).min(w - 1));
                let (ya, yb) = (y.saturating_sub(1), (y + 1).min(h - 1));
                let sx = (xb - xa).max(1) as f64;
                let sy = (yb - ya).max(1) as f64;
                let (a, b) = (at(xa, y), at(xb, y));
                let (c, d) = (at(x, ya), at(x, yb));
                derivs.push([
                    ((b[0] - a[0]) / sx) as f32,
                    ((b[1] - a[1]) / sx) as f32,
                    ((d[0] - c[0]) / sy) as f32,
                    ((d[1] - c[1]) / sy) as f32,
                ]);
            }
        }
        let (tiles_x, tiles_y) = (w.div_ceil(TILE), h.div_ceil(TILE));
        let mut tile_bounds = vec![
            [
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY
            ];
            tiles_x * tiles_y
        ];
        for y in 0..h {
            for x in 0..w {
                let d = dirs[y * w + x];
                let b = &mut tile_bounds[(y / TILE) * tiles_x + x / TILE];
                b[0] = b[0].min(d[0]);
                b[1] = b[1].max(d[0]);
                b[2] = b[2].min(d[1]);
                b[3] = b[3].max(d[1]);
            }
        }
        RayTable {
            camera: *camera,
            width: w,
            height: h,
            dirs,
            derivs,
            tiles_x,
            tiles_y,
            tile_bounds,
        }
    }

    /// The camera this table was built for.
    pub fn camera(&self) -> &Camera {
        &self.camera
    }

    /// The ideal normalised direction `(x, y)` (ray `(x, y, 1)`) of pixel (`px`, `py`).
    pub fn direction(&self, px: u32, py: u32) -> [f64; 2] {
        self.dirs[py as usize * self.width + px as usize]
    }
}

/// One rendered view: colour, depth and the exact pose it was rendered from.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// Colour, RGB in `[0, 1]` (before any photometric model).
    pub rgb: RgbF32,
    /// Depth along the camera's z axis in metres, row-major; 0 where no surface was hit.
    pub depth: Vec<f32>,
    /// Index of the surface seen at each pixel, `u32::MAX` for background.
    pub surface: Vec<u32>,
    /// The world-to-camera pose of the view.
    pub pose: Pose,
}

impl Rendered {
    /// An empty buffer set for a `width × height` camera.
    pub fn new(width: u32, height: u32) -> Rendered {
        let n = width as usize * height as usize;
        Rendered {
            rgb: RgbF32::new(width, height),
            depth: vec![0.0; n],
            surface: vec![u32::MAX; n],
            pose: Pose::identity(),
        }
    }

    /// Fraction of pixels that see a surface.
    pub fn coverage(&self) -> f64 {
        if self.depth.is_empty() {
            return 0.0;
        }
        self.depth.iter().filter(|&&d| d > 0.0).count() as f64 / self.depth.len() as f64
    }

    /// Depth at pixel (`x`, `y`), metres (0: background).
    pub fn depth_at(&self, x: u32, y: u32) -> f32 {
        self.depth[y as usize * self.rgb.width as usize + x as usize]
    }
}

/// A quad in the camera frame, ready for per-pixel tests.
#[derive(Clone, Copy, Debug)]
struct Prepared {
    /// Plane normal (unnormalised) and offset: `n·X = k`.
    n: [f64; 3],
    k: f64,
    /// Dual basis: `s = a_u·X − s0`, `w = a_v·X − w0`.
    au: [f64; 3],
    s0: f64,
    av: [f64; 3],
    w0: f64,
    surface: u32,
    /// Texels per unit of `s` and `w` at level 0 (for the level of detail).
    tex_scale: [f32; 2],
}

/// Renders scenes for one camera; keeps its ray table and scratch buffers between frames.
#[derive(Clone, Debug)]
pub struct Renderer {
    rays: RayTable,
    prepared: Vec<Prepared>,
    bounds: Vec<[f64; 4]>,
    tile_start: Vec<u32>,
    tile_items: Vec<u16>,
    max_aniso: usize,
}

impl Renderer {
    /// Most texture taps per pixel along an elongated footprint (1 = plain trilinear filtering,
    /// blurrier on grazing surfaces but faster; default 1: trilinear). Values are clamped to `1..=16`.
    pub fn set_max_anisotropy(&mut self, taps: usize) {
        self.max_aniso = taps.clamp(1, 16);
    }

    /// A renderer for `camera` (builds its ray table: ~tens of ms at VGA with distortion).
    pub fn new(camera: &Camera) -> Renderer {
        Renderer {
            rays: RayTable::new(camera),
            prepared: Vec::new(),
            bounds: Vec::new(),
            tile_start: Vec::new(),
            tile_items: Vec::new(),
            max_aniso: DEFAULT_MAX_ANISO,
        }
    }

    /// The camera rendered for.
    pub fn camera(&self) -> &Camera {
        &self.rays.camera
    }

    /// The ray table.
    pub fn rays(&self) -> &RayTable {
        &self.rays
    }

    /// Renders `scene` from `pose` into fresh buffers.
    pub fn render(&mut self, scene: &Scene, pose: &Pose) -> Rendered {
        let mut out = Rendered::new(self.rays.width as u32, self.rays.height as u32);
        self.render_into(scene, pose, &mut out);
        out
    }

    /// Renders `scene` from `pose` into `out` (resized if needed; no other allocation once warm).
    pub fn render_into(&mut self, scene: &Scene, pose: &Pose, out: &mut Rendered) {
        let (w, h) = (self.rays.width, self.rays.height);
        out.rgb.resize(w as u32, h as u32);
        out.depth.resize(w * h, 0.0);
        out.surface.resize(w * h, u32::MAX);
        out.pose = *pose;
        self.prepare(scene, pose);
        self.bin();
        let bg = scene.background;
        for ty in 0..self.rays.tiles_y {
            for tx in 0..self.rays.tiles_x {
                let ti = ty * self.rays.tiles_x + tx;
                let items = &self.tile_items
                    [self.tile_start[ti] as usize..self.tile_start[ti + 1] as usize];
                let (x0, x1) = (tx * TILE, ((tx + 1) * TILE).min(w));
                for y in ty * TILE..((ty + 1) * TILE).min(h) {
                    let row = y * w;
                    for x in x0..x1 {
                        let i = row + x;
                        let d = self.rays.dirs[i];
                        let mut best_t = f64::INFINITY;
                        let mut best = usize::MAX;
                        let mut best_sw = (0.0, 0.0);
                        for &pi in items {
                            let p = &self.prepared[pi as usize];
                            let den = p.n[0] * d[0] + p.n[1] * d[1] + p.n[2];
                            let t = p.k / den;
                            // Also rejects NaN (den = 0 with k = 0) and ±inf.
                            if !(t > NEAR && t < best_t) {
                                continue;
                            }
                            let s = t * (p.au[0] * d[0] + p.au[1] * d[1] + p.au[2]) - p.s0;
                            if !(0.0..=1.0).contains(&s) {
                                continue;
                            }
                            let ww = t * (p.av[0] * d[0] + p.av[1] * d[1] + p.av[2]) - p.w0;
                            if !(0.0..=1.0).contains(&ww) {
                                continue;
                            }
                            best_t = t;
                            best = pi as usize;
                            best_sw = (s, ww);
                        }
                        if best == usize::MAX {
                            out.rgb.data[i] = bg;
                            out.depth[i] = 0.0;
                            out.surface[i] = u32::MAX;
                        } else {
                            let p = &self.prepared[best];
                            out.rgb.data[i] = shade(
                                scene,
                                p,
                                d,
                                self.rays.derivs[i],
                                best_t,
                                best_sw,
                                self.max_aniso,
                            );
                            out.depth[i] = best_t as f32;
                            out.surface[i] = p.surface;
                        }
                    }
                }
            }
        }
    }

    /// Moves every quad into the camera frame and bounds the rays that can hit it.
    fn prepare(&mut self, scene: &Scene, pose: &Pose) {
        self.prepared.clear();
        self.bounds.clear();
        for (si, s) in scene.surfaces.iter().enumerate() {
            if self.prepared.len() >= u16::MAX as usize {
                break;
            }
            let o = pose.transform_point(&Point3::from(s.origin)).coords;
            let u = pose.transform_vector(&s.u);
            let v = pose.transform_vector(&s.v);
            let Some(b) = clip_bounds(&[o, o + u, o + u + v, o + v]) else {
                continue;
            };
            let n = u.cross(&v);
            let nn = n.norm_squared();
            let au = v.cross(&n) / nn;
            let av = n.cross(&u) / nn;
            let tex = &scene.textures[s.texture];
            let (cw, ch) = (s.crop[2] - s.crop[0], s.crop[3] - s.crop[1]);
            self.prepared.push(Prepared {
                n: n.into(),
                k: n.dot(&o),
                au: au.into(),
                s0: au.dot(&o),
                av: av.into(),
                w0: av.dot(&o),
                surface: si as u32,
                tex_scale: [
                    (s.repeats[0] as f32) * cw * tex.width() as f32,
                    (s.repeats[1] as f32) * ch * tex.height() as f32,
                ],
            });
            self.bounds.push(b);
        }
    }

    /// Lists, per tile, the prepared quads whose ray bounds overlap the tile's.
    fn bin(&mut self) {
        let nt = self.rays.tile_bounds.len();
        self.tile_start.clear();
        self.tile_items.clear();
        for t in 0..nt {
            self.tile_start.push(self.tile_items.len() as u32);
            let tb = self.rays.tile_bounds[t];
            for (i, b) in self.bounds.iter().enumerate() {
                if b[0] <= tb[1] && b[1] >= tb[0] && b[2] <= tb[3] && b[3] >= tb[2] {
                    self.tile_items.push(i as u16);
                }
            }
        }
        self.tile_start.push(self.tile_items.len() as u32);
    }
}

/// Bounds `[x_min, x_max, y_min, y_max]` on the z = 1 plane of the polygon clipped to `z ≥ NEAR`;
/// `None` when it lies entirely behind the near plane.
fn clip_bounds(poly: &[Vector3<f64>; 4]) -> Option<[f64; 4]> {
    let mut b = [
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    let mut any = false;
    let mut add = |p: Vector3<f64>| {
        let (x, y) = (p.x / p.z, p.y / p.z);
        b[0] = b[0].min(x);
        b[1] = b[1].max(x);
        b[2] = b[2].min(y);
        b[3] = b[3].max(y);
        any = true;
    };
    for i in 0..4 {
        let (a, c) = (poly[i], poly[(i + 1) % 4]);
        if a.z >= NEAR {
            add(a);
        }
        if (a.z >= NEAR) != (c.z >= NEAR) {
            let s = (NEAR - a.z) / (c.z - a.z);
            let mut q = a + (c - a) * s;
            q.z = NEAR;
            add(q);
        }
    }
    if any && b.iter().all(|v| v.is_finite()) {
        Some(b)
    } else {
        None
    }
}

/// Cheap `log2` (exponent plus a quadratic mantissa fit, error < 0.01): enough to pick mip levels.
#[inline]
fn fast_log2(x: f32) -> f32 {
    let bits = x.to_bits();
    let e = ((bits >> 23) & 0xff) as f32 - 127.0;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // in [1, 2)
    e + (-0.344_848_43 * m + 2.024_665_8) * m - 1.674_877_6
}

#[inline]
#[allow(clippy::too_many_arguments)]
fn shade(
    scene: &Scene,
    p: &Prepared,
    d: [f64; 2],
    dd: [f32; 4],
    t: f64,
    (s, w): (f64, f64),
    max_aniso: usize,
) -> [f32; 3] {
    let surf = &scene.surfaces[p.surface as usize];
    let tex = &scene.textures[surf.texture];
    // Footprint: X = t d with t = k / (n·d); dX = dt d + t dd, dt = -t (n·dd) / (n·d).
    let dx = [d[0] as f32, d[1] as f32, 1.0f32];
    let t32 = t as f32;
    let n = [p.n[0] as f32, p.n[1] as f32, p.n[2] as f32];
    let nd = n[0] * dx[0] + n[1] * dx[1] + n[2];
    let au = [p.au[0] as f32, p.au[1] as f32, p.au[2] as f32];
    let av = [p.av[0] as f32, p.av[1] as f32, p.av[2] as f32];
    // Texel-space footprint of one pixel step along x and along y.
    let mut axes = [[0.0f32; 2]; 2];
    for (k, axis) in axes.iter_mut().enumerate() {
        let g = [dd[2 * k], dd[2 * k + 1]];
        let dt = -t32 * (n[0] * g[0] + n[1] * g[1]) / nd;
        let dxw = [dt * dx[0] + t32 * g[0], dt * dx[1] + t32 * g[1], dt];
        *axis = [
            (au[0] * dxw[0] + au[1] * dxw[1] + au[2] * dxw[2]) * p.tex_scale[0],
            (av[0] * dxw[0] + av[1] * dxw[1] + av[2] * dxw[2]) * p.tex_scale[1],
        ];
    }
    let l2 = [
        axes[0][0] * axes[0][0] + axes[0][1] * axes[0][1],
        axes[1][0] * axes[1][0] + axes[1][1] * axes[1][1],
    ];
    let (major, maj2, min2) = if l2[0] >= l2[1] {
        (axes[0], l2[0], l2[1])
    } else {
        (axes[1], l2[1], l2[0])
    };
    // Anisotropic filtering: up to `max_aniso` trilinear taps along the footprint's major axis,
    // each filtered at the major length divided by the tap count (never below the minor length).
    let taps = if maj2 > 1.0 && min2 > 0.0 {
        ((maj2 / min2).sqrt().ceil() as usize).clamp(1, max_aniso)
    } else if maj2 > 1.0 {
        max_aniso
    } else {
        1
    };
    let per_tap2 = maj2 / (taps * taps) as f32;
    let lod = if per_tap2 > 1.0 {
        0.5 * fast_log2(per_tap2)
    } else {
        0.0
    };
    let uu = s * surf.repeats[0];
    let vv = w * surf.repeats[1];
    let c = surf.crop;
    let full = c == [0.0, 0.0, 1.0, 1.0];
    let (tu, tv) = match (surf.wrap, full) {
        (Wrap::Repeat, true) => (uu as f32, (1.0 - vv) as f32),
        (Wrap::Repeat, false) => {
            let (fu, fv) = ((uu - uu.floor()) as f32, (vv - vv.floor()) as f32);
            (c[0] + fu * (c[2] - c[0]), c[1] + (1.0 - fv) * (c[3] - c[1]))
        }
        (Wrap::Clamp, _) => (
            c[0] + uu as f32 * (c[2] - c[0]),
            c[1] + (1.0 - vv as f32) * (c[3] - c[1]),
        ),
    };
    let wrap = if full { surf.wrap } else { Wrap::Clamp };
    let rgb = if taps == 1 {
        tex.sample(tu, tv, lod, wrap)
    } else {
        // The major axis in normalised texture coordinates (v flips: image rows run down).
        let step_u = major[0] / tex.width() as f32;
        let step_v = -major[1] / tex.height() as f32;
        let mut acc = [0.0f32; 3];
        for k in 0..taps {
            let f = (k as f32 + 0.5) / taps as f32 - 0.5;
            let c = tex.sample(tu + f * step_u, tv + f * step_v, lod, wrap);
            acc = [acc[0] + c[0], acc[1] + c[1], acc[2] + c[2]];
        }
        let inv = 1.0 / taps as f32;
        [acc[0] * inv, acc[1] * inv, acc[2] * inv]
    };
    [
        rgb[0] * surf.tint[0],
        rgb[1] * surf.tint[1],
        rgb[2] * surf.tint[2],
    ]
}

/// Where a world point lands in a view: pixel position and depth, or `None` when behind the
/// camera or outside the lens model's valid radius.
pub fn project_world(camera: &Camera, pose: &Pose, p: &Point3<f64>) -> Option<(Vector2<f64>, f64)> {
    let pc: Vector3<f64> = pose.transform_point(p).coords;
    camera.project(&pc).map(|px| (px, pc.z))
}

/// The first surface along the world ray `origin + t·dir` (`t > 1e-9`): `(t, surface index)`.
/// With a unit `dir`, `t` is the distance in metres.
pub fn raycast(scene: &Scene, origin: &Point3<f64>, dir: &Vector3<f64>) -> Option<(f64, usize)> {
    let mut best: Option<(f64, usize)> = None;
    for (i, s) in scene.surfaces.iter().enumerate() {
        let n = s.u.cross(&s.v);
        let den = n.dot(dir);
        let t = n.dot(&(s.origin - origin.coords)) / den;
        if t.is_nan() || t <= 1e-9 || best.is_some_and(|(bt, _)| t >= bt) {
            continue;
        }
        let nn = n.norm_squared();
        let rel = origin.coords + dir * t - s.origin;
        let a = rel.dot(&s.v.cross(&n)) / nn;
        let b = rel.dot(&n.cross(&s.u)) / nn;
        if (0.0..=1.0).contains(&a) && (0.0..=1.0).contains(&b) {
            best = Some((t, i));
        }
    }
    best
}
