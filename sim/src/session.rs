//! Sessions on disk (`shared/formats/session.md`): writing what the simulator renders and reading
//! any session back as typed, validated data.
//!
//! Layout written: `session.json`, `frames/000000.png` (8-bit gray or colour), `depth/000000.png`
//! (16-bit gray, millimetres along the camera z axis, 0 = no surface or beyond 65.535 m), and
//! `render.json` (how the frames were made: scene digest, trajectory, photometric, seed).
//! Poses are world-to-camera; `gravity` is world up (`+z` in the simulator's z-up world) in the
//! camera frame.

use std::path::{Component, Path, PathBuf};

use nalgebra::{Matrix3, Vector3};
use serde::{Deserialize, Serialize};
use sextant_runtime::{Camera, Distortion, GrayImage, Pose};

use crate::error::{Result, SimError};
use crate::image::RgbImage;
use crate::png_io::{self, DecodedImage};
use crate::scene::GeoAnchor;

/// The `format` string of `session.json`.
pub const SESSION_FORMAT: &str = "sextant-session/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CameraJson {
    model: String,
    width: u32,
    height: u32,
    fx: f64,
    fy: f64,
    cx: f64,
    cy: f64,
    #[serde(default)]
    k1: f64,
    #[serde(default)]
    k2: f64,
    #[serde(default)]
    k3: f64,
    #[serde(default)]
    p1: f64,
    #[serde(default)]
    p2: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PoseJson {
    #[serde(rename = "R")]
    r: [[f64; 3]; 3],
    t: [f64; 3],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PriorJson {
    position: [f64; 3],
    sigma_m: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct GeoJson {
    lat: f64,
    lon: f64,
    #[serde(default)]
    alt: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FrameJson {
    image: String,
    #[serde(default)]
    timestamp: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pose: Option<PoseJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gravity: Option<[f64; 3]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    depth: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prior: Option<PriorJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    camera: Option<CameraJson>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionJson {
    format: String,
    camera: CameraJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    geo_anchor: Option<GeoJson>,
    frames: Vec<FrameJson>,
}

/// A coarse position prior (as GPS would give).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prior {
    /// Camera centre in world coordinates, metres.
    pub position: Vector3<f64>,
    /// 1-σ radius, metres.
    pub sigma_m: f64,
}

/// One frame of a session, paths resolved against the session folder.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionFrame {
    /// The image path as written in `session.json`.
    pub image_rel: String,
    /// The image file.
    pub image: PathBuf,
    /// Seconds.
    pub timestamp: f64,
    /// World-to-camera pose (ground truth in a query set).
    pub pose: Option<Pose>,
    /// World up in the camera frame.
    pub gravity: Option<Vector3<f64>>,
    /// The 16-bit depth PNG, if any.
    pub depth: Option<PathBuf>,
    /// Position prior, if any.
    pub prior: Option<Prior>,
    /// Per-frame camera override.
    pub camera: Option<Camera>,
}

/// A depth map in metres (0 = unknown).
#[derive(Clone, Debug, PartialEq)]
pub struct DepthMap {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major depths, metres.
    pub metres: Vec<f32>,
}

impl DepthMap {
    /// Depth at (`x`, `y`), metres.
    pub fn get(&self, x: u32, y: u32) -> f32 {
        self.metres[y as usize * self.width as usize + x as usize]
    }
}

impl SessionFrame {
    /// Decodes the frame's image.
    pub fn load_image(&self) -> Result<DecodedImage> {
        let lower = self.image_rel.to_ascii_lowercase();
        if lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
            return Err(SimError::Session {
                path: self.image.clone(),
                message: "JPEG frames are not supported by this reader yet; convert to PNG".into(),
            });
        }
        png_io::read_png_file(&self.image)
    }

    /// The frame's image as gray (the runtime's luma for colour images).
    pub fn load_gray(&self) -> Result<GrayImage> {
        self.load_image().map(|i| i.to_gray())
    }

    /// Decodes the depth map (millimetres → metres), if the frame has one.
    pub fn load_depth(&self) -> Result<Option<DepthMap>> {
        let Some(path) = &self.depth else {
            return Ok(None);
        };
        let bytes = std::fs::read(path).map_err(|e| SimError::io(path, e))?;
        let (width, height, mm) = png_io::decode_png16(&bytes, &path.display().to_string())?;
        Ok(Some(DepthMap {
            width,
            height,
            metres: mm.iter().map(|&v| f32::from(v) / 1000.0).collect(),
        }))
    }
}

/// A validated session.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// The folder holding `session.json`.
    pub dir: PathBuf,
    /// The session's camera.
    pub camera: Camera,
    /// Origin of the local east-north-up world frame, if known.
    pub geo_anchor: Option<GeoAnchor>,
    /// Frames in file order.
    pub frames: Vec<SessionFrame>,
}

impl Session {
    /// The camera of frame `i` (its override, or the session's).
    pub fn camera_for(&self, i: usize) -> &Camera {
        self.frames
            .get(i)
            .and_then(|f| f.camera.as_ref())
            .unwrap_or(&self.camera)
    }
}

fn camera_json(c: &Camera) -> CameraJson {
    let d = c.distortion();
    CameraJson {
        model: if c.is_pinhole() { "pinhole" } else { "brown" }.into(),
        width: c.width(),
        height: c.height(),
        fx: c.fx(),
        fy: c.fy(),
        cx: c.cx(),
        cy: c.cy(),
        k1: d.k1,
        k2: d.k2,
        k3: d.k3,
        p1: d.p1,
        p2: d.p2,
    }
}

fn pose_json(p: &Pose) -> PoseJson {
    let r = p.rotation_matrix();
    let t = p.translation();
    PoseJson {
        r: [0, 1, 2].map(|i| [r[(i, 0)], r[(i, 1)], r[(i, 2)]]),
        t: [t.x, t.y, t.z],
    }
}

/// Image data for one frame of a written session.
#[derive(Clone, Copy, Debug)]
pub enum FrameImage<'a> {
    /// Written as an 8-bit gray PNG.
    Gray(&'a GrayImage),
    /// Written as an 8-bit RGB PNG.
    Rgb(&'a RgbImage),
    /// Written as an 8-bit RGBA PNG (opaque alpha).
    Rgba(&'a RgbImage),
}

/// Everything recorded for one frame.
#[derive(Clone, Copy, Debug)]
pub struct FrameRecord<'a> {
    /// The image.
    pub image: FrameImage<'a>,
    /// Seconds.
    pub timestamp: f64,
    /// World-to-camera pose.
    pub pose: Option<Pose>,
    /// World up in the camera frame.
    pub gravity: Option<Vector3<f64>>,
    /// Depth in metres, row-major, the image's size.
    pub depth: Option<&'a [f32]>,
    /// Position prior.
    pub prior: Option<Prior>,
}

/// Millimetres for a depth in metres: 0 for unknown, non-finite or beyond 65.535 m.
pub fn depth_to_mm(d: f32) -> u16 {
    let mm = (f64::from(d) * 1000.0).round();
    if d > 0.0 && mm >= 1.0 && mm <= f64::from(u16::MAX) {
        mm as u16
    } else {
        0
    }
}

/// Writes a session folder frame by frame; `finish` writes `session.json`.
#[derive(Debug)]
pub struct SessionWriter {
    dir: PathBuf,
    camera: Camera,
    json: SessionJson,
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| SimError::io(path, e))
}

impl SessionWriter {
    /// Creates `dir` (and `frames/`, `depth/`) for a session shot with `camera`.
    pub fn create(
        dir: &Path,
        camera: &Camera,
        geo_anchor: Option<GeoAnchor>,
    ) -> Result<SessionWriter> {
        for sub in ["frames", "depth"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(|e| SimError::io(&p, e))?;
        }
        Ok(SessionWriter {
            dir: dir.to_path_buf(),
            camera: *camera,
            json: SessionJson {
                format: SESSION_FORMAT.into(),
                camera: camera_json(camera),
                geo_anchor: geo_anchor.map(|g| GeoJson {
                    lat: g.lat,
                    lon: g.lon,
                    alt: g.alt,
                }),
                frames: Vec::new(),
            },
        })
    }

    /// The session folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes frame `len()` (image and depth PNGs) and records it.
    pub fn add_frame(&mut self, f: &FrameRecord<'_>) -> Result<()> {
        let i = self.json.frames.len();
        let (w, h) = (self.camera.width(), self.camera.height());
        let bad = |m: String| SimError::Session {
            path: self.dir.clone(),
            message: format!("frame {i}: {m}"),
        };
        let (iw, ih, png) = match f.image {
            FrameImage::Gray(g) => (g.width(), g.height(), png_io::encode_gray(g)?),
            FrameImage::Rgb(c) => (c.width(), c.height(), png_io::encode_rgb(c)?),
            FrameImage::Rgba(c) => {
                let rgba: Vec<u8> = c
                    .as_slice()
                    .chunks_exact(3)
                    .flat_map(|p| [p[0], p[1], p[2], 255])
                    .collect();
                (
                    c.width(),
                    c.height(),
                    png_io::encode_rgba(c.width(), c.height(), &rgba)?,
                )
            }
        };
        if (iw, ih) != (w, h) {
            return Err(bad(format!("image is {iw}x{ih}, camera is {w}x{h}")));
        }
        let image = format!("frames/{i:06}.png");
        write_file(&self.dir.join(&image), &png)?;
        let depth = match f.depth {
            None => None,
            Some(d) => {
                if d.len() != w as usize * h as usize {
                    return Err(bad(format!(
                        "depth has {} values, expected {}",
                        d.len(),
                        w as usize * h as usize
                    )));
                }
                let mm: Vec<u16> = d.iter().map(|&v| depth_to_mm(v)).collect();
                let rel = format!("depth/{i:06}.png");
                write_file(&self.dir.join(&rel), &png_io::encode_gray16(w, h, &mm)?)?;
                Some(rel)
            }
        };
        self.json.frames.push(FrameJson {
            image,
            timestamp: f.timestamp,
            pose: f.pose.as_ref().map(pose_json),
            gravity: f.gravity.map(|g| [g.x, g.y, g.z]),
            depth,
            prior: f.prior.map(|p| PriorJson {
                position: [p.position.x, p.position.y, p.position.z],
                sigma_m: p.sigma_m,
            }),
            camera: None,
        });
        Ok(())
    }

    /// Frames written so far.
    pub fn len(&self) -> usize {
        self.json.frames.len()
    }

    /// Whether no frame was written yet.
    pub fn is_empty(&self) -> bool {
        self.json.frames.is_empty()
    }

    /// Writes `session.json` and returns its path.
    pub fn finish(self) -> Result<PathBuf> {
        let path = self.dir.join("session.json");
        let text = serde_json::to_string_pretty(&self.json).map_err(|e| SimError::Session {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_file(&path, format!("{text}\n").as_bytes())?;
        Ok(path)
    }
}

/// Writes `render.json` (any serialisable description of how the session was made).
pub fn write_render_json(dir: &Path, info: &impl Serialize) -> Result<PathBuf> {
    let path = dir.join("render.json");
    let text = serde_json::to_string_pretty(info).map_err(|e| SimError::Session {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_file(&path, format!("{text}\n").as_bytes())?;
    Ok(path)
}

fn camera_from_json(c: &CameraJson) -> std::result::Result<Camera, String> {
    let d = Distortion {
        k1: c.k1,
        k2: c.k2,
        k3: c.k3,
        p1: c.p1,
        p2: c.p2,
    };
    match c.model.as_str() {
        "pinhole" if !d.is_zero() => {
            Err("model \"pinhole\" with non-zero distortion terms (use \"brown\")".into())
        }
        "pinhole" | "brown" => {
            Camera::new(c.width, c.height, c.fx, c.fy, c.cx, c.cy, d).map_err(|e| e.to_string())
        }
        other => Err(format!(
            "unknown camera model {other:?} (expected \"pinhole\" or \"brown\")"
        )),
    }
}

/// A relative path inside the session folder (no absolute paths, no `..`).
fn inside(dir: &Path, rel: &str) -> std::result::Result<PathBuf, String> {
    let p = Path::new(rel);
    if rel.is_empty()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "path {rel:?} must be relative to the session folder, without '..'"
        ));
    }
    let full = dir.join(p);
    if !full.is_file() {
        return Err(format!("{rel:?} does not exist ({})", full.display()));
    }
    Ok(full)
}

/// Reads and validates a session folder (or a path to its `session.json`): format tag, camera,
/// every frame's paths (must exist inside the folder), poses (proper rotations), gravity, priors.
/// Images and depth maps are decoded lazily by [`SessionFrame`].
pub fn read_session(path: &Path) -> Result<Session> {
    let (dir, file) = if path.is_dir() {
        (path.to_path_buf(), path.join("session.json"))
    } else {
        (
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
            path.to_path_buf(),
        )
    };
    let text = std::fs::read_to_string(&file).map_err(|e| SimError::io(&file, e))?;
    let bad = |m: String| SimError::Session {
        path: file.clone(),
        message: m,
    };
    let json: SessionJson = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if json.format != SESSION_FORMAT {
        return Err(bad(format!(
            "format {:?} is not {SESSION_FORMAT:?}",
            json.format
        )));
    }
    let camera = camera_from_json(&json.camera).map_err(|m| bad(format!("camera: {m}")))?;
    let geo_anchor = match json.geo_anchor {
        None => None,
        Some(g) if g.lat.abs() <= 90.0 && g.lon.abs() <= 180.0 && g.alt.is_finite() => {
            Some(GeoAnchor {
                lat: g.lat,
                lon: g.lon,
                alt: g.alt,
            })
        }
        Some(g) => return Err(bad(format!("geo_anchor out of range: {g:?}"))),
    };
    if json.frames.is_empty() {
        return Err(bad("no frames".into()));
    }
    let mut frames = Vec::with_capacity(json.frames.len());
    for (i, f) in json.frames.iter().enumerate() {
        let fb = |m: String| bad(format!("frame {i}: {m}"));
        let image = inside(&dir, &f.image).map_err(fb)?;
        let depth = f
            .depth
            .as_deref()
            .map(|d| inside(&dir, d))
            .transpose()
            .map_err(fb)?;
        if !f.timestamp.is_finite() {
            return Err(fb("timestamp is not finite".into()));
        }
        let pose = match &f.pose {
            None => None,
            Some(p) => {
                let r = Matrix3::from_fn(|a, b| p.r[a][b]);
                let t = Vector3::from(p.t);
                if !r.iter().chain(t.iter()).all(|v| v.is_finite()) {
                    return Err(fb("pose has non-finite values".into()));
                }
                Some(Pose::from_rt(&r, &t).map_err(|e| fb(e.to_string()))?)
            }
        };
        let gravity = match f.gravity {
            None => None,
            Some(g) => {
                let v = Vector3::from(g);
                if !v.iter().all(|x| x.is_finite()) || v.norm() < 1e-9 {
                    return Err(fb(format!("gravity {g:?} is not a finite non-zero vector")));
                }
                Some(v.normalize())
            }
        };
        let prior = match &f.prior {
            None => None,
            Some(p)
                if p.position.iter().all(|x| x.is_finite())
                    && p.sigma_m.is_finite()
                    && p.sigma_m > 0.0 =>
            {
                Some(Prior {
                    position: Vector3::from(p.position),
                    sigma_m: p.sigma_m,
                })
            }
            Some(p) => {
                return Err(fb(format!(
                    "prior {p:?} needs a finite position and a positive sigma_m"
                )));
            }
        };
        let camera = f
            .camera
            .as_ref()
            .map(camera_from_json)
            .transpose()
            .map_err(|m| fb(format!("camera: {m}")))?;
        frames.push(SessionFrame {
            image_rel: f.image.clone(),
            image,
            timestamp: f.timestamp,
            pose,
            gravity,
            depth,
            prior,
            camera,
        });
    }
    Ok(Session {
        dir,
        camera,
        geo_anchor,
        frames,
    })
}
