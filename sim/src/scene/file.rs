//! The TOML schema of scene files (see `docs/scene-format.md`) and its conversion to surfaces.
//!
//! Parsing is two steps: serde reads the raw file (unknown keys are errors, so typos surface),
//! then [`build_surfaces`] validates every number and expands shorthands (`center`/`size`/`normal`
//! quads, boxes) into plain quads.

use nalgebra::Vector3;
use serde::Deserialize;

use crate::error::{Result, SimError};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SceneFile {
    pub name: Option<String>,
    pub background: Option<[f64; 3]>,
    pub geo_anchor: Option<GeoAnchorFile>,
    pub views: Option<ViewsFile>,
    #[serde(default, rename = "quad")]
    pub quads: Vec<QuadFile>,
    #[serde(default, rename = "box")]
    pub boxes: Vec<BoxFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GeoAnchorFile {
    pub lat: f64,
    pub lon: f64,
    #[serde(default)]
    pub alt: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ViewsFile {
    pub center: Option<[f64; 3]>,
    pub radius: Option<f64>,
    pub eye_height: Option<f64>,
    pub path: Option<Vec<[f64; 2]>>,
    pub volume_min: Option<[f64; 3]>,
    pub volume_max: Option<[f64; 3]>,
}

/// `tile = 1.5` (square repeat) or `tile = [2.0, 1.0]` (metres along u, v).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub(crate) enum Tile {
    Square(f64),
    Rect([f64; 2]),
}

impl Tile {
    fn pair(self) -> [f64; 2] {
        match self {
            Tile::Square(s) => [s, s],
            Tile::Rect(r) => r,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuadFile {
    pub name: Option<String>,
    pub texture: String,
    pub tile: Option<Tile>,
    pub tint: Option<[f64; 3]>,
    pub brightness: Option<f64>,
    pub crop: Option<[f64; 4]>,
    // Form 1: corner and edges.
    pub origin: Option<[f64; 3]>,
    pub u: Option<[f64; 3]>,
    pub v: Option<[f64; 3]>,
    // Form 2: centre, size and facing direction.
    pub center: Option<[f64; 3]>,
    pub size: Option<[f64; 2]>,
    pub normal: Option<[f64; 3]>,
    pub up: Option<[f64; 3]>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BoxFile {
    pub name: Option<String>,
    pub base: [f64; 3],
    pub size: [f64; 3],
    #[serde(default)]
    pub yaw_deg: f64,
    pub texture: String,
    pub top_texture: Option<String>,
    pub tile: Option<Tile>,
    pub tint: Option<[f64; 3]>,
    pub brightness: Option<f64>,
    #[serde(default)]
    pub bottom: bool,
}

/// A validated quad, before its texture is loaded.
#[derive(Debug, Clone)]
pub(crate) struct RawSurface {
    pub name: String,
    pub origin: Vector3<f64>,
    pub u: Vector3<f64>,
    pub v: Vector3<f64>,
    pub texture: String,
    /// Metres per texture repeat along u and v; `None` stretches the texture once over the quad.
    pub tile: Option<[f64; 2]>,
    pub tint: [f64; 3],
    pub crop: [f64; 4],
}

/// Validated material: metres per repeat (if tiled), tint × brightness, crop rectangle.
type Material = (Option<[f64; 2]>, [f64; 3], [f64; 4]);

struct Ctx<'a> {
    scene: &'a str,
    item: String,
}

impl Ctx<'_> {
    fn err(&self, message: impl Into<String>) -> SimError {
        SimError::SceneInvalid {
            scene: self.scene.to_string(),
            item: self.item.clone(),
            message: message.into(),
        }
    }

    fn finite<const N: usize>(&self, key: &str, v: [f64; N]) -> Result<[f64; N]> {
        if v.iter().all(|x| x.is_finite()) {
            Ok(v)
        } else {
            Err(self.err(format!("`{key}` has a non-finite value {v:?}")))
        }
    }

    fn vec3(&self, key: &str, v: [f64; 3]) -> Result<Vector3<f64>> {
        self.finite(key, v).map(Vector3::from)
    }
}

fn material(
    ctx: &Ctx<'_>,
    tile: Option<Tile>,
    tint: Option<[f64; 3]>,
    brightness: Option<f64>,
    crop: Option<[f64; 4]>,
) -> Result<Material> {
    let tile = match tile {
        None => None,
        Some(t) => {
            let t = ctx.finite("tile", t.pair())?;
            if t.iter().any(|&x| x <= 0.0) {
                return Err(ctx.err(format!(
                    "`tile` must be positive metres per repeat, got {t:?}"
                )));
            }
            Some(t)
        }
    };
    let tint = ctx.finite("tint", tint.unwrap_or([1.0; 3]))?;
    if tint.iter().any(|&x| x < 0.0) {
        return Err(ctx.err(format!("`tint` must be non-negative, got {tint:?}")));
    }
    let b = ctx.finite("brightness", [brightness.unwrap_or(1.0)])?[0];
    if b < 0.0 {
        return Err(ctx.err(format!("`brightness` must be non-negative, got {b}")));
    }
    let crop = ctx.finite("crop", crop.unwrap_or([0.0, 0.0, 1.0, 1.0]))?;
    let ok = crop.iter().all(|c| (0.0..=1.0).contains(c)) && crop[0] < crop[2] && crop[1] < crop[3];
    if !ok {
        return Err(ctx.err(format!(
            "`crop` must be [u0, v0, u1, v1] inside [0, 1] with u0 < u1 and v0 < v1, got {crop:?}"
        )));
    }
    Ok((tile, [tint[0] * b, tint[1] * b, tint[2] * b], crop))
}

/// Edge vectors of a quad centred at `center`, `size` wide and high, facing `normal`, with its
/// v edge as close to `up` as possible (default world +z, or +y for floors and ceilings).
fn oriented(
    ctx: &Ctx<'_>,
    center: Vector3<f64>,
    size: [f64; 2],
    normal: Vector3<f64>,
    up: Option<Vector3<f64>>,
) -> Result<(Vector3<f64>, Vector3<f64>, Vector3<f64>)> {
    let n = normal
        .try_normalize(1e-12)
        .ok_or_else(|| ctx.err("`normal` is the zero vector"))?;
    let up = match up {
        Some(u) => u,
        None if n.z.abs() > 0.99 => Vector3::y(),
        None => Vector3::z(),
    };
    let right = up
        .cross(&n)
        .try_normalize(1e-9)
        .ok_or_else(|| ctx.err("`up` is zero or parallel to `normal`"))?;
    let v_dir = n.cross(&right);
    let u = right * size[0];
    let v = v_dir * size[1];
    Ok((center - u / 2.0 - v / 2.0, u, v))
}

fn check_quad(ctx: &Ctx<'_>, u: &Vector3<f64>, v: &Vector3<f64>) -> Result<()> {
    let area = u.cross(v).norm();
    let scale = u.norm() * v.norm();
    if area.is_nan() || area <= 1e-9 || area <= 1e-6 * scale {
        return Err(ctx.err(format!(
            "degenerate quad: edges u={:?} and v={:?} span no area",
            u.as_slice(),
            v.as_slice()
        )));
    }
    Ok(())
}

fn quad(scene: &str, index: usize, q: &QuadFile) -> Result<RawSurface> {
    let name = q.name.clone().unwrap_or_else(|| format!("quad{index}"));
    let ctx = Ctx {
        scene,
        item: format!("quad {index} ({name:?})"),
    };
    let corner_form = q.origin.is_some() || q.u.is_some() || q.v.is_some();
    let centre_form =
        q.center.is_some() || q.size.is_some() || q.normal.is_some() || q.up.is_some();
    let (origin, u, v) = match (corner_form, centre_form) {
        (true, true) => {
            return Err(
                ctx.err("give either `origin`, `u`, `v` or `center`, `size`, `normal` (not both)")
            );
        }
        (false, false) => {
            return Err(
                ctx.err("missing geometry: give `origin`, `u`, `v` or `center`, `size`, `normal`")
            );
        }
        (true, false) => match (q.origin, q.u, q.v) {
            (Some(o), Some(u), Some(v)) => {
                (ctx.vec3("origin", o)?, ctx.vec3("u", u)?, ctx.vec3("v", v)?)
            }
            _ => return Err(ctx.err("the corner form needs all of `origin`, `u` and `v`")),
        },
        (false, true) => match (q.center, q.size, q.normal) {
            (Some(c), Some(s), Some(n)) => {
                let s = ctx.finite("size", s)?;
                if s.iter().any(|&x| x <= 0.0) {
                    return Err(ctx.err(format!("`size` must be positive, got {s:?}")));
                }
                let up = q.up.map(|u| ctx.vec3("up", u)).transpose()?;
                oriented(&ctx, ctx.vec3("center", c)?, s, ctx.vec3("normal", n)?, up)?
            }
            _ => return Err(ctx.err("the centre form needs all of `center`, `size` and `normal`")),
        },
    };
    check_quad(&ctx, &u, &v)?;
    let (tile, tint, crop) = material(&ctx, q.tile, q.tint, q.brightness, q.crop)?;
    Ok(RawSurface {
        name,
        origin,
        u,
        v,
        texture: q.texture.clone(),
        tile,
        tint,
        crop,
    })
}

fn boxed(scene: &str, index: usize, b: &BoxFile, out: &mut Vec<RawSurface>) -> Result<()> {
    let name = b.name.clone().unwrap_or_else(|| format!("box{index}"));
    let ctx = Ctx {
        scene,
        item: format!("box {index} ({name:?})"),
    };
    let base = ctx.vec3("base", b.base)?;
    let size = ctx.finite("size", b.size)?;
    if size.iter().any(|&x| x <= 0.0) {
        return Err(ctx.err(format!("`size` must be positive, got {size:?}")));
    }
    let yaw = ctx.finite("yaw_deg", [b.yaw_deg])?[0].to_radians();
    let (tile, tint, crop) = material(&ctx, b.tile, b.tint, b.brightness, None)?;
    let ex = Vector3::new(yaw.cos(), yaw.sin(), 0.0) * size[0];
    let ey = Vector3::new(-yaw.sin(), yaw.cos(), 0.0) * size[1];
    let ez = Vector3::z() * size[2];
    // Bottom corner with the smallest local coordinates.
    let c = base - ex / 2.0 - ey / 2.0;
    // Side faces, counter-clockwise seen from above, each with u along the side and v up, so that
    // u × v points outwards.
    let sides = [
        ("south", c, ex),
        ("east", c + ex, ey),
        ("north", c + ex + ey, -ex),
        ("west", c + ey, -ey),
    ];
    let face = |suffix: &str, origin, u, v, texture: &String| RawSurface {
        name: format!("{name}/{suffix}"),
        origin,
        u,
        v,
        texture: texture.clone(),
        tile,
        tint,
        crop,
    };
    for (suffix, origin, u) in sides {
        out.push(face(suffix, origin, u, ez, &b.texture));
    }
    let top = b.top_texture.as_ref().unwrap_or(&b.texture);
    out.push(face("top", c + ez, ex, ey, top));
    if b.bottom {
        out.push(face("bottom", c + ey, ex, -ey, &b.texture));
    }
    Ok(())
}

/// Validates every quad and expands every box, in file order (quads first).
pub(crate) fn build_surfaces(scene: &str, file: &SceneFile) -> Result<Vec<RawSurface>> {
    let mut out = Vec::new();
    for (i, q) in file.quads.iter().enumerate() {
        out.push(quad(scene, i, q)?);
    }
    for (i, b) in file.boxes.iter().enumerate() {
        boxed(scene, i, b, &mut out)?;
    }
    if out.is_empty() {
        return Err(SimError::SceneInvalid {
            scene: scene.to_string(),
            item: "scene".into(),
            message: "no surfaces: add at least one [[quad]] or [[box]]".into(),
        });
    }
    Ok(out)
}
