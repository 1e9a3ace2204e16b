//! Scenes: textured planar quads in a z-up world, loaded from TOML files or the embedded samples.
//!
//! World convention: **z is up** (x east, y north, z up, as in a local east-north-up frame at the
//! scene's optional geo-anchor); metres. A quad's front is the side its normal `u × v` points to;
//! quads are rendered from both sides. Texture coordinates: the texture's bottom-left corner sits
//! at the quad's `origin`, its rows run along `v` from top (far end of `v`) to bottom.

mod file;
mod samples;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nalgebra::{Point3, Vector3};

use crate::digest::Fnv64;
use crate::error::{Result, SimError};
use crate::png_io::decode_png;
use crate::texture::{Texture, Wrap};

pub use samples::SAMPLE_NAMES;

/// One textured quad: the points `origin + s u + t v` for `s, t` in `[0, 1]`.
#[derive(Clone, Debug)]
pub struct Surface {
    /// Name from the scene file (boxes: `box/face`).
    pub name: String,
    /// A corner of the quad (world, metres).
    pub origin: Vector3<f64>,
    /// First edge: the texture's rows run along it.
    pub u: Vector3<f64>,
    /// Second edge: the texture's columns run along it, bottom to top.
    pub v: Vector3<f64>,
    /// Index into [`Scene::textures`].
    pub texture: usize,
    /// Texture repeats along `u` and `v` (1 when stretched once).
    pub repeats: [f64; 2],
    /// Repeat for tiled surfaces, clamp for textures stretched once.
    pub wrap: Wrap,
    /// Sub-rectangle of the texture used, normalised `[u0, v0, u1, v1]` (image coordinates, v down).
    pub crop: [f32; 4],
    /// Colour multiplier (tint × brightness).
    pub tint: [f32; 3],
}

impl Surface {
    /// Unit normal `u × v / |u × v|`.
    pub fn normal(&self) -> Vector3<f64> {
        self.u.cross(&self.v).normalize()
    }

    /// Area in square metres.
    pub fn area(&self) -> f64 {
        self.u.cross(&self.v).norm()
    }

    /// The world point at surface coordinates `(s, t)`.
    pub fn point(&self, s: f64, t: f64) -> Point3<f64> {
        Point3::from(self.origin + self.u * s + self.v * t)
    }

    /// The four corners.
    pub fn corners(&self) -> [Vector3<f64>; 4] {
        [
            self.origin,
            self.origin + self.u,
            self.origin + self.u + self.v,
            self.origin + self.v,
        ]
    }
}

/// The WGS84 point at the origin of the scene's local east-north-up frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GeoAnchor {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Altitude, metres above the ellipsoid.
    pub alt: f64,
}

/// Where cameras make sense in a scene: defaults for the trajectory generators.
#[derive(Clone, Debug, PartialEq)]
pub struct Views {
    /// Orbit centre and look-at point.
    pub center: Point3<f64>,
    /// Default orbit radius, metres.
    pub radius: f64,
    /// Default camera height above z = 0, metres.
    pub eye_height: f64,
    /// Default walk-through waypoints (x, y), metres.
    pub path: Vec<[f64; 2]>,
    /// Lower corner of the volume random views are drawn from.
    pub volume_min: Point3<f64>,
    /// Upper corner of that volume.
    pub volume_max: Point3<f64>,
}

/// A loaded scene: surfaces, their textures (mip-mapped), background and view hints.
#[derive(Clone, Debug)]
pub struct Scene {
    /// Scene name (from the file, or the file stem).
    pub name: String,
    /// Colour of rays that hit nothing (RGB in `[0, 1]`).
    pub background: [f32; 3],
    /// All quads, boxes expanded.
    pub surfaces: Vec<Surface>,
    /// Textures, shared by surfaces (each file loaded once).
    pub textures: Vec<Arc<Texture>>,
    /// Texture paths as written in the scene file, parallel to `textures`.
    pub texture_names: Vec<String>,
    /// Optional geo-anchor of the world frame.
    pub geo_anchor: Option<GeoAnchor>,
    /// Camera placement hints for trajectories.
    pub views: Views,
    /// Digest of the scene text and every texture's bytes (`fnv1a64:…`), for provenance.
    pub digest: String,
}

/// Where a scene's textures come from.
enum TextureSource<'a> {
    /// Files, relative to the scene file's folder.
    Dir(&'a Path),
    /// The textures compiled into the binary (sample scenes).
    Embedded,
}

impl Scene {
    /// Loads a scene file; texture paths are relative to its folder.
    pub fn load(path: &Path) -> Result<Scene> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::io(path, e))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Scene::build(
            &text,
            &path.display().to_string(),
            &stem,
            TextureSource::Dir(&dir),
        )
    }

    /// Parses scene text; texture paths are relative to `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Scene> {
        Scene::build(text, "<string>", "scene", TextureSource::Dir(base_dir))
    }

    /// One of the shipped scenes (`room`, `facade`, `plaza`), built from text and textures
    /// embedded in the binary: works without any file on disk.
    pub fn sample(name: &str) -> Result<Scene> {
        let text =
            samples::scene_text(name).ok_or_else(|| SimError::UnknownSample(name.to_string()))?;
        Scene::build(
            text,
            &format!("sample:{name}"),
            name,
            TextureSource::Embedded,
        )
    }

    /// `sample:NAME`, a path to a scene file, or a bare sample name (`room`) when no such file
    /// exists.
    pub fn open(spec: &str) -> Result<Scene> {
        if let Some(name) = spec.strip_prefix("sample:") {
            return Scene::sample(name);
        }
        let path = PathBuf::from(spec);
        if !path.is_file() && SAMPLE_NAMES.contains(&spec) {
            return Scene::sample(spec);
        }
        Scene::load(&path)
    }

    fn build(text: &str, label: &str, stem: &str, source: TextureSource<'_>) -> Result<Scene> {
        let parsed: file::SceneFile = toml::from_str(text).map_err(|e| SimError::SceneParse {
            scene: label.to_string(),
            message: e.to_string(),
        })?;
        let raw = file::build_surfaces(label, &parsed)?;
        let invalid = |item: &str, message: String| SimError::SceneInvalid {
            scene: label.to_string(),
            item: item.to_string(),
            message,
        };

        let mut digest = Fnv64::new();
        digest.update(text.as_bytes());
        let mut textures = Vec::new();
        let mut texture_names: Vec<String> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut surfaces = Vec::with_capacity(raw.len());
        for r in raw {
            let ti = match index.get(&r.texture) {
                Some(&i) => i,
                None => {
                    let bytes = load_texture_bytes(label, &r.texture, &source)?;
                    digest.update(r.texture.as_bytes());
                    digest.update(&bytes);
                    let img = decode_png(&bytes, &r.texture)?.to_rgb();
                    textures.push(Arc::new(Texture::from_rgb(&img)));
                    texture_names.push(r.texture.clone());
                    index.insert(r.texture.clone(), textures.len() - 1);
                    textures.len() - 1
                }
            };
            let (repeats, wrap) = match r.tile {
                Some([tu, tv]) => ([r.u.norm() / tu, r.v.norm() / tv], Wrap::Repeat),
                None => ([1.0, 1.0], Wrap::Clamp),
            };
            surfaces.push(Surface {
                name: r.name,
                origin: r.origin,
                u: r.u,
                v: r.v,
                texture: ti,
                repeats,
                wrap,
                crop: r.crop.map(|c| c as f32),
                tint: r.tint.map(|c| c as f32),
            });
        }

        let background = match parsed.background {
            None => [0.6, 0.72, 0.85],
            Some(b) if b.iter().all(|c| c.is_finite() && (0.0..=1.0).contains(c)) => {
                b.map(|c| c as f32)
            }
            Some(b) => {
                return Err(invalid(
                    "background",
                    format!("colour must be RGB in [0, 1], got {b:?}"),
                ));
            }
        };
        let geo_anchor = match parsed.geo_anchor {
            None => None,
            Some(g) => {
                let ok = g.lat.is_finite()
                    && g.lon.is_finite()
                    && g.alt.is_finite()
                    && g.lat.abs() <= 90.0
                    && g.lon.abs() <= 180.0;
                if !ok {
                    return Err(invalid(
                        "geo_anchor",
                        format!("lat {} lon {} alt {} out of range", g.lat, g.lon, g.alt),
                    ));
                }
                Some(GeoAnchor {
                    lat: g.lat,
                    lon: g.lon,
                    alt: g.alt,
                })
            }
        };
        let views = resolve_views(parsed.views.unwrap_or_default(), &surfaces)
            .map_err(|m| invalid("views", m))?;
        Ok(Scene {
            name: parsed.name.unwrap_or_else(|| stem.to_string()),
            background,
            surfaces,
            textures,
            texture_names,
            geo_anchor,
            views,
            digest: digest.hex(),
        })
    }

    /// Axis-aligned bounds of all surfaces: (min, max).
    pub fn bounds(&self) -> (Point3<f64>, Point3<f64>) {
        bounds(&self.surfaces)
    }

    /// World up (`+z`).
    pub fn world_up() -> Vector3<f64> {
        Vector3::z()
    }
}

fn bounds(surfaces: &[Surface]) -> (Point3<f64>, Point3<f64>) {
    let mut lo = Vector3::repeat(f64::INFINITY);
    let mut hi = Vector3::repeat(f64::NEG_INFINITY);
    for c in surfaces.iter().flat_map(Surface::corners) {
        lo = lo.inf(&c);
        hi = hi.sup(&c);
    }
    (Point3::from(lo), Point3::from(hi))
}

fn resolve_views(v: file::ViewsFile, surfaces: &[Surface]) -> std::result::Result<Views, String> {
    let (lo, hi) = bounds(surfaces);
    let eye_height = v.eye_height.unwrap_or(1.6);
    let mid = nalgebra::center(&lo, &hi);
    let center =
        v.center
            .map(Point3::from)
            .unwrap_or(Point3::new(mid.x, mid.y, eye_height.min(hi.z)));
    let extent = (hi - lo).xy().norm();
    let radius = v.radius.unwrap_or((extent * 0.3).max(1.0));
    let inset = (hi - lo) * 0.2;
    let volume_min =
        v.volume_min
            .map(Point3::from)
            .unwrap_or(Point3::new(lo.x + inset.x, lo.y + inset.y, 1.2));
    let volume_max =
        v.volume_max
            .map(Point3::from)
            .unwrap_or(Point3::new(hi.x - inset.x, hi.y - inset.y, 2.0));
    let path = v
        .path
        .unwrap_or_else(|| vec![[lo.x + inset.x, mid.y], [hi.x - inset.x, mid.y]]);
    let finite = center
        .coords
        .iter()
        .chain(volume_min.coords.iter())
        .chain(volume_max.coords.iter())
        .chain(path.iter().flatten())
        .all(|x| x.is_finite())
        && radius.is_finite()
        && eye_height.is_finite();
    if !finite {
        return Err("non-finite value".into());
    }
    if radius <= 0.0 {
        return Err(format!("radius must be positive, got {radius}"));
    }
    if (0..3).any(|i| volume_min[i] > volume_max[i]) {
        return Err("volume_min must be <= volume_max on every axis".into());
    }
    if path.len() < 2 {
        return Err("path needs at least two waypoints".into());
    }
    Ok(Views {
        center,
        radius,
        eye_height,
        path,
        volume_min,
        volume_max,
    })
}

fn load_texture_bytes(label: &str, texture: &str, source: &TextureSource<'_>) -> Result<Vec<u8>> {
    match source {
        TextureSource::Embedded => samples::texture_bytes(texture)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| SimError::MissingTexture {
                scene: label.to_string(),
                texture: texture.to_string(),
                looked_for: "the textures embedded in the binary".into(),
            }),
        TextureSource::Dir(dir) => {
            let path = dir.join(texture);
            if !path.is_file() {
                return Err(SimError::MissingTexture {
                    scene: label.to_string(),
                    texture: texture.to_string(),
                    looked_for: path.display().to_string(),
                });
            }
            std::fs::read(&path).map_err(|e| SimError::io(&path, e))
        }
    }
}
