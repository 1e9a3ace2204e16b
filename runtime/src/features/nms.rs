//! Non-maximum suppression with spatial spread: 3×3 local maxima, then a grid-bucketed top-K.
//!
//! Every cell of a grid over the level first gives its strongest corner, then its second, and
//! so on (ties between cells broken by score), so a strongly textured corner of the image cannot
//! take every keypoint while the rest of the image gets none.

/// A local maximum of the response at an integer level pixel.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Candidate {
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) score: f32,
    /// Grid cell, then rank within the cell.
    key: u32,
    /// The caller's own reference (the GPU path: the candidate's record); not used here.
    pub(crate) tag: u32,
}

impl Candidate {
    /// A candidate at `(x, y)` with `score` and the caller's `tag`.
    pub(crate) fn new(x: u32, y: u32, score: f32, tag: u32) -> Candidate {
        Candidate {
            x,
            y,
            score,
            key: 0,
            tag,
        }
    }
}

crate::simd::multiversion! {
    /// Appends to `out` the strict 3×3 local maxima of `resp` (`w x h`) above `threshold` that
    /// lie at least `border` pixels inside the image, in raster order (see
    /// [`local_maxima_body`]; AVX-512, AVX2 or baseline code, the same result).
    pub(crate) fn local_maxima(
        resp: &[f32],
        w: usize,
        h: usize,
        border: usize,
        threshold: f32,
        mask: &mut Vec<u8>,
        out: &mut Vec<Candidate>,
    ) => local_maxima_body
}

/// Appends to `out` the strict 3×3 local maxima of `resp` (`w x h`) above `threshold` that lie
/// at least `border` pixels inside the image, in raster order. Plateaus keep their first pixel in
/// raster order. `mask` is scratch (one byte per column).
///
/// Each row is done in two steps: a branch-free comparison of every pixel with its threshold and
/// eight neighbours into a byte mask (it vectorises), then a scan of the mask eight bytes at a
/// time (maxima are sparse).
// Index loops over equal-length shifted slices: bounds checks vanish and the loops vectorise.
#[allow(clippy::needless_range_loop, clippy::too_many_arguments)]
#[inline(always)]
pub(crate) fn local_maxima_body(
    resp: &[f32],
    w: usize,
    h: usize,
    border: usize,
    threshold: f32,
    mask: &mut Vec<u8>,
    out: &mut Vec<Candidate>,
) {
    let b = border.max(1);
    if w <= 2 * b || h <= 2 * b {
        return;
    }
    let n = w - 2 * b;
    // Whole words for the scan; the tail stays zero.
    mask.clear();
    mask.resize(n.div_ceil(8) * 8, 0);
    for y in b..h - b {
        let up = &resp[(y - 1) * w..y * w];
        let row = &resp[y * w..(y + 1) * w];
        let down = &resp[(y + 1) * w..(y + 2) * w];
        let (ul, u, ur) = (window(up, b - 1, n), window(up, b, n), window(up, b + 1, n));
        let (l, c, r) = (
            window(row, b - 1, n),
            window(row, b, n),
            window(row, b + 1, n),
        );
        let (dl, d, dr) = (
            window(down, b - 1, n),
            window(down, b, n),
            window(down, b + 1, n),
        );
        let m = &mut mask[..n];
        for i in 0..n {
            let v = c[i];
            // Earlier neighbours (raster order) must be strictly lower, later ones not higher.
            let keep = (v > threshold)
                & (v > ul[i])
                & (v > u[i])
                & (v > ur[i])
                & (v > l[i])
                & (v >= r[i])
                & (v >= dl[i])
                & (v >= d[i])
                & (v >= dr[i]);
            m[i] = u8::from(keep);
        }
        for (k, word) in mask.chunks_exact(8).enumerate() {
            let mut bits = u64::from_le_bytes([
                word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
            ]);
            while bits != 0 {
                let i = k * 8 + bits.trailing_zeros() as usize / 8;
                bits &= bits - 1;
                out.push(Candidate::new((b + i) as u32, y as u32, c[i], 0));
            }
        }
    }
}

/// `r[start..start + n]`.
fn window(r: &[f32], start: usize, n: usize) -> &[f32] {
    &r[start..start + n]
}

/// Reusable buffers of [`grid_select`].
#[derive(Debug, Default)]
pub(crate) struct GridScratch {
    /// Start of each cell's run in `sorted` (`cells + 1`).
    starts: Vec<u32>,
    /// The candidates grouped by cell.
    sorted: Vec<Candidate>,
}

impl GridScratch {
    /// Makes room for `candidates` candidates over `cells` cells, so later calls within those
    /// bounds do not allocate.
    pub(crate) fn reserve(&mut self, candidates: usize, cells: usize) {
        self.sorted
            .reserve(candidates.saturating_sub(self.sorted.len()));
        self.starts
            .reserve((cells + 1).saturating_sub(self.starts.len()));
    }
}

/// The most candidates [`local_maxima`] can return for a `w x h` response: kept maxima are never
/// 8-neighbours (a plateau keeps its first pixel), so at most one pixel in each 2×2 block.
pub(crate) fn max_candidates(w: usize, h: usize) -> usize {
    w.div_ceil(2) * h.div_ceil(2)
}

/// Keeps at most `k` of `cands` (reordered in place, result in `cands[..returned]`), spread over
/// a grid of `cell`-pixel cells: all cells' best first, then all cells' second best, and so on;
/// within one rank, by descending score. Every comparison is a total order on (cell, score,
/// position), and positions are distinct, so the result does not depend on the order of
/// `cands` (the GPU appends candidates in any order).
///
/// The candidates are grouped by cell with a counting sort and each cell's few are sorted on
/// their own (instead of one sort of all candidates), then the `k` best ranks are selected.
pub(crate) fn grid_select(
    cands: &mut [Candidate],
    k: usize,
    cell: u32,
    width: u32,
    scratch: &mut GridScratch,
) -> usize {
    if k == 0 || cands.is_empty() {
        return 0;
    }
    let cell = cell.max(1);
    let cols = width.div_ceil(cell).max(1);
    let mut cells = 0;
    for c in cands.iter_mut() {
        c.key = (c.y / cell) * cols + c.x / cell;
        cells = cells.max(c.key as usize + 1);
    }
    // Counting sort by cell: `starts[c]` becomes the end of cell `c - 1`'s run as candidates are
    // placed, so it ends as the start of cell `c`.
    let GridScratch { starts, sorted } = scratch;
    starts.clear();
    starts.resize(cells + 1, 0);
    for c in cands.iter() {
        starts[c.key as usize + 1] += 1;
    }
    for i in 1..=cells {
        starts[i] += starts[i - 1];
    }
    sorted.clear();
    sorted.resize(cands.len(), Candidate::default());
    for c in cands.iter() {
        let slot = &mut starts[c.key as usize];
        sorted[*slot as usize] = *c;
        *slot += 1;
    }
    // (key, score descending) packed in one u64 so most comparisons are a single integer
    // compare; position breaks the rare ties. The same order as comparing the fields.
    let order =
        |a: &Candidate, b: &Candidate| packed(a).cmp(&packed(b)).then((a.y, a.x).cmp(&(b.y, b.x)));
    let mut start = 0;
    for &end in &starts[..cells] {
        let run = &mut sorted[start..end as usize];
        run.sort_unstable_by(order);
        for (rank, c) in run.iter_mut().enumerate() {
            c.key = rank as u32;
        }
        start = end as usize;
    }
    cands.copy_from_slice(sorted);
    let n = k.min(cands.len());
    if n < cands.len() {
        cands.select_nth_unstable_by(n, order);
    }
    cands[..n].sort_unstable_by(order);
    n
}

/// `key` in the high half, then the score's total order reversed (higher scores first, as
/// `f32::total_cmp` would order them descending).
fn packed(c: &Candidate) -> u64 {
    let bits = c.score.to_bits();
    // Flip negatives entirely and set the sign bit of positives: an unsigned order equal to
    // `total_cmp`.
    let ascending = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    (u64::from(c.key) << 32) | u64::from(!ascending)
}

/// Sub-pixel offset of a peak from a 1-D quadratic through three samples, in [-0.5, 0.5].
pub(crate) fn parabola_offset(left: f32, centre: f32, right: f32) -> f32 {
    let den = left - 2.0 * centre + right;
    if den < 0.0 {
        (0.5 * (left - right) / den).clamp(-0.5, 0.5)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_select_spreads_before_it_deepens() {
        // Cell (0,0) has three strong corners, cell (1,0) one weak corner.
        let mut c = vec![
            Candidate::new(1, 1, 10.0, 0),
            Candidate::new(2, 5, 9.0, 0),
            Candidate::new(5, 2, 8.0, 0),
            Candidate::new(12, 3, 1.0, 0),
        ];
        let n = grid_select(&mut c, 2, 8, 16, &mut GridScratch::default());
        assert_eq!(n, 2);
        assert_eq!((c[0].x, c[1].x), (1, 12));
        let n = grid_select(&mut c, 3, 8, 16, &mut GridScratch::default());
        assert_eq!(n, 3);
        assert_eq!(c[2].score, 9.0);
    }

    #[test]
    fn grid_select_ignores_the_input_order() {
        let mut state = 7u64;
        let mut cands: Vec<Candidate> = (0..400u32)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Many equal scores: ties are broken by position.
                Candidate::new(i % 40 * 3, i / 40 * 5, (state % 7) as f32, i)
            })
            .collect();
        let mut reference = cands.clone();
        let n = grid_select(&mut reference, 57, 16, 120, &mut GridScratch::default());
        for round in 0..5 {
            cands.reverse();
            cands.rotate_left(round * 37);
            let mut c = cands.clone();
            assert_eq!(
                grid_select(&mut c, 57, 16, 120, &mut GridScratch::default()),
                n
            );
            assert_eq!(&c[..n], &reference[..n], "round {round}");
        }
    }

    /// The straightforward per-pixel form of [`local_maxima`] (its earlier implementation).
    fn local_maxima_reference(
        resp: &[f32],
        w: usize,
        h: usize,
        border: usize,
        threshold: f32,
    ) -> Vec<Candidate> {
        let mut out = Vec::new();
        let b = border.max(1);
        if w <= 2 * b || h <= 2 * b {
            return out;
        }
        for y in b..h - b {
            for x in b..w - b {
                let at = |dx: usize, dy: usize| resp[(y + dy - 1) * w + x + dx - 1];
                let v = at(1, 1);
                if v > threshold
                    && v > at(0, 0)
                    && v > at(1, 0)
                    && v > at(2, 0)
                    && v > at(0, 1)
                    && v >= at(2, 1)
                    && v >= at(0, 2)
                    && v >= at(1, 2)
                    && v >= at(2, 2)
                {
                    out.push(Candidate::new(x as u32, y as u32, v, 0));
                }
            }
        }
        out
    }

    #[test]
    fn local_maxima_equals_the_per_pixel_reference() {
        let mut state = 99u64;
        let mut mask = Vec::new();
        for (w, h, border, levels) in [
            (3, 3, 1, 4),
            (40, 30, 16, 3),
            (41, 37, 16, 5),
            (64, 48, 3, 2),
            (131, 67, 1, 6),
            (200, 9, 2, 50),
        ] {
            // Few distinct values: plenty of plateaus and ties.
            let resp: Vec<f32> = (0..w * h)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % levels) as f32
                })
                .collect();
            for threshold in [-1.0, 0.0, 1.5] {
                let mut out = Vec::new();
                local_maxima(&resp, w, h, border, threshold, &mut mask, &mut out);
                let want = local_maxima_reference(&resp, w, h, border, threshold);
                assert_eq!(out, want, "{w}x{h} border {border} threshold {threshold}");
            }
        }
    }

    /// The field-by-field definition of [`grid_select`]'s order, to check the packed one.
    fn grid_select_reference(c: &mut [Candidate], k: usize, cell: u32, width: u32) -> usize {
        let cols = width.div_ceil(cell).max(1);
        for x in c.iter_mut() {
            x.key = (x.y / cell) * cols + x.x / cell;
        }
        let order = |a: &Candidate, b: &Candidate| {
            a.key
                .cmp(&b.key)
                .then(b.score.total_cmp(&a.score))
                .then((a.y, a.x).cmp(&(b.y, b.x)))
        };
        c.sort_by(order);
        let mut prev = u32::MAX;
        let mut rank = 0;
        for x in c.iter_mut() {
            if x.key != prev {
                prev = x.key;
                rank = 0;
            }
            x.key = rank;
            rank += 1;
        }
        c.sort_by(order);
        k.min(c.len())
    }

    #[test]
    fn packed_order_selects_what_the_field_order_selects() {
        let mut state = 99u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        // Scores with many ties, negative and special values among them.
        let scores = [
            3.5f32,
            3.5,
            0.0,
            -0.0,
            -2.0,
            1e-30,
            7.25,
            f32::INFINITY,
            100.0,
        ];
        // One scratch for every size: reuse with fewer cells and candidates than before.
        let mut scratch = GridScratch::default();
        for (n, k) in [(50, 10), (500, 120), (3000, 600), (40, 100)] {
            let cands: Vec<Candidate> = (0..n)
                .map(|_| {
                    let s = scores[next() as usize % scores.len()] + (next() % 4) as f32;
                    Candidate::new(next() % 300, next() % 200, s, 0)
                })
                .collect();
            let (mut a, mut b) = (cands.clone(), cands);
            let na = grid_select(&mut a, k, 16, 300, &mut scratch);
            let nb = grid_select_reference(&mut b, k, 16, 300);
            assert_eq!(na, nb);
            let pick = |v: &[Candidate]| -> Vec<(u32, u32, u32)> {
                v.iter().map(|c| (c.x, c.y, c.score.to_bits())).collect()
            };
            assert_eq!(pick(&a[..na]), pick(&b[..nb]), "n {n} k {k}");
        }
    }

    #[test]
    fn plateau_keeps_one_pixel() {
        let (w, h) = (8, 8);
        let mut r = vec![0.0f32; w * h];
        r[3 * w + 3] = 5.0;
        r[3 * w + 4] = 5.0;
        let mut out = Vec::new();
        local_maxima(&r, w, h, 1, 0.0, &mut Vec::new(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].x, out[0].y), (3, 3));
    }

    #[test]
    fn parabola_finds_the_vertex() {
        // y = -(x - 0.25)^2 sampled at -1, 0, 1
        let f = |x: f32| -(x - 0.25) * (x - 0.25);
        assert!((parabola_offset(f(-1.0), f(0.0), f(1.0)) - 0.25).abs() < 1e-6);
        assert_eq!(parabola_offset(1.0, 1.0, 1.0), 0.0);
    }
}
