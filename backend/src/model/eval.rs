//! Patch-level evaluation on held-out pairs: FPR95 and nearest-neighbour matching accuracy, for
//! the learned int8 model and two references computed on the very same patches — a SIFT
//! descriptor (float; Gaussian-weighted, trilinearly binned 4×4×8 gradient histogram,
//! normalise–clip(0.2)–renormalise) and the model's own unprojected front end (pooled gradients,
//! L2-normalised).

use sextant_runtime::descriptor::{PATCH_PIXELS, PATCH_SIZE};

use super::rng::Rng;

/// Scores of one descriptor on a pair set.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    /// False-positive rate at 95 % recall on matching vs non-matching pairs (lower is better).
    pub fpr95: f64,
    /// Fraction of view-A patches whose nearest view-B patch (among `gallery` candidates) is
    /// their true match (higher is better).
    pub nn_accuracy: f64,
    /// Candidates per nearest-neighbour query.
    pub gallery: usize,
}

/// Squared Euclidean distance.
fn dist2(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Scores descriptors (`a[i]` ↔ `b[i]` match; `dim` floats each). Non-matching pairs pair
/// `a[i]` with a random other `b[j]`; nearest-neighbour queries search blocks of `gallery`.
pub fn score(a: &[f32], b: &[f32], dim: usize, gallery: usize, seed: u64) -> Scores {
    let n = a.len() / dim;
    if n < 2 {
        return Scores {
            fpr95: 1.0,
            nn_accuracy: 0.0,
            gallery,
        };
    }
    fn row(v: &[f32], i: usize, dim: usize) -> &[f32] {
        &v[i * dim..(i + 1) * dim]
    }
    let mut rng = Rng::new(seed);
    let mut pos: Vec<f32> = (0..n)
        .map(|i| dist2(row(a, i, dim), row(b, i, dim)))
        .collect();
    let neg: Vec<f32> = (0..n)
        .map(|i| {
            let j = (i + 1 + rng.below(n - 1)) % n;
            dist2(row(a, i, dim), row(b, j, dim))
        })
        .collect();
    pos.sort_by(f32::total_cmp);
    let thr = pos[((n as f64 * 0.95).ceil() as usize).clamp(1, n) - 1];
    let fpr95 = neg.iter().filter(|&&d| d <= thr).count() as f64 / n as f64;
    let mut hits = 0;
    let mut start = 0;
    while start < n {
        let end = (start + gallery).min(n);
        for i in start..end {
            let mut best = (f32::INFINITY, usize::MAX);
            for j in start..end {
                let d = dist2(row(a, i, dim), row(b, j, dim));
                if d < best.0 {
                    best = (d, j);
                }
            }
            hits += usize::from(best.1 == i);
        }
        start = end;
    }
    Scores {
        fpr95,
        nn_accuracy: hits as f64 / n as f64,
        gallery,
    }
}

/// The SIFT descriptor (Lowe 2004, §6.1) of one upright 32×32 patch: 4×4 cells × 8 orientation
/// bins with trilinear interpolation, a Gaussian window (σ = half the patch), then normalise,
/// clip at 0.2, renormalise.
pub fn sift(patch: &[u8]) -> [f32; 128] {
    let mut h = [0f32; 128];
    let s = PATCH_SIZE as isize;
    let px =
        |x: isize, y: isize| f32::from(patch[(y.clamp(0, s - 1) * s + x.clamp(0, s - 1)) as usize]);
    let half = PATCH_SIZE as f32 / 2.0;
    for y in 0..s {
        for x in 0..s {
            let gx = px(x + 1, y) - px(x - 1, y);
            let gy = px(x, y + 1) - px(x, y - 1);
            let mag = (gx * gx + gy * gy).sqrt();
            if mag == 0.0 {
                continue;
            }
            let (cx, cy) = (x as f32 + 0.5 - half, y as f32 + 0.5 - half);
            let wgt = (-(cx * cx + cy * cy) / (2.0 * half * half)).exp();
            let ori = gy.atan2(gx).rem_euclid(std::f32::consts::TAU) / std::f32::consts::TAU * 8.0;
            // Cell coordinates: cell centres at 4, 12, 20, 28.
            let (bx, by) = ((x as f32 + 0.5) / 8.0 - 0.5, (y as f32 + 0.5) / 8.0 - 0.5);
            let (x0, y0, o0) = (bx.floor(), by.floor(), ori.floor());
            let (fx, fy, fo) = (bx - x0, by - y0, ori - o0);
            for (dy, wy) in [(0, 1.0 - fy), (1, fy)] {
                let yi = y0 as isize + dy;
                if !(0..4).contains(&yi) {
                    continue;
                }
                for (dx, wx) in [(0, 1.0 - fx), (1, fx)] {
                    let xi = x0 as isize + dx;
                    if !(0..4).contains(&xi) {
                        continue;
                    }
                    for (dof, wo) in [(0, 1.0 - fo), (1, fo)] {
                        let oi = (o0 as usize + dof) % 8;
                        h[(yi as usize * 4 + xi as usize) * 8 + oi] += mag * wgt * wy * wx * wo;
                    }
                }
            }
        }
    }
    normalise(&mut h);
    for v in &mut h {
        *v = v.min(0.2);
    }
    normalise(&mut h);
    h
}

/// L2-normalises in place (zero vectors stay zero).
pub fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        for x in v {
            *x /= n;
        }
    }
}

/// SIFT descriptors of a batch of patches, flattened.
pub fn sift_batch(patches: &[u8]) -> Vec<f32> {
    patches.chunks_exact(PATCH_PIXELS).flat_map(sift).collect()
}
