//! Maps: the 3D landmarks a frame is localised against, how they are built from posed frames,
//! and the binary file that carries them to the device.
//!
//! - [`MapContents`]: a map as plain owned data — what [`MapBuilder`] produces and
//!   [`encode_map`] writes.
//! - [`Map`]: a parsed, validated map file over any byte storage (an owned aligned buffer, or a
//!   memory-mapped file): large arrays are read in place, without copying.
//! - [`MapBuilder`]: feature extraction, covisible-frame matching, multi-view triangulation (or
//!   depth), filtering, one descriptor per landmark, keyframes with a retrieval vector.
//! - [`Vocabulary`]: the visual words that give every keyframe and query a global descriptor
//!   for retrieval.
//!
//! The file layout is specified in `docs/map-format.md`. Landmarks are stored in tiles (squares
//! of the local east-north ground plane) so a device can take only the area around it
//! ([`cut_map`]).

mod build;
mod format;
mod tiles;
mod vocab;

pub use build::{MapBuildConfig, MapBuildStats, MapBuilder, MapFrame};
pub use format::{AlignedBytes, MAP_FORMAT_VERSION, MAP_MAGIC, Map, encode_map};
pub use tiles::{TileRange, cut_map, tile_of};
pub use vocab::{BowVector, Vocabulary, VocabularyConfig, bow_similarity};

use nalgebra::Vector3;

use crate::{Camera, Pose};

/// Why a map could not be built, written or read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The bytes are not a Sextant map (wrong magic).
    #[error("not a Sextant map file (bad magic)")]
    BadMagic,
    /// A format version this runtime cannot read.
    #[error("map format version {found} not supported (this runtime reads {supported})")]
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// Version this runtime reads.
        supported: u32,
    },
    /// The file is shorter (or longer) than its header says.
    #[error("map truncated or padded: header says {expected} bytes, got {actual}")]
    Truncated {
        /// Length the header announces.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// A checksum does not match: the file is corrupt.
    #[error("map {what} checksum mismatch: corrupt file")]
    Checksum {
        /// `header` or `payload`.
        what: &'static str,
    },
    /// A value in the file is out of range or inconsistent.
    #[error("invalid map: {0}")]
    Invalid(String),
    /// The byte storage is not aligned for in-place reading (pass an [`AlignedBytes`]).
    #[error("map bytes are not 8-byte aligned; load them into AlignedBytes")]
    Misaligned,
    /// Map building could not proceed (bad input frame, too few frames, …).
    #[error("map building: {0}")]
    Build(String),
    /// Reading or writing a file failed.
    #[error("map file {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// The WGS84 point at the origin of the map's local east-north-up frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoAnchor {
    /// Latitude, degrees.
    pub lat: f64,
    /// Longitude, degrees.
    pub lon: f64,
    /// Altitude, metres above the ellipsoid.
    pub alt: f64,
}

/// A mapping frame kept in the map: its pose, camera and retrieval vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyframe {
    /// World-to-camera pose.
    pub pose: Pose,
    /// Index into the map's cameras.
    pub camera: u32,
    /// Retrieval vector: tf-idf weights over the vocabulary, L2-normalised, scaled to 0..=255.
    pub bow: Vec<u8>,
}

/// The landmarks as parallel arrays, sorted by tile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Landmarks {
    /// World positions (metres, local ENU).
    pub positions: Vec<[f32; 3]>,
    /// One int8 descriptor per landmark, `descriptor_dim` values each.
    pub descriptors: Vec<i8>,
    /// Mean viewing direction (landmark → cameras that saw it, unit vector × 127) and the
    /// track length (number of mapping views, saturated at 127) in the last byte.
    pub views: Vec<[i8; 4]>,
}

impl Landmarks {
    /// Number of landmarks.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

/// One tile's landmark range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Tile column: `floor(x / tile_size)`.
    pub ix: i32,
    /// Tile row: `floor(y / tile_size)`.
    pub iy: i32,
    /// First landmark of the tile.
    pub first: u32,
    /// Number of landmarks in the tile.
    pub count: u32,
}

/// A whole map as owned plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct MapContents {
    /// Descriptor length (the descriptor model's output dimension).
    pub descriptor_dim: usize,
    /// First 16 bytes of the sha256 of the descriptor model that made the descriptors.
    pub model_id: [u8; 16],
    /// Geo-anchor of the local frame, if known.
    pub geo_anchor: Option<GeoAnchor>,
    /// Side of a tile, metres.
    pub tile_size_m: f32,
    /// Farthest a landmark was observed from a mapping camera, metres (visibility range).
    pub max_range_m: f32,
    /// The mapping cameras.
    pub cameras: Vec<Camera>,
    /// The keyframes.
    pub keyframes: Vec<Keyframe>,
    /// Visual words for retrieval.
    pub vocabulary: Vocabulary,
    /// The landmarks, sorted by tile (see [`MapContents::tiles`]).
    pub landmarks: Landmarks,
}

impl MapContents {
    /// The tile table of the (tile-sorted) landmarks.
    pub fn tiles(&self) -> Vec<Tile> {
        tiles::tile_table(&self.landmarks.positions, self.tile_size_m)
    }
}

/// Unit vector from a `[i8; 4]` view record (first three bytes), or zero when unset.
pub fn view_direction(v: &[i8; 4]) -> Vector3<f32> {
    let d = Vector3::new(f32::from(v[0]), f32::from(v[1]), f32::from(v[2]));
    let n = d.norm();
    if n > 0.0 { d / n } else { d }
}

/// The model id recorded in maps: the first 16 bytes of a model's sha256 (hex, as in
/// [`crate::descriptor::ModelInfo::sha256`]).
pub fn model_id_from_sha256_hex(hex: &str) -> [u8; 16] {
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = hex
            .get(2 * i..2 * i + 2)
            .and_then(|s| u8::from_str_radix(s, 16).ok())
            .unwrap_or(0);
    }
    id
}
