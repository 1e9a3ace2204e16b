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
}

/// Appends to `out` the strict 3×3 local maxima of `resp` (`w x h`) above `threshold` that lie
/// at least `border` pixels inside the image. Plateaus keep their first pixel in raster order.
pub(crate) fn local_maxima(
    resp: &[f32],
    w: usize,
    h: usize,
    border: usize,
    threshold: f32,
    out: &mut Vec<Candidate>,
) {
    let b = border.max(1);
    if w <= 2 * b || h <= 2 * b {
        return;
    }
    for y in b..h - b {
        let up = &resp[(y - 1) * w..y * w];
        let row = &resp[y * w..(y + 1) * w];
        let down = &resp[(y + 1) * w..(y + 2) * w];
        for x in b..w - b {
            let v = row[x];
            if v <= threshold {
                continue;
            }
            // Earlier neighbours (raster order) must be strictly lower, later ones not higher.
            if v > up[x - 1]
                && v > up[x]
                && v > up[x + 1]
                && v > row[x - 1]
                && v >= row[x + 1]
                && v >= down[x - 1]
                && v >= down[x]
                && v >= down[x + 1]
            {
                out.push(Candidate {
                    x: x as u32,
                    y: y as u32,
                    score: v,
                    key: 0,
                });
            }
        }
    }
}

/// Keeps at most `k` of `cands` (reordered in place, result in `cands[..returned]`), spread over
/// a grid of `cell`-pixel cells: all cells' best first, then all cells' second best, and so on;
/// within one rank, by descending score. Deterministic for equal input.
pub(crate) fn grid_select(cands: &mut [Candidate], k: usize, cell: u32, width: u32) -> usize {
    if k == 0 || cands.is_empty() {
        return 0;
    }
    let cell = cell.max(1);
    let cols = width.div_ceil(cell).max(1);
    for c in cands.iter_mut() {
        c.key = (c.y / cell) * cols + c.x / cell;
    }
    cands.sort_unstable_by(|a, b| {
        a.key
            .cmp(&b.key)
            .then(b.score.total_cmp(&a.score))
            .then((a.y, a.x).cmp(&(b.y, b.x)))
    });
    let mut prev = u32::MAX;
    let mut rank = 0u32;
    for c in cands.iter_mut() {
        if c.key != prev {
            prev = c.key;
            rank = 0;
        }
        c.key = rank;
        rank += 1;
    }
    let order = |a: &Candidate, b: &Candidate| {
        a.key
            .cmp(&b.key)
            .then(b.score.total_cmp(&a.score))
            .then((a.y, a.x).cmp(&(b.y, b.x)))
    };
    let n = k.min(cands.len());
    if n < cands.len() {
        cands.select_nth_unstable_by(n, order);
    }
    cands[..n].sort_unstable_by(order);
    n
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
            Candidate {
                x: 1,
                y: 1,
                score: 10.0,
                key: 0,
            },
            Candidate {
                x: 2,
                y: 5,
                score: 9.0,
                key: 0,
            },
            Candidate {
                x: 5,
                y: 2,
                score: 8.0,
                key: 0,
            },
            Candidate {
                x: 12,
                y: 3,
                score: 1.0,
                key: 0,
            },
        ];
        let n = grid_select(&mut c, 2, 8, 16);
        assert_eq!(n, 2);
        assert_eq!((c[0].x, c[1].x), (1, 12));
        let n = grid_select(&mut c, 3, 8, 16);
        assert_eq!(n, 3);
        assert_eq!(c[2].score, 9.0);
    }

    #[test]
    fn plateau_keeps_one_pixel() {
        let (w, h) = (8, 8);
        let mut r = vec![0.0f32; w * h];
        r[3 * w + 3] = 5.0;
        r[3 * w + 4] = 5.0;
        let mut out = Vec::new();
        local_maxima(&r, w, h, 1, 0.0, &mut out);
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
