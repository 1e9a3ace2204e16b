//! Tiles: squares of the ground plane (world x east, y north) that group landmarks, so that a
//! query touches only the landmarks near the camera and a device downloads only its area.

use super::{Keyframe, Landmarks, Map, MapContents, MapError, Tile};

/// The tile holding a point: `(floor(x / size), floor(y / size))`, saturated to `i32`.
pub fn tile_of(p: &[f32; 3], tile_size_m: f32) -> (i32, i32) {
    let f = |v: f32| {
        (v / tile_size_m)
            .floor()
            .clamp(i32::MIN as f32, i32::MAX as f32) as i32
    };
    (f(p[0]), f(p[1]))
}

/// The tile table of positions already sorted by tile.
pub(super) fn tile_table(positions: &[[f32; 3]], tile_size_m: f32) -> Vec<Tile> {
    let mut tiles: Vec<Tile> = Vec::new();
    for (i, p) in positions.iter().enumerate() {
        let (ix, iy) = tile_of(p, tile_size_m);
        match tiles.last_mut() {
            Some(t) if (t.ix, t.iy) == (ix, iy) => t.count += 1,
            _ => tiles.push(Tile {
                ix,
                iy,
                first: i as u32,
                count: 1,
            }),
        }
    }
    tiles
}

/// Sorts landmarks by tile (stable: equal tiles keep their order).
pub(super) fn sort_by_tile(landmarks: &mut Landmarks, dim: usize, tile_size_m: f32) {
    let n = landmarks.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| tile_of(&landmarks.positions[i], tile_size_m));
    let mut sorted = Landmarks {
        positions: Vec::with_capacity(n),
        descriptors: Vec::with_capacity(n * dim),
        views: Vec::with_capacity(n),
    };
    for &i in &order {
        sorted.positions.push(landmarks.positions[i]);
        sorted
            .descriptors
            .extend_from_slice(&landmarks.descriptors[i * dim..(i + 1) * dim]);
        sorted.views.push(landmarks.views[i]);
    }
    *landmarks = sorted;
}

/// The landmark index ranges of the tiles that meet a disc on the ground plane.
#[derive(Debug, Clone, Default)]
pub struct TileRange {
    ranges: Vec<(u32, u32)>,
}

impl TileRange {
    /// Collects (into reused storage) the ranges of the tiles meeting the disc of `radius`
    /// metres around `(x, y)`.
    pub fn collect<B: AsRef<[u8]>>(&mut self, map: &Map<B>, x: f64, y: f64, radius: f64) {
        self.ranges.clear();
        let s = f64::from(map.tile_size_m());
        for t in map.tiles() {
            // Closest point of the tile square to (x, y).
            let (x0, y0) = (f64::from(t.ix) * s, f64::from(t.iy) * s);
            let dx = (x0 - x).max(0.0).max(x - (x0 + s));
            let dy = (y0 - y).max(0.0).max(y - (y0 + s));
            if dx * dx + dy * dy <= radius * radius {
                self.ranges.push((t.first, t.first + t.count));
            }
        }
    }

    /// The collected `[first, end)` landmark ranges.
    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }
}

/// The part of a map within `radius` metres (ground plane) of `(x, y)`: the tiles meeting the
/// disc and the keyframes whose cameras stand within it. What a device downloads for its area.
pub fn cut_map<B: AsRef<[u8]>>(
    map: &Map<B>,
    x: f64,
    y: f64,
    radius: f64,
) -> Result<MapContents, MapError> {
    if !(x.is_finite() && y.is_finite() && radius.is_finite() && radius > 0.0) {
        return Err(MapError::Invalid(format!(
            "cut centre ({x}, {y}) and radius {radius} must be finite, radius positive"
        )));
    }
    let dim = map.descriptor_dim();
    let mut range = TileRange::default();
    range.collect(map, x, y, radius);
    let mut landmarks = Landmarks::default();
    for &(a, b) in range.ranges() {
        let (a, b) = (a as usize, b as usize);
        landmarks
            .positions
            .extend_from_slice(&map.positions()[a..b]);
        landmarks
            .descriptors
            .extend_from_slice(&map.descriptors()[a * dim..b * dim]);
        landmarks.views.extend_from_slice(&map.views()[a..b]);
    }
    let keyframes: Vec<Keyframe> = map
        .keyframes()
        .iter()
        .filter(|k| {
            let c = k.pose.center();
            (c.x - x).hypot(c.y - y) <= radius
        })
        .cloned()
        .collect();
    Ok(MapContents {
        descriptor_dim: dim,
        model_id: map.model_id(),
        geo_anchor: map.geo_anchor(),
        tile_size_m: map.tile_size_m(),
        max_range_m: map.max_range_m(),
        cameras: map.cameras().to_vec(),
        keyframes,
        vocabulary: map.vocabulary().clone(),
        landmarks,
    })
}
