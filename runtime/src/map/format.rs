//! The map file: a fixed header with checksums, then fixed-order sections at 16-byte-aligned
//! offsets (see `docs/map-format.md`). Reading validates everything once and then serves the
//! large arrays (positions, descriptors, views) in place from the byte storage.

use nalgebra::{Quaternion, UnitQuaternion, Vector3};

use super::{GeoAnchor, Keyframe, Landmarks, MapContents, MapError, Tile, Vocabulary};
use crate::{Camera, Distortion, Pose};

/// The first 8 bytes of every map file.
pub const MAP_MAGIC: [u8; 8] = *b"SXTMAP\r\n";
/// The format version this runtime writes and reads.
pub const MAP_FORMAT_VERSION: u32 = 1;

const HEADER_LEN: usize = 128;
const CAMERA_LEN: usize = 80;
const KEYFRAME_LEN: usize = 64;
const TILE_LEN: usize = 16;
const ALIGN: usize = 16;
const MAX_DIM: usize = 4096;
const MAX_COUNT: u64 = 1 << 28;

/// Section offsets and counts, computed from the header's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Layout {
    dim: usize,
    landmarks: usize,
    keyframes: usize,
    cameras: usize,
    tiles: usize,
    words: usize,
    cameras_at: usize,
    keyframes_at: usize,
    bow_at: usize,
    words_at: usize,
    idf_at: usize,
    tiles_at: usize,
    positions_at: usize,
    descriptors_at: usize,
    views_at: usize,
    file_len: usize,
}

impl Layout {
    fn new(
        dim: usize,
        landmarks: usize,
        keyframes: usize,
        cameras: usize,
        tiles: usize,
        words: usize,
    ) -> Option<Layout> {
        let mut at = HEADER_LEN;
        let mut section = |bytes: Option<usize>| -> Option<usize> {
            let start = at.checked_next_multiple_of(ALIGN)?;
            at = start.checked_add(bytes?)?;
            Some(start)
        };
        let cameras_at = section(cameras.checked_mul(CAMERA_LEN))?;
        let keyframes_at = section(keyframes.checked_mul(KEYFRAME_LEN))?;
        let bow_at = section(keyframes.checked_mul(words))?;
        let words_at = section(words.checked_mul(dim))?;
        let idf_at = section(words.checked_mul(4))?;
        let tiles_at = section(tiles.checked_mul(TILE_LEN))?;
        let positions_at = section(landmarks.checked_mul(12))?;
        let descriptors_at = section(landmarks.checked_mul(dim))?;
        let views_at = section(landmarks.checked_mul(4))?;
        let file_len = at;
        Some(Layout {
            dim,
            landmarks,
            keyframes,
            cameras,
            tiles,
            words,
            cameras_at,
            keyframes_at,
            bow_at,
            words_at,
            idf_at,
            tiles_at,
            positions_at,
            descriptors_at,
            views_at,
            file_len,
        })
    }
}

// --- CRC-32C (Castagnoli), table-driven -------------------------------------------------------

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC32C: [u32; 256] = crc32c_table();

/// CRC-32C of `bytes` (the checksum in map headers).
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC32C[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

// --- writing ----------------------------------------------------------------------------------

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_f32(buf: &mut [u8], at: usize, v: f32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_f64(buf: &mut [u8], at: usize, v: f64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Serialises a map. The landmarks must be sorted by tile (as [`super::MapBuilder`] leaves
/// them); the contents are validated exactly as [`Map::parse`] validates a file.
pub fn encode_map(map: &MapContents) -> Result<Vec<u8>, MapError> {
    let dim = map.descriptor_dim;
    let n = map.landmarks.len();
    let words = map.vocabulary.len();
    let tiles = map.tiles();
    let lm = &map.landmarks;
    if lm.descriptors.len() != n * dim || lm.views.len() != n {
        return Err(MapError::Invalid(format!(
            "{n} positions but {} descriptor values (dim {dim}) and {} views",
            lm.descriptors.len(),
            lm.views.len()
        )));
    }
    if map.vocabulary.dim() != dim && words > 0 {
        return Err(MapError::Invalid(format!(
            "vocabulary dimension {} differs from descriptor dimension {dim}",
            map.vocabulary.dim()
        )));
    }
    let layout = Layout::new(
        dim,
        n,
        map.keyframes.len(),
        map.cameras.len(),
        tiles.len(),
        words,
    )
    .ok_or_else(|| MapError::Invalid("map too large".into()))?;
    let mut buf = vec![0u8; layout.file_len];

    // Header.
    buf[0..8].copy_from_slice(&MAP_MAGIC);
    put_u32(&mut buf, 8, MAP_FORMAT_VERSION);
    put_u32(&mut buf, 12, HEADER_LEN as u32);
    put_u32(&mut buf, 16, u32::from(map.geo_anchor.is_some()));
    let count =
        |v: usize| u32::try_from(v).map_err(|_| MapError::Invalid(format!("count {v} above 2^32")));
    put_u32(&mut buf, 20, count(dim)?);
    put_u32(&mut buf, 24, count(n)?);
    put_u32(&mut buf, 28, count(map.keyframes.len())?);
    put_u32(&mut buf, 32, count(map.cameras.len())?);
    put_u32(&mut buf, 36, count(tiles.len())?);
    put_u32(&mut buf, 40, count(words)?);
    put_f32(&mut buf, 44, map.tile_size_m);
    put_f32(&mut buf, 48, map.max_range_m);
    if let Some(g) = map.geo_anchor {
        put_f64(&mut buf, 56, g.lat);
        put_f64(&mut buf, 64, g.lon);
        put_f64(&mut buf, 72, g.alt);
    }
    buf[80..88].copy_from_slice(&(layout.file_len as u64).to_le_bytes());
    buf[96..112].copy_from_slice(&map.model_id);

    // Sections.
    for (i, c) in map.cameras.iter().enumerate() {
        let at = layout.cameras_at + i * CAMERA_LEN;
        put_u32(&mut buf, at, c.width());
        put_u32(&mut buf, at + 4, c.height());
        let d = c.distortion();
        for (k, v) in [c.fx(), c.fy(), c.cx(), c.cy(), d.k1, d.k2, d.k3, d.p1, d.p2]
            .into_iter()
            .enumerate()
        {
            put_f64(&mut buf, at + 8 + 8 * k, v);
        }
    }
    for (i, kf) in map.keyframes.iter().enumerate() {
        let at = layout.keyframes_at + i * KEYFRAME_LEN;
        let q = kf.pose.rotation().quaternion();
        let t = kf.pose.translation();
        for (k, v) in [q.w, q.i, q.j, q.k, t.x, t.y, t.z].into_iter().enumerate() {
            put_f64(&mut buf, at + 8 * k, v);
        }
        put_u32(&mut buf, at + 56, kf.camera);
        if kf.bow.len() != words {
            return Err(MapError::Invalid(format!(
                "keyframe {i} has {} retrieval weights, vocabulary has {words} words",
                kf.bow.len()
            )));
        }
        let b = layout.bow_at + i * words;
        buf[b..b + words].copy_from_slice(&kf.bow);
    }
    for (i, &w) in map.vocabulary.words().iter().enumerate() {
        buf[layout.words_at + i] = w as u8;
    }
    for (i, &v) in map.vocabulary.idf().iter().enumerate() {
        put_f32(&mut buf, layout.idf_at + 4 * i, v);
    }
    for (i, t) in tiles.iter().enumerate() {
        let at = layout.tiles_at + i * TILE_LEN;
        buf[at..at + 4].copy_from_slice(&t.ix.to_le_bytes());
        buf[at + 4..at + 8].copy_from_slice(&t.iy.to_le_bytes());
        put_u32(&mut buf, at + 8, t.first);
        put_u32(&mut buf, at + 12, t.count);
    }
    for (i, p) in lm.positions.iter().enumerate() {
        for (k, &v) in p.iter().enumerate() {
            put_f32(&mut buf, layout.positions_at + 12 * i + 4 * k, v);
        }
    }
    for (i, &d) in lm.descriptors.iter().enumerate() {
        buf[layout.descriptors_at + i] = d as u8;
    }
    for (i, v) in lm.views.iter().enumerate() {
        for (k, &b) in v.iter().enumerate() {
            buf[layout.views_at + 4 * i + k] = b as u8;
        }
    }

    let payload = crc32c(&buf[HEADER_LEN..]);
    put_u32(&mut buf, 88, payload);
    let header = crc32c(&buf[..HEADER_LEN]);
    put_u32(&mut buf, 92, header);
    // Validate what we wrote exactly as a reader would (unsorted tiles, bad cameras, NaNs …).
    Map::parse_unaligned_check(&buf)?;
    Ok(buf)
}

// --- reading ----------------------------------------------------------------------------------

/// Owned bytes with 8-byte alignment, so a map read into them can be served in place.
#[derive(Debug, Clone, Default)]
pub struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    /// Copies `bytes` into aligned storage.
    pub fn copy_from(bytes: &[u8]) -> AlignedBytes {
        let mut a = AlignedBytes::zeroed(bytes.len());
        a.as_mut().copy_from_slice(bytes);
        a
    }

    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> AlignedBytes {
        AlignedBytes {
            words: vec![0u64; len.div_ceil(8)],
            len,
        }
    }

    /// Reads a whole file.
    pub fn read_file(path: &std::path::Path) -> Result<AlignedBytes, MapError> {
        use std::io::Read;
        let io = |e: std::io::Error| MapError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let len = usize::try_from(len)
            .map_err(|_| MapError::Invalid(format!("file of {len} bytes too large")))?;
        let mut a = AlignedBytes::zeroed(len);
        f.read_exact(a.as_mut()).map_err(io)?;
        Ok(a)
    }
}

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment or
        // validity requirements.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

impl AsMut<[u8]> for AlignedBytes {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_ref`; every byte pattern is a valid u64, so writes cannot break it.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// A parsed, validated map over byte storage `B` (an [`AlignedBytes`], or a memory-mapped
/// file's `&[u8]`). Small tables (cameras, keyframes, tiles, idf) are decoded at parse time;
/// landmark arrays and vocabulary words are read in place.
#[derive(Debug, Clone)]
pub struct Map<B = AlignedBytes> {
    bytes: B,
    layout: Layout,
    model_id: [u8; 16],
    geo_anchor: Option<GeoAnchor>,
    tile_size_m: f32,
    max_range_m: f32,
    cameras: Vec<Camera>,
    keyframes: Vec<Keyframe>,
    tiles: Vec<Tile>,
    vocabulary: Vocabulary,
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn get_f32(b: &[u8], at: usize) -> f32 {
    f32::from_bits(get_u32(b, at))
}
fn get_f64(b: &[u8], at: usize) -> f64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    f64::from_le_bytes(a)
}

impl Map<AlignedBytes> {
    /// Reads and validates a map file.
    pub fn open(path: &std::path::Path) -> Result<Map<AlignedBytes>, MapError> {
        Map::parse(AlignedBytes::read_file(path)?)
    }

    /// Validates a map from bytes in any alignment (copied into aligned storage).
    pub fn from_bytes(bytes: &[u8]) -> Result<Map<AlignedBytes>, MapError> {
        Map::parse(AlignedBytes::copy_from(bytes))
    }
}

impl<B: AsRef<[u8]>> Map<B> {
    /// Validates `bytes` as a map file: magic, version, length, both checksums, every count,
    /// camera, pose, tile range and value. Never panics on any input.
    pub fn parse(bytes: B) -> Result<Map<B>, MapError> {
        let b = bytes.as_ref();
        if b.as_ptr().align_offset(8) != 0 {
            return Err(MapError::Misaligned);
        }
        let parts = parse_parts(b)?;
        Ok(Map {
            bytes,
            layout: parts.layout,
            model_id: parts.model_id,
            geo_anchor: parts.geo_anchor,
            tile_size_m: parts.tile_size_m,
            max_range_m: parts.max_range_m,
            cameras: parts.cameras,
            keyframes: parts.keyframes,
            tiles: parts.tiles,
            vocabulary: parts.vocabulary,
        })
    }

    /// The file bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_ref()
    }

    /// Descriptor length.
    pub fn descriptor_dim(&self) -> usize {
        self.layout.dim
    }

    /// Number of landmarks.
    pub fn len(&self) -> usize {
        self.layout.landmarks
    }

    /// Whether the map has no landmarks.
    pub fn is_empty(&self) -> bool {
        self.layout.landmarks == 0
    }

    /// First 16 bytes of the sha256 of the descriptor model that made the descriptors.
    pub fn model_id(&self) -> [u8; 16] {
        self.model_id
    }

    /// The geo-anchor, if any.
    pub fn geo_anchor(&self) -> Option<GeoAnchor> {
        self.geo_anchor
    }

    /// Side of a tile, metres.
    pub fn tile_size_m(&self) -> f32 {
        self.tile_size_m
    }

    /// Farthest a landmark was observed from a mapping camera, metres.
    pub fn max_range_m(&self) -> f32 {
        self.max_range_m
    }

    /// The mapping cameras.
    pub fn cameras(&self) -> &[Camera] {
        &self.cameras
    }

    /// The keyframes.
    pub fn keyframes(&self) -> &[Keyframe] {
        &self.keyframes
    }

    /// The tile table, sorted by (ix, iy).
    pub fn tiles(&self) -> &[Tile] {
        &self.tiles
    }

    /// The retrieval vocabulary.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    /// Landmark positions (in place).
    pub fn positions(&self) -> &[[f32; 3]] {
        let l = &self.layout;
        let raw = &self.bytes.as_ref()[l.positions_at..l.positions_at + 12 * l.landmarks];
        // SAFETY: every bit pattern is a valid f32; parse checked the storage is 8-aligned and
        // the section offset is 16-aligned, so the prefix is empty (checked again below).
        let (pre, mid, post) = unsafe { raw.align_to::<[f32; 3]>() };
        if pre.is_empty() && post.is_empty() {
            mid
        } else {
            &[]
        }
    }

    /// Landmark descriptors, `descriptor_dim` values each (in place).
    pub fn descriptors(&self) -> &[i8] {
        let l = &self.layout;
        let raw = &self.bytes.as_ref()[l.descriptors_at..l.descriptors_at + l.dim * l.landmarks];
        as_i8(raw)
    }

    /// Landmark view records (in place).
    pub fn views(&self) -> &[[i8; 4]] {
        let l = &self.layout;
        let raw = &self.bytes.as_ref()[l.views_at..l.views_at + 4 * l.landmarks];
        // SAFETY: [i8; 4] has alignment 1 and every bit pattern is valid.
        let (pre, mid, post) = unsafe { raw.align_to::<[i8; 4]>() };
        if pre.is_empty() && post.is_empty() {
            mid
        } else {
            &[]
        }
    }

    /// A copy of the whole map as plain data.
    pub fn to_contents(&self) -> MapContents {
        MapContents {
            descriptor_dim: self.layout.dim,
            model_id: self.model_id,
            geo_anchor: self.geo_anchor,
            tile_size_m: self.tile_size_m,
            max_range_m: self.max_range_m,
            cameras: self.cameras.clone(),
            keyframes: self.keyframes.clone(),
            vocabulary: self.vocabulary.clone(),
            landmarks: Landmarks {
                positions: self.positions().to_vec(),
                descriptors: self.descriptors().to_vec(),
                views: self.views().to_vec(),
            },
        }
    }
}

impl Map<AlignedBytes> {
    /// Validation of freshly encoded bytes (used by [`encode_map`]).
    fn parse_unaligned_check(bytes: &[u8]) -> Result<(), MapError> {
        parse_parts(bytes).map(|_| ())
    }
}

fn as_i8(raw: &[u8]) -> &[i8] {
    // SAFETY: i8 and u8 have the same size, alignment and validity.
    unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<i8>(), raw.len()) }
}

struct Parts {
    layout: Layout,
    model_id: [u8; 16],
    geo_anchor: Option<GeoAnchor>,
    tile_size_m: f32,
    max_range_m: f32,
    cameras: Vec<Camera>,
    keyframes: Vec<Keyframe>,
    tiles: Vec<Tile>,
    vocabulary: Vocabulary,
}

fn invalid<T>(m: String) -> Result<T, MapError> {
    Err(MapError::Invalid(m))
}

fn parse_parts(b: &[u8]) -> Result<Parts, MapError> {
    if cfg!(target_endian = "big") {
        return invalid("map files are little-endian; big-endian hosts are not supported".into());
    }
    if b.len() < 8 || b[..8] != MAP_MAGIC {
        return Err(MapError::BadMagic);
    }
    if b.len() < HEADER_LEN {
        return Err(MapError::Truncated {
            expected: HEADER_LEN as u64,
            actual: b.len() as u64,
        });
    }
    let version = get_u32(b, 8);
    if version != MAP_FORMAT_VERSION {
        return Err(MapError::UnsupportedVersion {
            found: version,
            supported: MAP_FORMAT_VERSION,
        });
    }
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&b[..HEADER_LEN]);
    header[92..96].fill(0);
    if crc32c(&header) != get_u32(b, 92) {
        return Err(MapError::Checksum { what: "header" });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&b[80..88]);
    let expected = u64::from_le_bytes(len);
    if expected != b.len() as u64 {
        return Err(MapError::Truncated {
            expected,
            actual: b.len() as u64,
        });
    }
    if get_u32(b, 12) as usize != HEADER_LEN {
        return invalid(format!("header length {} (expected 128)", get_u32(b, 12)));
    }
    let flags = get_u32(b, 16);
    if flags > 1 {
        return invalid(format!("unknown flags {flags:#x}"));
    }
    let counts: Vec<u64> = (0..6).map(|k| u64::from(get_u32(b, 20 + 4 * k))).collect();
    let (dim, n, nk, nc, nt, nw) = (
        counts[0], counts[1], counts[2], counts[3], counts[4], counts[5],
    );
    if dim == 0 || dim as usize > MAX_DIM {
        return invalid(format!("descriptor dimension {dim} outside 1..={MAX_DIM}"));
    }
    if counts[1..].iter().any(|&c| c > MAX_COUNT) {
        return invalid(format!("a count above 2^28 in {counts:?}"));
    }
    let layout = Layout::new(
        dim as usize,
        n as usize,
        nk as usize,
        nc as usize,
        nt as usize,
        nw as usize,
    )
    .ok_or_else(|| MapError::Invalid("section sizes overflow".into()))?;
    if layout.file_len != b.len() {
        return invalid(format!(
            "counts imply {} bytes but the file has {}",
            layout.file_len,
            b.len()
        ));
    }
    if crc32c(&b[HEADER_LEN..]) != get_u32(b, 88) {
        return Err(MapError::Checksum { what: "payload" });
    }
    let tile_size_m = get_f32(b, 44);
    let max_range_m = get_f32(b, 48);
    if !(tile_size_m.is_finite() && tile_size_m > 0.0) {
        return invalid(format!("tile size {tile_size_m} m"));
    }
    if !(max_range_m.is_finite() && max_range_m >= 0.0) {
        return invalid(format!("max range {max_range_m} m"));
    }
    let geo_anchor = if flags & 1 != 0 {
        let g = GeoAnchor {
            lat: get_f64(b, 56),
            lon: get_f64(b, 64),
            alt: get_f64(b, 72),
        };
        if !((-90.0..=90.0).contains(&g.lat)
            && (-180.0..=180.0).contains(&g.lon)
            && g.alt.is_finite())
        {
            return invalid(format!("geo-anchor {g:?} out of range"));
        }
        Some(g)
    } else {
        None
    };
    let mut model_id = [0u8; 16];
    model_id.copy_from_slice(&b[96..112]);

    let mut cameras = Vec::with_capacity(layout.cameras);
    for i in 0..layout.cameras {
        let at = layout.cameras_at + i * CAMERA_LEN;
        let f = |k: usize| get_f64(b, at + 8 + 8 * k);
        let cam = Camera::new(
            get_u32(b, at),
            get_u32(b, at + 4),
            f(0),
            f(1),
            f(2),
            f(3),
            Distortion {
                k1: f(4),
                k2: f(5),
                k3: f(6),
                p1: f(7),
                p2: f(8),
            },
        )
        .map_err(|e| MapError::Invalid(format!("camera {i}: {e}")))?;
        cameras.push(cam);
    }

    let words = layout.words;
    let mut keyframes = Vec::with_capacity(layout.keyframes);
    for i in 0..layout.keyframes {
        let at = layout.keyframes_at + i * KEYFRAME_LEN;
        let v: Vec<f64> = (0..7).map(|k| get_f64(b, at + 8 * k)).collect();
        if v.iter().any(|x| !x.is_finite()) {
            return invalid(format!("keyframe {i}: non-finite pose"));
        }
        let q = Quaternion::new(v[0], v[1], v[2], v[3]);
        if (q.norm() - 1.0).abs() > 1e-6 {
            return invalid(format!("keyframe {i}: rotation quaternion not unit"));
        }
        let pose = Pose::from_parts(
            // Bit-exact: re-encoding a parsed map gives the same bytes.
            UnitQuaternion::new_unchecked(q),
            Vector3::new(v[4], v[5], v[6]),
        );
        let camera = get_u32(b, at + 56);
        if camera as usize >= layout.cameras {
            return invalid(format!(
                "keyframe {i}: camera {camera} of {}",
                layout.cameras
            ));
        }
        let bow = b[layout.bow_at + i * words..layout.bow_at + (i + 1) * words].to_vec();
        keyframes.push(Keyframe { pose, camera, bow });
    }

    let idf: Vec<f32> = (0..words)
        .map(|k| get_f32(b, layout.idf_at + 4 * k))
        .collect();
    if idf.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
        return invalid("vocabulary idf weights must be finite and non-negative".into());
    }
    let word_bytes = as_i8(&b[layout.words_at..layout.words_at + words * layout.dim]).to_vec();
    let vocabulary = Vocabulary::from_parts(layout.dim, word_bytes, idf)?;

    let positions_ok = |i: usize| -> Option<[f32; 3]> {
        let at = layout.positions_at + 12 * i;
        let p = [get_f32(b, at), get_f32(b, at + 4), get_f32(b, at + 8)];
        p.iter().all(|v| v.is_finite()).then_some(p)
    };
    let mut tiles = Vec::with_capacity(layout.tiles);
    let mut next = 0u64;
    for i in 0..layout.tiles {
        let at = layout.tiles_at + i * TILE_LEN;
        let t = Tile {
            ix: get_u32(b, at) as i32,
            iy: get_u32(b, at + 4) as i32,
            first: get_u32(b, at + 8),
            count: get_u32(b, at + 12),
        };
        if u64::from(t.first) != next || t.count == 0 {
            return invalid(format!("tile {i} does not continue the landmark ranges"));
        }
        if let Some(prev) = tiles.last() {
            let p: &Tile = prev;
            if (p.ix, p.iy) >= (t.ix, t.iy) {
                return invalid(format!("tile {i} out of order"));
            }
        }
        next += u64::from(t.count);
        if next > n {
            return invalid(format!("tile {i} runs past the last landmark"));
        }
        for k in t.first as usize..(t.first + t.count) as usize {
            let Some(p) = positions_ok(k) else {
                return invalid(format!("landmark {k}: non-finite position"));
            };
            if super::tile_of(&p, tile_size_m) != (t.ix, t.iy) {
                return invalid(format!("landmark {k} lies outside its tile {i}"));
            }
        }
        tiles.push(t);
    }
    if next != n {
        return invalid(format!("tiles cover {next} of {n} landmarks"));
    }
    Ok(Parts {
        layout,
        model_id,
        geo_anchor,
        tile_size_m,
        max_range_m,
        cameras,
        keyframes,
        tiles,
        vocabulary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn layout_sections_are_aligned_and_ordered() {
        let l = Layout::new(64, 5, 3, 1, 2, 7).expect("fits");
        let starts = [
            l.cameras_at,
            l.keyframes_at,
            l.bow_at,
            l.words_at,
            l.idf_at,
            l.tiles_at,
            l.positions_at,
            l.descriptors_at,
            l.views_at,
        ];
        assert!(starts.iter().all(|s| s % ALIGN == 0));
        assert!(starts.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(l.file_len, l.views_at + 20);
        assert!(Layout::new(64, usize::MAX / 2, 0, 0, 0, 0).is_none());
    }
}
