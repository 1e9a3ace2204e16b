//! Matching int8 descriptors: nearest and second-nearest neighbours by squared L2 distance,
//! Lowe's ratio test, a mutual (cross) check, and a guided mode restricted to a window.
//!
//! # Semantics (the scalar code is the reference)
//!
//! The distance is the exact squared Euclidean distance `Σ (a_k - b_k)²` in integers
//! ([`squared_l2`]). For a query, `best` is the train descriptor with the smallest
//! `(distance, index)` and `second` the smallest among the rest ([`Best2`]); ties go to the lower
//! index. A match passes the ratio test when `best_distance < ratio² · second_distance`
//! (distances are squared; a query with a single candidate always passes), and the mutual check
//! when the query is also the train descriptor's own nearest query (lowest index on ties). In
//! guided mode the candidates of a query are the train descriptors whose predicted positions lie
//! within `radius` of the query's position (`dx² + dy² ≤ radius²`), and the mutual check looks
//! at the queries within the same radius of the train descriptor.
//!
//! # Kernels
//!
//! Brute force computes `|q|² + |t|² − 2 q·t` with 16-bit lanes and 32-bit accumulation:
//! queries are widened to i16 once, train descriptors chunk by chunk (so a chunk stays in L2
//! while every query passes over it), and a 2-query × 4-train register tile
//! (`_mm256_madd_epi16`, or `_mm256_dpwssd_avx_epi32` with AVX-VNNI, or 512-bit
//! `_mm512_dpwssd_epi32` with AVX-512 VNNI) feeds a vector comparison against each query's
//! current second-best distance, so the scalar bookkeeping runs only for the rare candidates
//! that improve it. All arithmetic is exact integer arithmetic: every kernel returns the same
//! [`Best2`] as the scalar reference, bit for bit (tested).

use super::FeatureError;

/// Largest descriptor dimension accepted (keeps every distance within `i32`).
pub const MAX_DIM: usize = 4096;

/// Train descriptors widened per chunk (fits L2 with the queries).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const CHUNK: usize = 512;

/// A borrowed set of int8 descriptors of one dimension, row-major.
#[derive(Clone, Copy, Debug)]
pub struct DescriptorSet<'a> {
    data: &'a [i8],
    dim: usize,
}

impl<'a> DescriptorSet<'a> {
    /// Wraps `data` (`len * dim` values). `dim` must be a positive multiple of 32, at most
    /// [`MAX_DIM`]; `data.len()` a multiple of `dim`.
    pub fn new(data: &'a [i8], dim: usize) -> Result<DescriptorSet<'a>, FeatureError> {
        if dim == 0 || !dim.is_multiple_of(32) || dim > MAX_DIM {
            return Err(FeatureError::InvalidDimension(dim));
        }
        if !data.len().is_multiple_of(dim) {
            return Err(FeatureError::BufferSize {
                what: "descriptor",
                expected: data.len().div_ceil(dim) * dim,
                got: data.len(),
            });
        }
        if data.len() / dim > u32::MAX as usize - 1 {
            return Err(FeatureError::Mismatch(
                "more than 2^32 - 2 descriptors".into(),
            ));
        }
        Ok(DescriptorSet { data, dim })
    }

    /// Number of descriptors.
    pub fn len(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Values per descriptor.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Descriptor `i`. Panics when `i >= len()`, like slice indexing.
    pub fn get(&self, i: usize) -> &'a [i8] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All values, row-major.
    pub fn as_slice(&self) -> &'a [i8] {
        self.data
    }
}

/// The exact squared Euclidean distance between two int8 descriptors of equal length — the
/// scalar reference every kernel is checked against.
pub fn squared_l2(a: &[i8], b: &[i8]) -> u32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = i32::from(x) - i32::from(y);
            (d * d) as u32
        })
        .sum()
}

/// Index meaning "no descriptor".
pub const NONE: u32 = u32::MAX;

/// A query's nearest and second-nearest train descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Best2 {
    /// Index of the nearest, or [`NONE`].
    pub best: u32,
    /// Its squared distance (`u32::MAX` when none).
    pub best_distance: u32,
    /// Index of the second nearest, or [`NONE`].
    pub second: u32,
    /// Its squared distance (`u32::MAX` when none).
    pub second_distance: u32,
}

impl Default for Best2 {
    fn default() -> Self {
        Best2 {
            best: NONE,
            best_distance: u32::MAX,
            second: NONE,
            second_distance: u32::MAX,
        }
    }
}

impl Best2 {
    /// Offers candidate `j` at distance `d`, ordered by `(distance, index)`.
    #[inline]
    pub fn offer(&mut self, d: u32, j: u32) {
        if (d, j) < (self.best_distance, self.best) {
            self.second = self.best;
            self.second_distance = self.best_distance;
            self.best = j;
            self.best_distance = d;
        } else if (d, j) < (self.second_distance, self.second) {
            self.second = j;
            self.second_distance = d;
        }
    }
}

/// A match between query descriptor `query` and train descriptor `train`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Match {
    /// Index into the query set.
    pub query: u32,
    /// Index into the train set.
    pub train: u32,
    /// Squared L2 distance.
    pub distance: u32,
}

/// Which distance kernel runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// The best this CPU supports (chosen once at construction).
    Auto,
    /// Portable scalar code: the reference.
    Scalar,
    /// x86-64 AVX2 (`_mm256_madd_epi16`).
    Avx2,
    /// x86-64 AVX2 with AVX-VNNI (`_mm256_dpwssd_avx_epi32`).
    AvxVnni,
    /// x86-64 AVX-512BW with AVX-512 VNNI (`_mm512_dpwssd_epi32`).
    Avx512Vnni,
}

impl Kernel {
    /// The lower-case name (`scalar`, `avx2`, …).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Auto => "auto",
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::AvxVnni => "avxvnni",
            Kernel::Avx512Vnni => "avx512vnni",
        }
    }

    /// Whether this CPU can run the kernel (`Auto` and `Scalar` always can).
    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Auto | Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("avxvnni")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every concrete kernel, best first.
    pub const ALL: [Kernel; 4] = [
        Kernel::Avx512Vnni,
        Kernel::AvxVnni,
        Kernel::Avx2,
        Kernel::Scalar,
    ];

    fn resolve(self) -> Kernel {
        match self {
            Kernel::Auto => Kernel::ALL
                .into_iter()
                .find(|k| k.is_supported())
                .unwrap_or(Kernel::Scalar),
            k => k,
        }
    }
}

/// Matching settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatchConfig {
    /// Lowe's ratio on (unsquared) distances: keep when `d1 < ratio · d2`. `1.0` or more
    /// disables the test.
    pub ratio: f32,
    /// Keep only matches that are nearest in both directions.
    pub mutual: bool,
    /// Largest squared distance kept, if any.
    pub max_distance: Option<u32>,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            ratio: 0.9,
            mutual: true,
            max_distance: None,
        }
    }
}

impl MatchConfig {
    fn passes(&self, b: &Best2) -> bool {
        if b.best == NONE {
            return false;
        }
        if self.max_distance.is_some_and(|m| b.best_distance > m) {
            return false;
        }
        if self.ratio >= 1.0 || b.second == NONE {
            return true;
        }
        let r2 = f64::from(self.ratio) * f64::from(self.ratio);
        f64::from(b.best_distance) < r2 * f64::from(b.second_distance)
    }
}

/// Query positions and predicted train positions for [`Matcher::match_guided`].
#[derive(Clone, Copy, Debug)]
pub struct GuidedQuery<'a> {
    /// Position of each query descriptor (pixels).
    pub query_xy: &'a [[f32; 2]],
    /// Predicted position of each train descriptor (pixels); non-finite ones are never matched.
    pub train_xy: &'a [[f32; 2]],
    /// Search radius in pixels.
    pub radius: f32,
}

/// Descriptor matcher with reusable buffers.
#[derive(Debug)]
pub struct Matcher {
    config: MatchConfig,
    kernel: Kernel,
    auto: bool,
    best: Vec<Best2>,
    reverse: Vec<Best2>,
    // Widened descriptors and norms for the x86 kernels (unused by the portable one).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    q16: Vec<i16>,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    qnorm: Vec<i32>,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    t16: Vec<i16>,
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    tnorm: Vec<i32>,
    gathered: Vec<i8>,
    grid_train: Grid,
    grid_query: Grid,
}

impl Matcher {
    /// A matcher with the best kernel of this CPU.
    pub fn new(config: MatchConfig) -> Result<Matcher, FeatureError> {
        Matcher::with_kernel(config, Kernel::Auto)
    }

    /// A matcher with a chosen kernel; an error when the CPU cannot run it.
    pub fn with_kernel(config: MatchConfig, kernel: Kernel) -> Result<Matcher, FeatureError> {
        if !(config.ratio.is_finite() && config.ratio > 0.0) {
            return Err(FeatureError::InvalidConfig(format!(
                "ratio {} must be positive",
                config.ratio
            )));
        }
        if !kernel.is_supported() {
            return Err(FeatureError::UnsupportedKernel(kernel.name()));
        }
        Ok(Matcher {
            config,
            kernel: kernel.resolve(),
            auto: kernel == Kernel::Auto,
            best: Vec::new(),
            reverse: Vec::new(),
            q16: Vec::new(),
            qnorm: Vec::new(),
            t16: Vec::new(),
            tnorm: Vec::new(),
            gathered: Vec::new(),
            grid_train: Grid::default(),
            grid_query: Grid::default(),
        })
    }

    /// The kernel that runs.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The settings.
    pub fn config(&self) -> &MatchConfig {
        &self.config
    }

    /// Nearest and second-nearest train descriptor of every query (brute force).
    pub fn knn2(
        &mut self,
        query: &DescriptorSet<'_>,
        train: &DescriptorSet<'_>,
    ) -> Result<&[Best2], FeatureError> {
        check_dims(query, train)?;
        let mut best = std::mem::take(&mut self.best);
        self.knn2_into(query, train, &mut best);
        self.best = best;
        Ok(&self.best)
    }

    fn knn2_into(
        &mut self,
        query: &DescriptorSet<'_>,
        train: &DescriptorSet<'_>,
        best: &mut Vec<Best2>,
    ) {
        best.clear();
        best.resize(query.len(), Best2::default());
        if query.is_empty() || train.is_empty() {
            return;
        }
        // Measured: with short descriptors (64) the 512-bit tile loses to the 256-bit VNNI one
        // (two iterations per tile, a costlier reduction), so `Auto` switches by dimension.
        let kernel = if self.auto
            && self.kernel == Kernel::Avx512Vnni
            && query.dim() < 128
            && Kernel::AvxVnni.is_supported()
        {
            Kernel::AvxVnni
        } else {
            self.kernel
        };
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::AvxVnni | Kernel::Avx512Vnni => {
                x86::knn2(
                    kernel,
                    query,
                    train,
                    best,
                    &mut self.q16,
                    &mut self.qnorm,
                    &mut self.t16,
                    &mut self.tnorm,
                );
            }
            _ => knn2_scalar(query, train, best),
        }
    }

    /// Brute-force matches of `query` against `train` with the configured ratio test and mutual
    /// check, into `out` (cleared first), ordered by query index.
    pub fn match_sets(
        &mut self,
        query: &DescriptorSet<'_>,
        train: &DescriptorSet<'_>,
        out: &mut Vec<Match>,
    ) -> Result<(), FeatureError> {
        check_dims(query, train)?;
        out.clear();
        let mut best = std::mem::take(&mut self.best);
        self.knn2_into(query, train, &mut best);
        for (i, b) in best.iter().enumerate() {
            if self.config.passes(b) {
                out.push(Match {
                    query: i as u32,
                    train: b.best,
                    distance: b.best_distance,
                });
            }
        }
        self.best = best;
        if self.config.mutual && !out.is_empty() {
            // Reverse nearest neighbour, only for the train descriptors that were matched.
            let dim = train.dim();
            self.gathered.clear();
            for m in out.iter() {
                self.gathered.extend_from_slice(train.get(m.train as usize));
            }
            let gathered = std::mem::take(&mut self.gathered);
            let mut reverse = std::mem::take(&mut self.reverse);
            if let Ok(g) = DescriptorSet::new(&gathered, dim) {
                self.knn2_into(&g, query, &mut reverse);
            }
            let mut k = 0;
            out.retain(|m| {
                let keep = reverse.get(k).is_some_and(|r| r.best == m.query);
                k += 1;
                keep
            });
            self.gathered = gathered;
            self.reverse = reverse;
        }
        Ok(())
    }

    /// Matches restricted to a window: query `i` is compared only with the train descriptors
    /// whose predicted positions lie within `radius` of `query_xy[i]` (a grid over the predicted
    /// positions finds them). Ratio test and mutual check as in [`Matcher::match_sets`], over
    /// the same windows. `out` is cleared first and ordered by query index.
    pub fn match_guided(
        &mut self,
        query: &DescriptorSet<'_>,
        train: &DescriptorSet<'_>,
        guide: &GuidedQuery<'_>,
        out: &mut Vec<Match>,
    ) -> Result<(), FeatureError> {
        check_dims(query, train)?;
        if guide.query_xy.len() != query.len() || guide.train_xy.len() != train.len() {
            return Err(FeatureError::Mismatch(format!(
                "{} query positions for {} queries, {} train positions for {} train descriptors",
                guide.query_xy.len(),
                query.len(),
                guide.train_xy.len(),
                train.len()
            )));
        }
        if !(guide.radius.is_finite() && guide.radius > 0.0) {
            return Err(FeatureError::InvalidConfig(format!(
                "radius {} must be positive",
                guide.radius
            )));
        }
        out.clear();
        let r = guide.radius;
        let r2 = r * r;
        self.grid_train.build(guide.train_xy, r);
        let kernel = self.kernel;
        for (i, q) in guide.query_xy.iter().enumerate() {
            let mut b = Best2::default();
            let qd = query.get(i);
            self.grid_train.for_each_near(*q, r2, guide.train_xy, |j| {
                b.offer(distance(kernel, qd, train.get(j as usize)), j);
            });
            if self.config.passes(&b) {
                out.push(Match {
                    query: i as u32,
                    train: b.best,
                    distance: b.best_distance,
                });
            }
        }
        if self.config.mutual && !out.is_empty() {
            self.grid_query.build(guide.query_xy, r);
            let grid = &self.grid_query;
            out.retain(|m| {
                let td = train.get(m.train as usize);
                let mut b = Best2::default();
                grid.for_each_near(guide.train_xy[m.train as usize], r2, guide.query_xy, |i| {
                    b.offer(distance(kernel, query.get(i as usize), td), i);
                });
                b.best == m.query
            });
        }
        Ok(())
    }
}

fn check_dims(a: &DescriptorSet<'_>, b: &DescriptorSet<'_>) -> Result<(), FeatureError> {
    if a.dim() != b.dim() {
        return Err(FeatureError::Mismatch(format!(
            "descriptor dimensions {} and {} differ",
            a.dim(),
            b.dim()
        )));
    }
    Ok(())
}

/// The scalar reference for [`Matcher::knn2`].
pub fn knn2_scalar(query: &DescriptorSet<'_>, train: &DescriptorSet<'_>, out: &mut [Best2]) {
    for (i, o) in out.iter_mut().enumerate().take(query.len()) {
        let q = query.get(i);
        let mut b = Best2::default();
        for j in 0..train.len() {
            b.offer(squared_l2(q, train.get(j)), j as u32);
        }
        *o = b;
    }
}

/// One distance with the given kernel.
#[inline]
fn distance(kernel: Kernel, a: &[i8], b: &[i8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if kernel != Kernel::Scalar {
        // SAFETY: a non-scalar kernel is only ever resolved when the CPU supports AVX2, and
        // `a` and `b` have the same length (one descriptor set's dimension).
        return unsafe { x86::squared_l2_avx2(a, b) };
    }
    let _ = kernel;
    squared_l2(a, b)
}

/// A uniform grid of point indices (counting sort into cells of side `cell`).
#[derive(Debug, Default)]
struct Grid {
    origin: [f32; 2],
    cell: f32,
    cols: usize,
    rows: usize,
    start: Vec<u32>,
    items: Vec<u32>,
}

impl Grid {
    const MAX_CELLS: usize = 1 << 20;

    fn build(&mut self, pts: &[[f32; 2]], cell: f32) {
        let finite = |p: &[f32; 2]| p[0].is_finite() && p[1].is_finite();
        let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
        for p in pts.iter().filter(|p| finite(p)) {
            for k in 0..2 {
                lo[k] = lo[k].min(p[k]);
                hi[k] = hi[k].max(p[k]);
            }
        }
        self.items.clear();
        self.start.clear();
        if lo[0] > hi[0] {
            self.cols = 0;
            self.rows = 0;
            self.start.push(0);
            return;
        }
        // Grow the cell if the extent would need too many cells.
        let mut cell = cell;
        let span = |c: f32, k: usize| (((hi[k] - lo[k]) / c) as usize).saturating_add(1);
        while span(cell, 0).saturating_mul(span(cell, 1)) > Self::MAX_CELLS {
            cell *= 2.0;
        }
        self.origin = lo;
        self.cell = cell;
        self.cols = span(cell, 0);
        self.rows = span(cell, 1);
        let n = self.cols * self.rows;
        self.start.resize(n + 1, 0);
        for p in pts.iter().filter(|p| finite(p)) {
            let c = self.cell_of(*p);
            self.start[c + 1] += 1;
        }
        for c in 0..n {
            self.start[c + 1] += self.start[c];
        }
        self.items.resize(self.start[n] as usize, 0);
        // Fill in index order, so each cell lists its points by ascending index.
        for (i, p) in pts.iter().enumerate().filter(|(_, p)| finite(p)) {
            let c = self.cell_of(*p);
            let slot = &mut self.start[c];
            self.items[*slot as usize] = i as u32;
            *slot += 1;
        }
        for c in (0..n).rev() {
            self.start[c + 1] = self.start[c];
        }
        self.start[0] = 0;
    }

    fn coord(&self, v: f32, k: usize, len: usize) -> usize {
        (((v - self.origin[k]) / self.cell).max(0.0) as usize).min(len.saturating_sub(1))
    }

    fn cell_of(&self, p: [f32; 2]) -> usize {
        self.coord(p[1], 1, self.rows) * self.cols + self.coord(p[0], 0, self.cols)
    }

    /// Calls `f(i)` for every point `i` within squared distance `r2` of `c`.
    fn for_each_near(&self, c: [f32; 2], r2: f32, pts: &[[f32; 2]], mut f: impl FnMut(u32)) {
        if self.cols == 0 || !(c[0].is_finite() && c[1].is_finite()) {
            return;
        }
        let r = r2.sqrt();
        if c[0] + r < self.origin[0] || c[1] + r < self.origin[1] {
            return;
        }
        let x0 = self.coord(c[0] - r, 0, self.cols);
        let x1 = self.coord(c[0] + r, 0, self.cols);
        let y0 = self.coord(c[1] - r, 1, self.rows);
        let y1 = self.coord(c[1] + r, 1, self.rows);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let cell = y * self.cols + x;
                let (s, e) = (self.start[cell] as usize, self.start[cell + 1] as usize);
                for &i in &self.items[s..e] {
                    let p = pts[i as usize];
                    let (dx, dy) = (p[0] - c[0], p[1] - c[1]);
                    if dx * dx + dy * dy <= r2 {
                        f(i);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best2_orders_by_distance_then_index() {
        let mut b = Best2::default();
        b.offer(10, 5);
        b.offer(10, 2);
        b.offer(10, 7);
        assert_eq!((b.best, b.second), (2, 5));
        b.offer(3, 9);
        assert_eq!(
            (b.best, b.best_distance, b.second, b.second_distance),
            (9, 3, 2, 10)
        );
    }

    #[test]
    fn dimension_must_be_a_multiple_of_32() {
        let v = vec![0i8; 96];
        assert!(DescriptorSet::new(&v, 32).is_ok());
        assert!(matches!(
            DescriptorSet::new(&v, 48),
            Err(FeatureError::InvalidDimension(48))
        ));
        assert!(matches!(
            DescriptorSet::new(&v, 64),
            Err(FeatureError::BufferSize { .. })
        ));
        assert!(DescriptorSet::new(&v, 0).is_err());
    }
}
